"""The git steps: git-clone, git-clear, git-tag, git-commit, git-push."""

from __future__ import annotations

import hashlib
import shutil
from typing import Any

from pydantic import Field, field_validator

from activities.git import Clone, commit_author, git_environment
from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError
from freightline.kargo.freight import same_repository
from freightline.kargo.gitrefs import branch_problem


def _valid_branch(name: str | None) -> str | None:
    """A pydantic check: a branch git would refuse is a configuration mistake (Errored)."""
    problem = branch_problem(name) if name else None
    if problem:
        raise ValueError(f"{name!r} is not a valid git branch name: {problem}")
    return name


class Checkout(StepConfig):
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    from_freight: bool = False
    create: bool = False
    path: str

    check_branch = field_validator("branch")(_valid_branch)


class GitCloneConfig(StepConfig):
    repo_url: str = Field(alias="repoURL")
    checkout: list[Checkout] = Field(min_length=1)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")
    author: dict[str, str] | None = None


def git_clone(ctx: StepContext, config: GitCloneConfig) -> dict[str, Any]:
    """Clone a repository once and check out each requested branch/tag/commit at its path."""
    credentials = ctx.git_credentials(config.repo_url)
    secrets = (credentials.password,) if credentials else ()
    clone = ctx.clones.get(config.repo_url)
    if clone is None:
        # The environment (askpass script) must outlive this step: push needs it too.
        allow_local = ctx.allow_local_repositories
        env = ctx.enter(git_environment(credentials, ctx.author, allow_local=allow_local))
        name = hashlib.sha1(config.repo_url.encode(), usedforsecurity=False).hexdigest()[:12]
        clone = Clone.create(
            config.repo_url, ctx.workspace.private / name, env, secrets, allow_local=allow_local
        )
        ctx.clones[config.repo_url] = clone
    for checkout in config.checkout:
        target = ctx.workspace.resolve(checkout.path, field="checkout.path")
        commit = checkout.commit
        if checkout.from_freight:
            commit = _commit_from_freight(ctx, config.repo_url)
        ctx.worktrees[target] = clone.add_worktree(
            target, branch=checkout.branch, tag=checkout.tag, commit=commit, create=checkout.create
        )
    return {}


def _commit_from_freight(ctx: StepContext, repo_url: str) -> str:
    for commit in ctx.plan.freight.commits or ():
        if same_repository("git", commit.repo_url, repo_url) and commit.id:
            return commit.id
    raise ConfigError(f"{ctx.describe()}: the Freight has no commit from {repo_url}")


class GitClearConfig(StepConfig):
    path: str


def git_clear(ctx: StepContext, config: GitClearConfig) -> dict[str, Any]:
    """Remove everything in a checkout except git's own metadata."""
    target = ctx.workspace.resolve(config.path)
    ctx.worktree_at(config.path)
    for entry in target.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return {}


def _valid_tag(name: str) -> str:
    """A pydantic check: tags follow git's ref-name rule, as branches do."""
    problem = branch_problem(name)
    if problem:
        raise ValueError(f"{name!r} is not a valid git tag name: {problem}")
    return name


class GitTagConfig(StepConfig):
    path: str = Field(min_length=1)
    tag: str = Field(min_length=1)
    message: str = Field(min_length=1)
    force: bool = False

    check_tag = field_validator("tag")(_valid_tag)


def git_tag(ctx: StepContext, config: GitTagConfig) -> dict[str, Any]:
    """Create an annotated tag on the checkout's HEAD; output that commit, as Kargo does.

    As Kargo's, an existing tag of that name is an error unless ``force`` (then it
    moves). One exception, so that a retried promotion converges: a tag that
    already names HEAD (a retry cloned it back after pushing it) is kept as it is.
    """
    worktree = ctx.worktree_at(config.path)
    head = worktree.head()
    if not head:
        raise ConfigError(f"{ctx.describe()}: error creating tag {config.tag}: no commit to tag")
    ref = f"refs/tags/{config.tag}"
    existing = worktree.clone.rev_parse(f"{ref}^{{commit}}")  # tags are the clone's
    if existing == head:
        return {"commit": head}
    if existing and not config.force:
        raise ConfigError(
            f'{ctx.describe()}: error creating tag {config.tag}: tag "{config.tag}" '
            "already exists (set force to move it)"
        )
    force = ["--force"] if config.force else []
    worktree.run("tag", "--annotate", "--message", config.message, *force, config.tag, head)
    return {"commit": head}


class GitCommitConfig(StepConfig):
    path: str
    message: str = Field(min_length=1)
    author: dict[str, str] | None = None


def git_commit(ctx: StepContext, config: GitCommitConfig) -> dict[str, Any]:
    """Commit all changes; nothing to commit yields the current head, not an error."""
    worktree = ctx.worktree_at(config.path)
    name, email = commit_author({"author": config.author}, ctx.author)
    commit = worktree.commit(config.message, name, email)
    return {"commit": commit or ""}


class GitPushConfig(StepConfig):
    path: str
    target_branch: str | None = None
    generate_target_branch: bool = False
    force: bool = False
    max_attempts: int = Field(default=10, ge=1, le=50)

    check_target_branch = field_validator("target_branch")(_valid_branch)


def git_push(ctx: StepContext, config: GitPushConfig) -> dict[str, Any]:
    """Push the checkout's branch (or a target/generated branch), rebasing on rejection."""
    if config.force:
        raise ConfigError(f"{ctx.describe()}: force pushes are not supported")
    worktree = ctx.worktree_at(config.path)
    if config.generate_target_branch:
        branch = f"kargo/promotion/{ctx.plan.promotion}".replace(":", "-")
    else:
        branch = config.target_branch or worktree.branch or ""
    if not branch:
        raise ConfigError(f"{ctx.describe()}: the checkout is not on a branch; set targetBranch")
    commit = worktree.push(branch, max_attempts=config.max_attempts)
    return {"branch": branch, "commit": commit}
