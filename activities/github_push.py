"""``github-push``, as Kargo v1.11's: push a checkout's commits to GitHub by replaying them
through GitHub's git database API, so that GitHub signs them.

Why not ``git push``: a GitHub App cannot own a GPG key, so a branch that requires verified
commits refuses what an App pushes. A commit created through the API without an author is
attributed to the token's account (the App) and signed by GitHub.

How, following Kargo's steps:

1. integrate the remote branch's new commits into the checkout (fetch and rebase, as
   ``git-push`` does on a rejection), unless ``force``;
2. push the checkout's HEAD to a staging ref, ``refs/kargo/staging/<promotion>``, with git
   (every blob and tree reaches GitHub; the ref lists in no branch listing);
3. replay each local commit not on the remote branch with ``POST /git/commits`` (its tree,
   its message, its parents mapped onto the replayed ones): one signed by the worker's own
   signing key (the trusted key, ``%G?`` = ``G``) is created without author and committer,
   so GitHub signs it (``Co-authored-by`` keeps its author when the signer differs); any
   other keeps its author and committer and stays unverified, as Kargo does by default;
4. move the branch (``PATCH /git/refs``, a fast-forward unless ``force``; ``POST /git/refs``
   for a new branch); GitHub's 422, someone pushed in between, starts over from 1, at most
   ``maxAttempts`` times;
5. delete the staging ref and reset the checkout to the replayed head (its SHAs are new).

A retry converges: the checkout of a retried batch already holds the replayed commits, so
nothing is ahead of the remote and the step answers with the remote's head. The token is the
worker's git credential for the repository (a token or a GitHub App's installation token,
as the pull-request steps get theirs); it never enters an output, an error or a log.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field, field_validator, model_validator

from activities.forges import forge_for
from activities.forges.github import GitHub
from activities.git import PUSH_BACKOFF_BASE, PUSH_BACKOFF_CAP, Worktree
from activities.git_steps import _valid_branch, commit_url, push_target
from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError, FreightlineError, GitCommandError, StepError
from freightline.kargo.credentials import CredentialStore
from freightline.logging import get_logger

__all__ = ["MAX_REPLAYED_COMMITS", "GitHubPushConfig", "github_push"]

MAX_REPLAYED_COMMITS = 10
"""Kargo's default cap on the commits one push replays (``GITHUB_PUSH_MAX_REVISIONS``): a
guard against replaying a whole history by mistake."""
STAGING_PREFIX = "refs/kargo/staging"

log = get_logger("activities.github_push")


class GitHubPushConfig(StepConfig):
    path: str = Field(min_length=1)
    target_branch: str | None = None
    generate_target_branch: bool = False
    force: bool = False
    max_attempts: int = Field(default=10, ge=1, le=2147483647)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")

    check_target_branch = field_validator("target_branch")(_valid_branch)

    @model_validator(mode="after")
    def _one_target(self) -> GitHubPushConfig:
        if self.generate_target_branch and self.target_branch:
            raise ValueError("generateTargetBranch and targetBranch are mutually exclusive")
        return self


@dataclass(frozen=True)
class _Commit:
    sha: str
    tree: str
    parents: list[str]
    message: str
    author: dict[str, str]
    committer: dict[str, str]
    signature: str
    """git's ``%G?``: ``G`` is a good signature by a trusted (the worker's) key."""
    signer: str
    """``%GS``: the signer's ``Name <email>``, or empty."""


def github_push(ctx: StepContext, config: GitHubPushConfig) -> dict[str, Any]:
    """Replay the checkout's new commits onto ``targetBranch`` (or the checkout's branch, or
    ``kargo/promotion/<promotion>``) through GitHub's API; outputs ``commit``, ``branch``
    and ``commitURL`` as Kargo's."""
    worktree = ctx.worktree_at(config.path)
    if worktree.head() is None:
        raise ConfigError(f"{ctx.describe()}: nothing to push: the branch has no commits")
    branch, force = push_target(
        ctx, worktree, config.target_branch, config.generate_target_branch, config.force
    )
    repo_url = worktree.clone.repo_url
    staging = f"{STAGING_PREFIX}/{ctx.plan.promotion}".replace(":", "-")
    store = ctx.credential_store or CredentialStore(None)
    head = asyncio.run(
        _push(ctx, worktree, store, config, branch=branch, force=force, staging=staging)
    )
    outputs: dict[str, Any] = {"commit": head, "branch": branch}
    url = commit_url(repo_url, head, "github")
    if url:
        outputs["commitURL"] = url
    return outputs


