"""The pull-request steps, as Kargo v1.11's: ``git-open-pr``, ``git-merge-pr`` (worktree
steps) and what ``git-wait-for-pr`` asks of the forge (an activity; the wait is the
``Promotion`` workflow's, see ``workflows/promotion.py``).

The forge's API is ``activities.forges``: one client per provider (GitHub, also
Enterprise; GitLab; Gitea/Forgejo; Bitbucket Cloud; Azure DevOps), chosen by ``provider`` or
by the repository URL as Kargo chooses it. Tokens come from the worker's credentials, found by the
repository URL, and never leave this module: a step's outputs hold the pull request's
number, web URL and merge commit only.

Both worktree steps converge when repeated. A retried batch (a crash after the
pull request was opened) finds the open pull request from the same source branch
to the same target and answers with it instead of opening a second; merging a pull
request that is already merged answers with its merge commit.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar

import httpx
from pydantic import Field, field_validator
from temporalio import activity

from activities import boundary
from activities.forges import Forge, forge_for
from activities.git import Clone, git_environment
from activities.step_context import StepConfig, StepContext, StepSkipped
from freightline.contracts.pull_request_wait import PullRequestQuery
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import ConfigError, PullRequestNotMergeable, StepError
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.gitrefs import branch_problem
from freightline.kargo.resources import parse_duration

__all__ = [
    "ForgeActivities",
    "GitMergePRConfig",
    "GitOpenPRConfig",
    "GitWaitForPRConfig",
    "git_merge_pr",
    "git_open_pr",
]

Provider = Literal["azure", "bitbucket", "gitea", "github", "gitlab"]
T = TypeVar("T")

MERGE_POLL_DEFAULT = timedelta(seconds=10)
"""Kargo's default ``pollInterval`` of ``git-merge-pr`` with ``wait``."""
MIN_POLL = timedelta(seconds=10)
"""Kargo's lower bound on a poll interval."""
MERGE_WAIT_DEFAULT = timedelta(minutes=5)
"""How long ``git-merge-pr`` with ``wait`` keeps trying without a ``retry.timeout``."""
MERGE_WAIT_MAX = timedelta(minutes=20)
"""The longest it may: it runs inside the clone-to-push activity's 30 minutes."""


def _go_duration(text: str | None) -> str | None:
    if text is not None:
        parse_duration(text)  # ValueError names the syntax
    return text


class _ForgeStepConfig(StepConfig):
    repo_url: str = Field(alias="repoURL", min_length=1)
    provider: Provider | None = None
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")


def _branch(name: str) -> str:
    """A branch git would refuse (or read as an option) is a configuration mistake."""
    problem = branch_problem(name)
    if problem:
        raise ValueError(f"{name!r} is not a valid git branch name: {problem}")
    return name


class GitOpenPRConfig(_ForgeStepConfig):
    source_branch: str = Field(min_length=1)
    target_branch: str = Field(min_length=1)

    check_branches = field_validator("source_branch", "target_branch")(_branch)
    create_target_branch: bool = False
    """Deprecated in Kargo, a no-op."""
    title: str | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, min_length=1)
    labels: list[str] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _no_empty_label(cls, labels: list[str]) -> list[str]:
        if any(not label for label in labels):
            raise ValueError("a label must not be empty")
        return labels


class GitWaitForPRConfig(_ForgeStepConfig):
    pr_number: int = Field(ge=1)
    poll_interval: str | None = None

    check_poll_interval = field_validator("poll_interval")(_go_duration)


class GitMergePRConfig(_ForgeStepConfig):
    pr_number: int = Field(ge=1)
    merge_method: str | None = Field(default=None, min_length=1)
    wait: bool = False
    poll_interval: str | None = None

    check_poll_interval = field_validator("poll_interval")(_go_duration)


async def _with_forge(
    store: CredentialStore,
    repo_url: str,
    provider: str | None,
    insecure: bool,
    call: Callable[[Forge], Awaitable[T]],
) -> T:
    """One forge call; ``insecure`` (Kargo's insecureSkipTLSVerify) skips TLS verification."""
    if not insecure:
        return await call(forge_for(repo_url, provider, credentials=store))
    async with httpx.AsyncClient(verify=False, timeout=30.0) as http:  # noqa: S501 - asked for
        return await call(forge_for(repo_url, provider, credentials=store, http=http))


def _run(ctx: StepContext, config: _ForgeStepConfig, call: Callable[[Forge], Awaitable[T]]) -> T:
    """Run one forge call from a worktree step (a thread of its own: its own event loop)."""
    store = ctx.credential_store or CredentialStore(None)
    return asyncio.run(
        _with_forge(store, config.repo_url, config.provider, config.insecure_skip_tls_verify, call)
    )


def _outputs(pr: PullRequest) -> dict[str, Any]:
    return {"pr": {"id": pr.number, "url": pr.url}}


def _scratch_clone(ctx: StepContext, config: GitOpenPRConfig) -> Clone:
    """A fresh, blobless clone of every branch tip: what the two branches hold *now* on the
    remote (an earlier step's clone may predate its own push)."""
    credentials = ctx.git_credentials(config.repo_url)
    env = dict(
        ctx.enter(
            git_environment(credentials, ctx.author, allow_local=ctx.allow_local_repositories)
        )
    )
    if config.insecure_skip_tls_verify:
        env["GIT_SSL_NO_VERIFY"] = "true"
    name = hashlib.sha1(config.repo_url.encode(), usedforsecurity=False).hexdigest()[:12]
    return Clone.create(
        config.repo_url,
        ctx.workspace.private / f"open-pr-{name}",
        env,
        credentials.secrets if credentials else (),
        allow_local=ctx.allow_local_repositories,
        blobless=True,
    )


