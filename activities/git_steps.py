"""The git steps: git-clone, git-clear, git-tag, git-commit, git-push, as Kargo v1.11's."""

from __future__ import annotations

import hashlib
import re
import shutil
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from activities.git import (
    Clone,
    Worktree,
    commit_author,
    git_environment,
    remote_url,
    signing_environment,
)
from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError
from freightline.kargo.gitrefs import branch_problem
from freightline.settings import GIT_SIGNING_KEY_FILE_ENV


def _valid_branch(name: str | None) -> str | None:
    """A pydantic check: a branch git would refuse is a configuration mistake (Errored)."""
    problem = branch_problem(name) if name else None
    if problem:
        raise ValueError(f"{name!r} is not a valid git branch name: {problem}")
    return name


class Author(StepConfig):
    name: str = Field(min_length=1)
    email: str = Field(min_length=1)
    signing_key: str | None = None

    @field_validator("signing_key")
    @classmethod
    def _no_key_in_config(cls, key: str | None) -> str | None:
        # A step's config is part of the promotion's plan, which Temporal records in
        # the workflow history: a private key there would be readable by anyone who can
        # read histories. The worker holds its key instead.
        if key:
            raise ValueError(
                "a signing key in a step's config would be recorded in the workflow "
                f"history; give the worker its key with {GIT_SIGNING_KEY_FILE_ENV} instead"
            )
        return key