async def _push(
    ctx: StepContext,
    worktree: Worktree,
    store: CredentialStore,
    config: GitHubPushConfig,
    *,
    branch: str,
    force: bool,
    staging: str,
) -> str:
    repo_url = worktree.clone.repo_url
    http = (
        httpx.AsyncClient(verify=False, timeout=30.0)  # noqa: S501 - asked for
        if config.insecure_skip_tls_verify
        else None
    )
    try:
        forge = forge_for(repo_url, "github", credentials=store, http=http)
        assert isinstance(forge, GitHub)
        staged: set[str] = set()
        try:
            for attempt in range(config.max_attempts):
                head = await _attempt(
                    ctx, worktree, forge, branch=branch, force=force, staging=staging, staged=staged
                )
                if head is not None:
                    _sync(worktree, branch, head)
                    return head
                backoff = min(PUSH_BACKOFF_CAP, PUSH_BACKOFF_BASE * 2**attempt)
                await asyncio.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter
        finally:
            # Best effort, as Kargo: a leftover staging ref is overwritten by the next push.
            try:
                for ref in staged:
                    await forge.delete_ref(ref.removeprefix("refs/"))
            except FreightlineError as err:
                log.warning("staging ref not deleted", ref=staging, error=str(err))
    finally:
        if http is not None:
            await http.aclose()
    raise StepError(
        f'{ctx.describe()}: updating "{branch}" was refused {config.max_attempts} times: '
        "the branch keeps moving; try again later"
    )


async def _attempt(
    ctx: StepContext,
    worktree: Worktree,
    forge: GitHub,
    *,
    branch: str,
    force: bool,
    staging: str,
    staged: set[str],
) -> str | None:
    """One try: the new head of ``branch``, or None when GitHub refused the move (try again).
    ``staged`` gets the staging ref once it is pushed (to delete it afterwards)."""
    remote = await forge.ref_head(f"heads/{branch}")
    if remote is not None and not force and not _is_ancestor(worktree, remote, "HEAD"):
        # Kargo's AlwaysRebase: a fast-forward, or our commits rebased onto the remote's; a
        # conflict fails the step with nothing pushed.
        worktree._rebase_onto(branch)
    head = worktree.head()
    assert head is not None
    if remote == head:
        return head  # nothing to replay: already there (a retried promotion)
    if remote is not None:
        base = _fork_point(worktree, branch, remote)
    else:
        # A new branch: what is new is what the checkout's own branch does not have yet.
        source = worktree.branch
        source_head = await forge.ref_head(f"heads/{source}") if source else None
        base = _fork_point(worktree, source, source_head) if source and source_head else None
        if base is None:
            base = _last_fetched(worktree)
    commits = _local_commits(worktree, base)
    if len(commits) > MAX_REPLAYED_COMMITS:
        raise StepError(
            f"{ctx.describe()}: {len(commits)} commits to replay onto {branch}, more than "
            f"the {MAX_REPLAYED_COMMITS} github-push replays at once"
        )
    worktree.run("push", "--porcelain", "--force", "origin", f"HEAD:{staging}")
    staged.add(staging)
    new_head = await _replay(forge, commits, base)
    if remote is None:
        moved = await forge.create_ref(f"refs/heads/{branch}", new_head)
    else:
        moved = await forge.update_ref(f"heads/{branch}", new_head, force=force)
    if not moved:
        log.info("github-push refused, integrating", branch=branch)
        return None
    return new_head


