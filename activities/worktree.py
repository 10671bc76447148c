"""The clone-to-push activity: steps that share a working tree run here, together.

The step registry maps each worktree step name (see
``freightline.steps.STEP_CATALOGUE``) to its implementation. One activity
run gets a fresh temporary directory, runs its steps in order (evaluating
``if`` and ``${{ }}`` with the same ``StepScope`` as the workflow), and
deletes the directory. Because every run starts from an empty disk and
git-commit with nothing new returns the existing head, a retry after a
successful push pushes nothing and returns the same commit.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import copy_context
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git import DEFAULT_AUTHOR
from activities.git_steps import git_clear, git_clone, git_commit, git_push
from activities.kustomize_steps import kustomize_build, kustomize_set_image
from activities.step_context import CredentialLookup, StepContext
from activities.workspace import Workspace
from activities.yaml_files import yaml_update
from freightline.credentials import GitCredentials
from freightline.errors import FreightlineError, StepError
from freightline.logging import get_logger
from freightline.promotion import (
    PlannedStep,
    StepOutcome,
    StepScope,
    StepStatus,
    WorktreeBatch,
)

StepImplementation = Callable[[StepContext, dict[str, Any]], dict[str, Any]]

WORKTREE_STEPS: dict[str, StepImplementation] = {
    "git-clone": git_clone,
    "git-clear": git_clear,
    "kustomize-set-image": kustomize_set_image,
    "kustomize-build": kustomize_build,
    "yaml-update": yaml_update,
    "git-commit": git_commit,
    "git-push": git_push,
}

HEARTBEAT_EVERY = timedelta(seconds=2)


def _anonymous(_repo_url: str) -> GitCredentials | None:
    return None


class WorktreeActivities:
    """Holds what the steps need from the worker: credentials, commit author, a scratch root."""

    def __init__(
        self,
        git_credentials: CredentialLookup = _anonymous,
        scratch_root: Path | None = None,
        *,
        author: tuple[str, str] = DEFAULT_AUTHOR,
    ) -> None:
        self.git_credentials = git_credentials
        self.scratch_root = scratch_root
        self.author = author

    @activity.defn(name="run_worktree_steps")
    def run_worktree_steps(self, batch: WorktreeBatch) -> list[StepOutcome]:
        """Run a clone-to-push sequence of steps in a fresh working directory."""
        log = get_logger(__name__)
        scope = StepScope(batch.plan, batch.previous)
        steps = [batch.plan.steps[i] for i in batch.step_indexes]
        outcomes: list[StepOutcome] = []
        with (
            _heartbeating(),
            tempfile.TemporaryDirectory(prefix="freightline-", dir=self.scratch_root) as tmp,
        ):
            ctx = StepContext(
                Workspace(Path(tmp)), batch.plan, self.git_credentials, author=self.author
            )
            with ctx.resources:
                for step in steps:
                    outcome = self._run_step(ctx, scope, step)
                    log.info(
                        "step finished",
                        step=step.alias,
                        uses=step.uses,
                        status=outcome.status.value,
                        message=outcome.message,
                    )
                    scope.record(outcome)
                    outcomes.append(outcome)
                    activity.heartbeat(step.alias)
        return outcomes

    def _run_step(self, ctx: StepContext, scope: StepScope, step: PlannedStep) -> StepOutcome:
        ctx.step = step
        try:
            if not scope.should_run(step):
                return StepOutcome(alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED)
            implementation = WORKTREE_STEPS.get(step.uses)
            if implementation is None:
                raise StepError(f"{ctx.describe()}: not a worktree step")
            outputs = implementation(ctx, scope.render_config(step))
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=StepStatus.SUCCEEDED, outputs=outputs
            )
        except FreightlineError as err:
            message = str(err) if str(err).startswith("step ") else f"{ctx.describe()}: {err}"
            if step.continue_on_error:
                return StepOutcome(
                    alias=step.alias, uses=step.uses, status=StepStatus.FAILED, message=message
                )
            # A user-fixable failure: retrying cannot help, so the promotion stops here.
            raise ApplicationError(
                message,
                {"step": step.alias, "uses": step.uses},
                type=type(err).__name__,
                non_retryable=True,
            ) from err


@contextmanager
def _heartbeating() -> Any:
    """Heartbeat from a side thread while the (blocking) steps run."""
    stop = threading.Event()
    context = copy_context()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_EVERY.total_seconds()):
            context.run(activity.heartbeat)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