class Checkout(StepConfig):
    as_: str | None = Field(default=None, alias="as")
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    from_freight: bool = False
    create: bool = False
    path: str = Field(min_length=1)
    sparse: list[str] | None = Field(default=None, min_length=1)

    check_branch = field_validator("branch")(_valid_branch)

    @model_validator(mode="after")
    def _one_ref(self) -> Checkout:
        given = [name for name in ("branch", "commit", "tag") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are mutually exclusive")
        return self


class GitCloneConfig(StepConfig):
    repo_url: str = Field(alias="repoURL", min_length=1)
    checkout: list[Checkout] = Field(min_length=1)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")
    recurse_submodules: bool = False
    blobless: bool = False
    author: Author | None = None

    @model_validator(mode="after")
    def _unique_aliases(self) -> GitCloneConfig:
        seen: set[str] = set()
        for index, checkout in enumerate(self.checkout):
            if checkout.as_:
                if checkout.as_ in seen:
                    raise ValueError(
                        f'duplicate checkout alias "{checkout.as_}" at checkout[{index}]'
                    )
                seen.add(checkout.as_)
        return self


def git_clone(ctx: StepContext, config: GitCloneConfig) -> dict[str, Any]:
    """Clone a repository once and check out each requested branch/tag/commit at its path.

    Output ``commits``: each checkout's head commit, by its ``as`` or else its ``path``
    (a branch just created has no commit yet: "").
    """
    credentials = ctx.git_credentials(config.repo_url)
    secrets = (credentials.password,) if credentials else ()
    clone = ctx.clones.get(config.repo_url)
    if clone is None:
        # The environment (askpass script, signing keyring) must outlive this step:
        # commit and push need it too.
        allow_local = ctx.allow_local_repositories
        author = (config.author.name, config.author.email) if config.author else ctx.author
        env = {
            **ctx.enter(git_environment(credentials, author, allow_local=allow_local)),
            **ctx.enter(signing_environment(ctx.signing_key_file)),
        }
        if config.insecure_skip_tls_verify:
            # Kargo's http.sslVerify=false, for this clone's git commands only.
            env["GIT_SSL_NO_VERIFY"] = "true"
        name = hashlib.sha1(config.repo_url.encode(), usedforsecurity=False).hexdigest()[:12]
        mirror = None
        if ctx.repository_cache is not None:
            # Held until the activity ends: the clone borrows the mirror's objects.
            url = remote_url(config.repo_url, allow_local=allow_local)
            mirror = ctx.enter(ctx.repository_cache.lease(url, env, credentials))
        if mirror is not None:
            # The mirror holds every blob already: blobless would save nothing here.
            clone = Clone.from_mirror(
                config.repo_url,
                mirror,
                ctx.workspace.private / name,
                env,
                secrets,
                allow_local=allow_local,
            )
        else:
            clone = Clone.create(
                config.repo_url,
                ctx.workspace.private / name,
                env,
                secrets,
                allow_local=allow_local,
                blobless=config.blobless,
            )
        clone.author = author
        ctx.clones[config.repo_url] = clone
    commits: dict[str, str] = {}
    for checkout in config.checkout:
        target = ctx.workspace.resolve(checkout.path, field="checkout.path")
        commit = checkout.commit
        if checkout.from_freight:
            commit = _commit_from_freight(ctx, config.repo_url)
        worktree = clone.add_worktree(
            target,
            branch=checkout.branch or None,
            tag=checkout.tag or None,
            commit=commit or None,
            create=checkout.create,
            sparse=checkout.sparse,
        )
        ctx.worktrees[target] = worktree
        if config.recurse_submodules:
            worktree.update_submodules()
        commits[checkout.as_ or checkout.path] = worktree.head() or ""
    return {"commits": commits}


def _commit_from_freight(ctx: StepContext, repo_url: str) -> str:
    # commitFrom(repoURL) over the Stage's Freight collection: Kargo's origin rule.
    try:
        commit = ctx.plan.artifact_functions()["commitFrom"](repo_url)
    except ValueError as err:
        raise ConfigError(f"{ctx.describe()}: checkout.fromFreight: {err}") from None
    if commit is None or not commit.ID:
        raise ConfigError(f"{ctx.describe()}: the Freight has no commit from {repo_url}")
    return str(commit.ID)


class GitClearConfig(StepConfig):
    path: str = Field(min_length=1)


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
    path: str = Field(min_length=1)
    message: str = Field(min_length=1)
    author: Author | None = None


def git_commit(ctx: StepContext, config: GitCommitConfig) -> dict[str, Any]:
    """Commit all changes; nothing to commit yields the current head, not an error.

    The author is the step's ``author``, else the ``git-clone`` step's, else the
    worker's; with a worker signing key the commit is signed.
    """
    worktree = ctx.worktree_at(config.path)
    author = {"name": config.author.name, "email": config.author.email} if config.author else None
    name, email = commit_author({"author": author}, worktree.clone.author or ctx.author)
    commit = worktree.commit(config.message, name, email)
    return {"commit": commit or ""}


class GitPushConfig(StepConfig):
    path: str = Field(min_length=1)
    target_branch: str | None = None
    generate_target_branch: bool = False
    tag: str | None = None
    force: bool = False
    max_attempts: int = Field(default=10, ge=1, le=2147483647)
    provider: Literal["azure", "bitbucket", "gitea", "github", "gitlab"] | None = None

    check_target_branch = field_validator("target_branch")(_valid_branch)

    @model_validator(mode="after")
    def _one_target(self) -> GitPushConfig:
        # Kargo's schema: generateTargetBranch, targetBranch and tag exclude one another,
        # and a tag is never forced.
        given = [
            name
            for name, value in (
                ("generateTargetBranch", self.generate_target_branch),
                ("targetBranch", self.target_branch),
                ("tag", self.tag),
            )
            if value
        ]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are mutually exclusive")
        if self.tag and self.force:
            raise ValueError("tag and force are mutually exclusive")
        return self


def push_target(
    ctx: StepContext,
    worktree: Worktree,
    target_branch: str | None,
    generate_target_branch: bool,
    force: bool,
) -> tuple[str, bool]:
    """The branch a push goes to, and whether it is forced (git-push's and github-push's
    ``targetBranch``, ``generateTargetBranch``, ``force``, as Kargo's)."""
    if generate_target_branch:
        # The branch is this promotion's own, so a retry may overwrite it.
        return f"kargo/promotion/{ctx.plan.promotion}".replace(":", "-"), True
    branch = target_branch or worktree.branch or ""
    if not branch:
        raise ConfigError(f"{ctx.describe()}: the checkout is not on a branch; set targetBranch")
    return branch, force


def git_push(ctx: StepContext, config: GitPushConfig) -> dict[str, Any]:
    """Push the checkout's branch (or a target/generated branch, or a tag).

    A branch push fetches, rebases and retries on rejection, unless ``force``
    (or ``generateTargetBranch``, which Kargo always forces: the branch belongs to
    this promotion) replaces the remote branch outright. A tag is pushed once.
    Outputs: ``commit`` (the head), ``branch`` (when there is one) and, when the
    repository's host is a known Git provider, ``commitURL``.
    """
    worktree = ctx.worktree_at(config.path)
    head = worktree.head()
    branch = ""
    if config.tag:
        worktree.push_tag(config.tag)
        branch = worktree.current_branch()
    else:
        branch, force = push_target(
            ctx, worktree, config.target_branch, config.generate_target_branch, config.force
        )
        head = worktree.push(branch, max_attempts=config.max_attempts, force=force)
    outputs: dict[str, Any] = {"commit": head or ""}
    if branch:
        outputs["branch"] = branch
    url = commit_url(worktree.clone.repo_url, head or "", config.provider)
    if url:
        outputs["commitURL"] = url
    return outputs


def commit_url(repo_url: str, commit: str, provider: str | None = None) -> str | None:
    """The web page of ``commit``, as Kargo's Git providers link it, or None.

    Without ``provider`` it is inferred from the host as Kargo infers it: a host naming
    github (or ghe.com), gitlab or gitea, ``bitbucket.org``, ``dev.azure.com`` or
    ``*.visualstudio.com``. Only http(s) and ssh URLs have a host to go by.
    """
    parts = urlsplit(repo_url.strip().lower())
    if parts.scheme not in ("http", "https", "ssh") or not parts.hostname or not commit:
        return None
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    path = re.sub(r"(\.git)?/*$", "", parts.path.rstrip("/"))
    if provider is None:
        if "github" in host or host.endswith("ghe.com"):
            provider = "github"
        elif "gitlab" in host:
            provider = "gitlab"
        elif "gitea" in host:
            provider = "gitea"
        elif parts.hostname == "bitbucket.org":
            provider = "bitbucket"
        elif host == "dev.azure.com" or host.endswith(".visualstudio.com"):
            provider = "azure"
        else:
            return None
    if provider == "gitlab":
        return f"https://{host}{path}/-/commit/{commit}"
    if provider == "bitbucket":
        return f"https://{host}{path}/commits/{commit}"
    if provider == "azure":
        return f"https://dev.azure.com{path.removeprefix('/v3')}/commit/{commit}"
    if provider == "github":
        owner_repo = "/".join(path.strip("/").split("/")[:2])
        return f"https://{host}/{owner_repo}/commit/{commit}"
    return f"https://{host}{path}/commit/{commit}"