def _is_ancestor(worktree: Worktree, ancestor: str, descendant: str) -> bool:
    """Whether ``ancestor`` is in ``descendant``'s history (False if we lack the commit)."""
    try:
        worktree.run("merge-base", "--is-ancestor", ancestor, descendant)
    except GitCommandError:
        return False
    return True


def _fork_point(worktree: Worktree, branch: str, remote: str) -> str | None:
    """The last commit HEAD shares with the remote ``branch`` at ``remote``: ``remote``
    itself when HEAD descends from it (no fetch); else their merge base, after fetching the
    branch's history (None: unrelated histories, everything is replayed)."""
    if _is_ancestor(worktree, remote, "HEAD"):
        return remote
    if worktree.run("rev-parse", "--is-shallow-repository") == "true":
        worktree.run("fetch", "--unshallow", "--end-of-options", "origin", branch)
    else:
        worktree.run("fetch", "--end-of-options", "origin", branch)
    try:
        return worktree.run("merge-base", "HEAD", remote) or None
    except GitCommandError:
        return None


def _last_fetched(worktree: Worktree) -> str | None:
    """For a checkout on no branch (a commit, a tag): the newest commit of HEAD's history that
    came from the remote (a remote branch's, or the clone's shallow boundary), or None."""
    path = worktree.path / worktree.run("rev-parse", "--git-path", "shallow")
    shallow = set(path.read_text().split()) if path.is_file() else set()
    local = worktree.run("rev-list", "--topo-order", "HEAD", "--not", "--remotes").split()
    for sha in local:  # newest first: the first one the remote has is the base
        if sha in shallow:
            return sha
    if not local:
        return worktree.head()
    parents = worktree.run("log", "-1", "--format=%P", local[-1]).split()
    return parents[0] if parents else None


def _local_commits(worktree: Worktree, base: str | None) -> list[_Commit]:
    """The commits after ``base`` up to HEAD, oldest first (parents before children)."""
    span = f"{base}..HEAD" if base else "HEAD"
    shas = worktree.run("rev-list", "--reverse", "--topo-order", span).split()
    fields = "%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%G?%x00%GS"
    commits = []
    for sha in shas:
        tree, parents, an, ae, ad, cn, ce, cd, trust, signer = worktree.run(
            "log", "-1", f"--format={fields}", sha
        ).split("\x00")
        message = worktree.run("log", "-1", "--format=%B", sha)
        commits.append(
            _Commit(
                sha=sha,
                tree=tree,
                parents=parents.split(),
                message=message,
                author={"name": an, "email": ae, "date": ad},
                committer={"name": cn, "email": ce, "date": cd},
                signature=trust,
                signer=signer,
            )
        )
    return commits


async def _replay(forge: GitHub, commits: list[_Commit], base: str | None) -> str:
    """Create each commit through the API; the last one's SHA (``base`` if none)."""
    mapped: dict[str, str] = {base: base} if base else {}
    last = base
    for commit in commits:
        if len(commit.parents) > 1:
            parents = [mapped.get(parent, parent) for parent in commit.parents]
        else:
            parents = [last] if last else []
        message = commit.message
        author = committer = None
        if commit.signature == "G":
            # Trusted: GitHub attributes it to the token's account and signs it.
            signer = f"{commit.author['name']} <{commit.author['email']}>"
            if commit.signer != signer:
                message = f"{message}\n\nCo-authored-by: {signer}"
        else:
            author, committer = commit.author, commit.committer
        created = await forge.create_commit(
            tree=commit.tree,
            parents=parents,
            message=message,
            author=author,
            committer=committer,
        )
        last = str(created["sha"])
        mapped[commit.sha] = last
        log.info(
            "github-push replayed a commit",
            original=commit.sha,
            replayed=last,
            verified=bool(created.get("verification", {}).get("verified")),
        )
    if last is None:
        raise StepError("github-push: nothing to replay and no base commit")
    return last


def _sync(worktree: Worktree, branch: str, head: str) -> None:
    """The checkout follows the remote branch: the replayed commits have new SHAs."""
    if worktree.head() == head:
        return
    worktree.run("fetch", "--end-of-options", "origin", branch)
    worktree.run("reset", "--quiet", "--hard", head)
