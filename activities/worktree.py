"""The clone-to-push activity: steps that share a working tree run here, together.

The step registry (``freightline.contracts.steps.STEPS``) gives each worktree step's
config model and implementation. One activity run gets a fresh temporary
directory, runs its steps in order (evaluating ``if`` and ``${{ }}`` with
the same ``StepScope`` as the workflow, validating each rendered config
against its model), and deletes the directory. Because every run starts
from an empty disk and git-commit with nothing new returns the existing
head, a retry after a successful push pushes nothing and returns the same
commit. The worker's repository cache (``activities/repository_cache.py``) only makes
the clone cheaper: the clone is still the activity's own, made afresh from a mirror.

A step's ``FreightlineError`` leaves the activity named after the step (its
alias and ``uses`` in the details); ``activities.boundary`` converts it. With
``continueOnError`` the step is recorded with the error's outcome instead.
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

from activities import boundary
from activities.git import DEFAULT_AUTHOR
from activities.registry_identity import RegistryLogins
from activities.repository_cache import RepositoryCache
from activities.step_context import (
    BasicLookup,
    CredentialLookup,
    SecretLookup,
    StepContext,
    StepSkipped,
    parse_config,
)
from activities.workspace import Workspace
from freightline.contracts.promotion import (
    PlannedStep,
    StepOutcome,
    StepScope,
    StepStatus,
    WorktreeBatch,
)
from freightline.contracts.steps import StepRunner, run_inline, step_named
from freightline.errors import ConfigError, FreightlineError
from freightline.kargo.credentials import CredentialStore, GitCredentials
from freightline.logging import get_logger

StepImplementation = Callable[[StepContext, Any], dict[str, Any]]
"""A worktree step: the context and its validated config model in, its outputs out."""

HEARTBEAT_EVERY = timedelta(seconds=2)


def _anonymous(_repo_url: str) -> GitCredentials | None:
    return None


def _anonymous_basic(_cred_type: str, _repo_url: str) -> tuple[str, str] | None:
    return None


def _no_secrets(_project: str, _name: str) -> dict[str, str]:
    return {}


class WorktreeActivities:
    """Holds what the steps need from the worker: credentials, commit author, a scratch root,
    and the worker's repository cache (None: every git-clone clones afresh)."""

    def __init__(
        self,
        git_credentials: CredentialLookup = _anonymous,
        scratch_root: Path | None = None,
        *,
        author: tuple[str, str] = DEFAULT_AUTHOR,
        allow_local_repositories: bool = False,
        basic_credentials: BasicLookup = _anonymous_basic,
        secrets: SecretLookup = _no_secrets,
        signing_key_file: Path | None = None,
        repository_cache: RepositoryCache | None = None,
        credential_store: CredentialStore | None = None,
    ) -> None:
        self.git_credentials = git_credentials
        self.basic_credentials = basic_credentials
        self.secrets = secrets
        self.scratch_root = scratch_root
        self.author = author
        self.allow_local_repositories = allow_local_repositories
        self.signing_key_file = signing_key_file
        self.repository_cache = repository_cache
        self.credential_store = credential_store

    @boundary.defn(name="run_worktree_steps")
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
                Workspace(Path(tmp)),
                batch.plan,
                self.git_credentials,
                author=self.author,
                allow_local_repositories=self.allow_local_repositories,
                basic_credentials=lookup_in_project(self.basic_credentials, batch.plan.project),
                secrets=self.secrets,
                signing_key_file=self.signing_key_file,
                repository_cache=self.repository_cache,
                credential_store=self.credential_store,
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
            definition = step_named(step.uses)
            if definition is None or not (
                definition.runner is StepRunner.WORKTREE or definition.inline
            ):
                raise ConfigError(f"{ctx.describe()}: not a worktree step")
            # secret() and sharedSecret() are answered here, from the worker's credentials:
            # never in the workflow.
            config = scope.render_config(
                step, {"secret": ctx.secret, "sharedSecret": ctx.shared_secret}
            )
            if definition.inline:
                outputs = run_inline(step.uses, config)
            else:
                implementation: StepImplementation = definition.resolve_implementation()
                model = definition.config_model()
                outputs = implementation(ctx, parse_config(model, config) if model else config)
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=StepStatus.SUCCEEDED, outputs=outputs
            )
        except StepSkipped as skipped:
            return StepOutcome(
                alias=step.alias, uses=step.uses, status=StepStatus.SKIPPED, message=str(skipped)
            )
        except FreightlineError as err:
            err.locate(ctx.describe(), step=step.alias, uses=step.uses)
            if step.continue_on_error:
                return StepOutcome(
                    alias=step.alias,
                    uses=step.uses,
                    status=StepStatus(err.outcome.value),
                    message=str(err),
                )
            raise  # activities.boundary converts it; the promotion stops here


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


def lookup_in_project(lookup: BasicLookup, project: str) -> BasicLookup:
    """The registry lookup of one project's steps: the worker's takes the project (a
    workload identity's login is the project's, as in discovery); another is used as is."""
    return lookup.in_project(project) if isinstance(lookup, RegistryLogins) else lookup