def git_open_pr(ctx: StepContext, config: GitOpenPRConfig) -> dict[str, Any]:
    """Open a pull request from ``sourceBranch`` into ``targetBranch``; output ``pr.id`` and
    ``pr.url``.

    As Kargo's: an open pull request between the two branches (or a merged one whose
    head is the source branch's head) is the answer, not a new one; a missing target
    branch is an error; no difference between the branches skips the step; without
    a ``title`` the source head's commit message gives the title (its first line) and
    the description (the rest).
    """
    source, target = config.source_branch, config.target_branch
    clone = _scratch_clone(ctx, config)
    source_head = clone.rev_parse(f"refs/remotes/origin/{source}")
    if source_head is None:
        raise ConfigError(f'{ctx.describe()}: source branch "{source}" does not exist')
    existing = _run(
        ctx, config, lambda forge: forge.find_pull_request(source=source, target=target)
    )
    if existing is not None and (
        existing.state == "open"
        # Bitbucket reports the head abbreviated: a prefix of the full commit is the same one.
        or (
            existing.state == "merged"
            and existing.head_sha
            and source_head.startswith(existing.head_sha)
        )
    ):
        return _outputs(existing)
    if not clone.remote_branch_exists(target):
        raise ConfigError(f'{ctx.describe()}: target branch "{target}" does not exist')
    source_tree = clone.rev_parse(f"refs/remotes/origin/{source}^{{tree}}")
    target_tree = clone.rev_parse(f"refs/remotes/origin/{target}^{{tree}}")
    if source_tree == target_tree:
        raise StepSkipped(f'no changes between "{source}" and "{target}"')
    message = clone.run("log", "-1", "--format=%B", f"refs/remotes/origin/{source}").strip()
    title, description = _title_and_description(message, config.title, config.description)
    pr = _run(
        ctx,
        config,
        lambda forge: forge.open_pull_request(
            source=source,
            target=target,
            title=title,
            description=description,
            labels=list(config.labels),
        ),
    )
    return _outputs(pr)


def _title_and_description(
    message: str, title: str | None, description: str | None
) -> tuple[str, str]:
    """Kargo's defaults: the commit message's first line is the title, the rest the
    description; a given title leaves the whole message as the description."""
    if title:
        return title, description or message
    first, _, rest = message.partition("\n")
    return first or "Promotion", description or rest.strip()


def git_merge_pr(ctx: StepContext, config: GitMergePRConfig) -> dict[str, Any]:
    """Merge pull request ``prNumber`` now; output ``commit``, the merge commit.

    A pull request already merged answers with its merge commit (a retry converges). One
    the forge will not merge yet fails the step, unless ``wait``: then it is tried again
    every ``pollInterval`` (default 10 s) until ``retry.timeout`` (default 5 minutes, at
    most 20: this runs inside the clone-to-push activity). A closed one always fails.
    """
    number = config.pr_number
    interval = MERGE_POLL_DEFAULT
    if config.poll_interval:
        interval = max(parse_duration(config.poll_interval), MIN_POLL)
    limit = _merge_wait_limit(ctx) if config.wait else timedelta(0)
    waited = timedelta(0)
    while True:
        try:
            merged = _run(
                ctx,
                config,
                lambda forge: forge.merge_pull_request(number, method=config.merge_method),
            )
        except PullRequestNotMergeable as err:
            current = _run(ctx, config, lambda forge: forge.get_pull_request(number))
            if current.state == "closed":  # never mergeable again: no wait helps
                who = f" by {current.closed_by}" if current.closed_by else ""
                raise StepError(
                    f"{ctx.describe()}: pull request #{number} was closed{who} without merging"
                ) from None
            if not config.wait:
                raise StepError(
                    f"{ctx.describe()}: pull request #{number} is not ready to merge and wait "
                    f"is disabled ({err})"
                ) from None
            if waited >= limit:
                raise StepError(
                    f"{ctx.describe()}: pull request #{number} still not mergeable after "
                    f"{limit}: {err}"
                ) from None
        else:
            return {"commit": merged.merge_commit or ""}
        activity.wait_for_cancelled_sync(interval.total_seconds())
        if activity.is_cancelled():
            raise asyncio.CancelledError("the promotion was aborted while git-merge-pr waited")
        waited += interval


def _merge_wait_limit(ctx: StepContext) -> timedelta:
    text = ctx.step.retry_timeout if ctx.step else None
    if not text:
        return MERGE_WAIT_DEFAULT
    try:
        wait = parse_duration(text)
    except ValueError as err:
        raise ConfigError(f"{ctx.describe()}: retry.timeout: {err}") from None
    if wait <= timedelta(0):
        return MERGE_WAIT_DEFAULT
    if wait > MERGE_WAIT_MAX:
        raise ConfigError(
            f"{ctx.describe()}: retry.timeout {text} is longer than the 20m git-merge-pr may "
            "wait here (it runs inside the clone-to-push activity)"
        )
    return wait


class ForgeActivities:
    """What ``git-wait-for-pr`` asks the forge, with the worker's credentials."""

    def __init__(self, credentials: CredentialStore | None = None) -> None:
        self.credentials = credentials or CredentialStore(None)

    @boundary.defn(name="pull_request_state")
    async def pull_request_state(self, query: PullRequestQuery) -> PullRequest:
        """The pull request's state now (one or two GETs; no side effect)."""
        return await _with_forge(
            self.credentials,
            query.repo_url,
            query.provider,
            query.insecure_skip_tls_verify,
            lambda forge: forge.get_pull_request(query.number),
        )
