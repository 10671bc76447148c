"""Git subscriptions: which commits a ``git`` subscription selects, read with the git CLI.

Strategies, as Kargo's ``commitSelectionStrategy``:

- **NewestFromBranch** (default): the newest commits of ``branch`` (the
  remote's default branch when unset), in ``git log`` order. Read with a
  shallow, blobless fetch (``--depth`` = ``discoveryLimit``; deepened
  step by step when path filters skip commits).
- **SemVer**: tags that parse as versions (``strictSemvers``) and satisfy
  ``semverConstraint``, highest first. **Lexical**: tags by descending
  name. **NewestTag**: tags by descending creation date (the tagger's date
  for annotated tags, the commit's for lightweight ones). Tag names come
  from ``git ls-remote``; only the tags that may be returned are fetched
  (``--depth 1``, blobless), except NewestTag, which needs every tag's date.

Tags pass ``allowTagsRegexes`` (at least one, when any; plus the older
``allowTags``) and no ``ignoreTagsRegexes`` (nor an exact ``ignoreTags``),
matched anywhere in the name as Go's ``regexp.MatchString`` does.

``includePaths``/``excludePaths`` keep a commit when at least one path it
changes (against its first parent) is included and not excluded. A selector
is a base directory (``src``: ``src`` and below), ``glob:`` (doublestar: ``*``
stays within a directory, ``**`` crosses them) or ``regex:``/``regexp:``
(searched anywhere in the path): :mod:`freightline.kargo.path_selectors`.

``expressionFilter`` (an expr-lang expression, as Kargo) keeps a commit or tag
when it is true (a non-bool result is read as Go's ``strconv.ParseBool`` reads
its text). A branch's commits see ``id``, ``commitDate``, ``author``,
``committer``, ``subject``; a tag's ``tag``, ``id``, ``creatorDate``, ``author``,
``committer``, ``subject``, ``tagger``, ``annotation`` (authors and committers as
``Name <email>``). ``since`` (NewestFromBranch) stops discovery at the first
commit committed before it. ``insecureSkipTLSVerify`` sets ``GIT_SSL_NO_VERIFY``.

Credentials come from the worker's :class:`~freightline.kargo.credentials.CredentialStore`
and reach git through ``GIT_ASKPASS`` (see :mod:`activities.git`).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from activities.git import GitRunner, git_environment, remote_url
from activities.repository_cache import RepositoryCache
from freightline.contracts.warehouse import DiscoveredCommit
from freightline.errors import ConfigError, DiscoveryError, ExpressionError, GitCommandError
from freightline.kargo import expressions
from freightline.kargo.credentials import GitCredentials
from freightline.kargo.path_selectors import path_selector
from freightline.kargo.resources import GitSubscription
from freightline.kargo.semver import parse_constraint, try_parse_version

__all__ = ["discover_commits", "path_filter"]

# Fields of one commit in `git log`/`for-each-ref` output, separated by US (0x1f).
_LOG_FORMAT = "%H%x1f%P%x1f%an <%ae>%x1f%cn <%ce>%x1f%cI%x1f%s%x1e"
# A tag's tagger and annotation subject, separated by US; both empty for a lightweight tag
# (whose "contents" would be its commit's message), as Kargo reads them.
_TAG_FORMAT = (
    "%(if)%(*objectname)%(then)%(taggername) %(taggeremail)%1f%(contents:subject)%(else)%1f%(end)"
)
# How many commits a path-filtered branch discovery may read at most.
MAX_HISTORY = 10_000


def discover_commits(
    subscription: GitSubscription,
    credentials: GitCredentials | None,
    *,
    allow_local: bool = False,
    cache: RepositoryCache | None = None,
) -> list[DiscoveredCommit]:
    """Up to ``discoveryLimit`` commits the subscription selects, newest first.

    With a ``cache`` (the worker's repository cache) the commits are read from the
    repository's mirror, fetched anew (and shared with the promotions that clone the
    same repository); without, from a scratch repository that fetches only what it needs.
    Raises ConfigError (bad regex, constraint or path selector; a ``file://``
    repository unless ``allow_local``, the worker's settings) or DiscoveryError
    (missing repository or branch, git failure).
    """
    url = remote_url(subscription.repo_url, allow_local=allow_local)
    keep = path_filter(subscription.include_paths or (), subscription.exclude_paths or ())
    allowed = _tag_filter(subscription)
    wanted = expression_filter(subscription.expression_filter)
    constraint = None
    if subscription.commit_selection_strategy == "SemVer" and subscription.semver_constraint:
        constraint = parse_constraint(subscription.semver_constraint)
    secrets = (credentials.password,) if credentials else ()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(git_environment(credentials, allow_local=allow_local))
        if subscription.insecure_skip_tls_verify:
            env = {**env, "GIT_SSL_NO_VERIFY": "1"}
        mirror = None
        if cache is not None:
            try:
                mirror = stack.enter_context(cache.lease(url, env, credentials))
            except GitCommandError as err:
                raise DiscoveryError(f"git repository {subscription.repo_url}: {err}") from None
        git: _Repo
        if mirror is not None:
            git = _MirrorRepo(subscription.repo_url, mirror, GitRunner(mirror, env, secrets), url)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="freightline-")))
            git = _Repo(subscription.repo_url, tmp, GitRunner(tmp, env, secrets))
            git.run("init", "--quiet", "--bare")
            git.run("remote", "add", "origin", url)
        if subscription.commit_selection_strategy == "NewestFromBranch":
            return git.branch_commits(
                subscription.branch, subscription.discovery_limit, keep, wanted, subscription.since
            )
        tags = {t: c for t, c in git.remote_tags().items() if allowed(t)}
        match subscription.commit_selection_strategy:
            case "SemVer":
                versions = []
                for tag in tags:
                    version = try_parse_version(tag, subscription.strict_semvers)
                    if version is not None and (constraint is None or constraint.matches(version)):
                        versions.append((version, tag))
                ordered = [tag for _, tag in sorted(versions, reverse=True)]
            case "Lexical":
                ordered = sorted(tags, reverse=True)
            case _:  # NewestTag
                ordered = git.tags_by_date(list(tags))
        return git.tag_commits(ordered, subscription.discovery_limit, keep, wanted)


def expression_filter(text: str | None) -> Callable[[Mapping[str, Any]], bool] | None:
    """``expressionFilter`` as a predicate over a commit's or tag's fields (None: keep all).

    ConfigError when it does not parse (apply refuses that already) or, evaluated, fails or
    gives something that is not a boolean, as Kargo's discovery fails then.
    """
    if not text or not text.strip():
        return None
    try:
        expressions.parse(text.strip())
    except ExpressionError as err:
        raise ConfigError(f"expressionFilter: {err}") from None

    def wanted(env: Mapping[str, Any]) -> bool:
        try:
            result = expressions.evaluate(text.strip(), env)
        except ExpressionError as err:
            raise ConfigError(f"expressionFilter: {err}") from None
        if isinstance(result, bool):
            return result
        shown = "true" if result is True else str(result)
        # Go's strconv.ParseBool on the value's text.
        if shown in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if shown in ("0", "f", "F", "FALSE", "false", "False"):
            return False
        raise ConfigError(f"expressionFilter: expected a boolean, got {shown!r}")

    return wanted


def _commit_env(commit: DiscoveredCommit) -> dict[str, Any]:
    return {
        "id": commit.id,
        "commitDate": expressions.Time(commit.creator_date) if commit.creator_date else None,
        "author": commit.author,
        "committer": commit.committer,
        "subject": commit.subject,
    }


def path_filter(
    include: Sequence[str], exclude: Sequence[str]
) -> Callable[[list[str]], bool] | None:
    """A predicate over a commit's changed paths, or None when there are no selectors."""
    if not include and not exclude:
        return None
    includes = [_selector(s, "includePaths") for s in include]
    excludes = [_selector(s, "excludePaths") for s in exclude]

    def keep(paths: list[str]) -> bool:
        return any(
            (not includes or any(m(p) for m in includes)) and not any(m(p) for m in excludes)
            for p in paths
        )

    return keep


def _selector(text: str, field: str) -> Callable[[str], bool]:
    try:
        return path_selector(text)
    except ConfigError as err:
        raise ConfigError(f"{field}: {err}") from None


def _tag_filter(subscription: GitSubscription) -> Callable[[str], bool]:
    def compiled(patterns: Sequence[str], field: str) -> list[re.Pattern[str]]:
        result = []
        for pattern in patterns:
            try:
                result.append(re.compile(pattern))
            except re.error as err:
                raise ConfigError(f"{field}: invalid regex {pattern!r}: {err}") from None
        return result

    allow = compiled(
        [*(subscription.allow_tags_regexes or ()), *filter(None, [subscription.allow_tags])],
        "allowTagsRegexes",
    )
    ignore = compiled(subscription.ignore_tags_regexes or (), "ignoreTagsRegexes")
    ignored = set(subscription.ignore_tags or ())
    return lambda tag: (
        (not allow or any(r.search(tag) for r in allow))
        and not any(r.search(tag) for r in ignore)
        and tag not in ignored
    )


class _Repo:
    """A scratch bare repository that fetches from the subscribed remote."""

    def __init__(self, url: str, path: Path, run: GitRunner) -> None:
        self.url = url
        self.path = path
        self.run = run

    def git(self, *args: str) -> str:
        try:
            return self.run(*args)
        except GitCommandError as err:
            raise DiscoveryError(f"git repository {self.url}: {err}") from None

    # -- branches --

    def default_branch(self) -> str:
        out = self.git("ls-remote", "--symref", "origin", "HEAD")
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/"):
                return line.split()[1].removeprefix("refs/heads/")
        raise DiscoveryError(f"git repository {self.url}: no default branch; set branch")

    def branch_commits(
        self,
        branch: str | None,
        limit: int,
        keep: Callable[[list[str]], bool] | None,
        wanted: Callable[[Mapping[str, Any]], bool] | None = None,
        since: datetime | None = None,
    ) -> list[DiscoveredCommit]:
        branch = branch or self.default_branch()
        ref = self.branch_ref(branch)
        if ref is None:
            raise DiscoveryError(f"git repository {self.url}: branch {branch!r} does not exist")
        filtered = keep is not None or wanted is not None
        depth = max(4 * limit, 64) if filtered else limit
        while True:
            self.fetch(f"+refs/heads/{branch}:{ref}", depth=depth)
            commits = self.log(ref)
            cut = None
            if since is not None:
                # Kargo stops at the first commit older than `since` (git log --since).
                cut = next(
                    (
                        i
                        for i, (c, _) in enumerate(commits)
                        if c.creator_date is not None and _aware(c.creator_date) < _aware(since)
                    ),
                    None,
                )
                if cut is not None:
                    commits = commits[:cut]
            reached_since = since is not None and cut is not None
            if not filtered:
                return [_with(c, branch=branch) for c in commits[:limit]]
            boundary = self.shallow_boundary()
            # Nothing older counts once `since` was reached: no need to deepen.
            complete = reached_since or len(commits) < depth or not boundary
            found = []
            for commit, parents in commits:
                if commit.id in boundary and keep is not None:
                    break  # its parents are not here: its changes are unknown
                if wanted is not None and not wanted(_commit_env(commit)):
                    continue
                if keep is None or keep(self.changed_paths(commit.id, parents)):
                    found.append(_with((commit, parents), branch=branch))
                    if len(found) == limit:
                        return found
            if complete or depth >= MAX_HISTORY:
                return found
            depth *= 4

    def branch_ref(self, branch: str) -> str | None:
        """Where ``branch`` is (to be) fetched, or None when the remote has no such branch."""
        if not self.git("ls-remote", "--heads", "origin", f"refs/heads/{branch}"):
            return None
        return f"refs/remotes/origin/{branch}"

    # -- tags --

    def remote_tags(self) -> dict[str, str]:
        """Tag -> commit ID, from ``ls-remote`` (annotated tags peeled)."""
        tags: dict[str, str] = {}
        for line in self.git("ls-remote", "--tags", "origin").splitlines():
            sha, _, ref = line.partition("\t")
            name = ref.removeprefix("refs/tags/")
            if name.endswith("^{}"):
                tags[name[:-3]] = sha
            else:
                tags.setdefault(name, sha)
        return tags

    def tags_by_date(self, tags: list[str]) -> list[str]:
        if not tags:
            return []
        self.fetch("+refs/tags/*:refs/tags/*", depth=1)
        wanted = set(tags)
        out = self.git(
            "for-each-ref",
            # The last --sort is the primary key: newest first, ties by descending name.
            "--sort=-refname",
            "--sort=-creatordate",
            "--format=%(refname:strip=2)",
            "refs/tags",
        )
        return [t for t in out.splitlines() if t in wanted]

    def tag_commits(
        self,
        ordered: list[str],
        limit: int,
        keep: Callable[[list[str]], bool] | None,
        wanted: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[DiscoveredCommit]:
        found: list[DiscoveredCommit] = []
        position = 0
        while len(found) < limit and position < len(ordered):
            window = ordered[position : position + limit - len(found)]
            position += len(window)
            self.fetch(
                *(f"+refs/tags/{t}:refs/tags/{t}" for t in window),
                depth=1 if keep is None else 2,
            )
            for tag in window:
                commit, parents = self.tag_commit(tag)
                if wanted is not None and not wanted(self.tag_env(tag, commit)):
                    continue
                if keep is not None and not keep(self.changed_paths(commit.id, parents)):
                    continue
                found.append(commit)
        return found

    def tag_commit(self, tag: str) -> tuple[DiscoveredCommit, list[str]]:
        (commit, parents), *_ = self.log(f"refs/tags/{tag}", count=1)
        created = self.git("for-each-ref", "--format=%(creatordate:iso-strict)", f"refs/tags/{tag}")
        return (
            commit.model_copy(update={"tag": tag, "creator_date": _date(created)}),
            parents,
        )

    def tag_env(self, tag: str, commit: DiscoveredCommit) -> dict[str, Any]:
        """What an expressionFilter sees of a tag (Kargo's tag metadata)."""
        tagger, _, annotation = (
            self.git("for-each-ref", f"--format={_TAG_FORMAT}", f"refs/tags/{tag}")
            .strip("\n")
            .partition("\x1f")
        )
        return {
            "tag": tag,
            "id": commit.id,
            "creatorDate": expressions.Time(commit.creator_date) if commit.creator_date else None,
            "author": commit.author,
            "committer": commit.committer,
            "subject": commit.subject,
            "tagger": tagger.strip(),
            "annotation": annotation,
        }

    # -- plumbing --

    def fetch(self, *refspecs: str, depth: int) -> None:
        self.git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--filter=blob:none",
            f"--depth={depth}",
            "origin",
            *refspecs,
        )

    def shallow_boundary(self) -> set[str]:
        shallow = self.path / "shallow"
        return set(shallow.read_text().split()) if shallow.exists() else set()

    def log(self, ref: str, count: int | None = None) -> list[tuple[DiscoveredCommit, list[str]]]:
        args = ["log", f"--format={_LOG_FORMAT}"]
        if count is not None:
            args.append(f"-n{count}")
        out = self.git(*args, ref, "--")
        commits = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\x1f")
            if len(fields) != 6:
                continue
            sha, parents, author, committer, date, subject = fields
            commit = DiscoveredCommit(
                id=sha,
                subject=subject,
                author=author,
                committer=committer,
                creator_date=_date(date),
            )
            commits.append((commit, parents.split()))
        return commits

    def changed_paths(self, commit: str, parents: list[str]) -> list[str]:
        base = [parents[0]] if parents else ["--root"]
        out = self.git(
            "diff-tree", "-r", "--no-commit-id", "--name-only", "--no-renames", *base, commit
        )
        return out.splitlines()


class _MirrorRepo(_Repo):
    """The repository cache's mirror, fetched in full just now: read, never fetched into.

    Branches are ``refs/heads/*`` and tags ``refs/tags/*`` of the mirror; the whole
    history is there, so path filters never need to deepen. Only the remote's default
    branch is asked of the remote (a mirror's HEAD may be older).
    """

    def __init__(self, repo_url: str, path: Path, run: GitRunner, url: str) -> None:
        super().__init__(repo_url, path, run)
        self.remote = url

    def default_branch(self) -> str:
        out = self.git("ls-remote", "--symref", "--end-of-options", self.remote, "HEAD")
        for line in out.splitlines():
            if line.startswith("ref: refs/heads/"):
                return line.split()[1].removeprefix("refs/heads/")
        raise DiscoveryError(f"git repository {self.url}: no default branch; set branch")

    def branch_ref(self, branch: str) -> str | None:
        ref = f"refs/heads/{branch}"
        return ref if self.git("for-each-ref", "--format=%(refname)", ref) else None

    def remote_tags(self) -> dict[str, str]:
        # Ref names hold no spaces; an annotated tag's commit is its peeled object.
        format_ = "--format=%(refname:strip=2) %(objectname) %(*objectname)"
        tags: dict[str, str] = {}
        for line in self.git("for-each-ref", format_, "refs/tags").splitlines():
            name, sha, peeled = line.split(" ")
            tags[name] = peeled or sha
        return tags

    def fetch(self, *refspecs: str, depth: int) -> None:
        pass  # the mirror has everything: the lease fetched it

    def shallow_boundary(self) -> set[str]:
        return set()


def _with(entry: tuple[DiscoveredCommit, list[str]], *, branch: str) -> DiscoveredCommit:
    return entry[0].model_copy(update={"branch": branch})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _date(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None
