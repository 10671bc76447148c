"""The one git wrapper: clone, worktrees, commit, and push with rebase.

Built on GitPython's command runner (the real ``git`` binary). Credentials,
when a repository needs them, reach git through ``GIT_ASKPASS`` and
environment variables of the git process only, or, for an SSH private key,
through ``GIT_SSH_COMMAND`` naming a private temporary key file and a
``known_hosts`` file (unknown host keys refused): they never appear in
command lines, remote URLs, logs or results.

A repository URL comes from a project's configuration, so it must not read
the worker's own filesystem: a local path or ``file://`` URL (a git step's
``repoURL: .`` would clone the worker's working directory, or another
project's repository on the same disk) is refused with a ConfigError naming
``FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES``, which the dev server, the demo and
the tests turn on (their repositories are bare repositories on disk), and so
is git's ``<transport>::<address>`` remote-helper form (``ext::`` runs a
command). :func:`remote_url` checks; git itself enforces the same through
``GIT_ALLOW_PROTOCOL`` in :func:`git_environment`, for whatever else git or a
tool that runs it (kustomize's remote resources) may be asked to fetch.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git

from activities import github_app
from freightline.errors import ConfigError, GitCommandError, StepError
from freightline.kargo.credentials import GitCredentials
from freightline.settings import (
    ALLOW_LOCAL_REPOSITORIES_ENV,
    DEFAULT_AUTHOR_EMAIL,
    DEFAULT_AUTHOR_NAME,
    GIT_SIGNING_KEY_FILE_ENV,
)

DEFAULT_AUTHOR = (DEFAULT_AUTHOR_NAME, DEFAULT_AUTHOR_EMAIL)
MAX_PUSH_ATTEMPTS = 10
# Between rejected pushes: full-jitter exponential backoff (0.2s, 0.4s, ... capped at 5s).
# Without it, a dozen promotions pushing to one branch retry in lockstep and some run
# out of attempts while the branch is only busy (found by tests/reliability/test_races.py).
PUSH_BACKOFF_BASE = 0.2
PUSH_BACKOFF_CAP = 5.0

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s' "$FREIGHTLINE_GIT_USERNAME" ;;
  *) printf '%s' "$FREIGHTLINE_GIT_PASSWORD" ;;
esac
"""


# Transports git may use (GIT_ALLOW_PROTOCOL): "file" is a local path or file:// URL.
NETWORK_PROTOCOLS = ("https", "http", "ssh", "git")
_SCP_LIKE = re.compile(r"^[^/]+:")  # [user@]host:path, git's rule: a colon before any slash
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_COMMIT_ID = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")  # a server fetches full IDs only


def is_local_repository(repo_url: str) -> bool:
    """Whether git would read ``repo_url`` from this machine's filesystem."""
    url = repo_url.strip()
    if "://" in url:
        return url.lower().startswith("file://")
    return not _SCP_LIKE.match(url)


def remote_url(repo_url: str, *, allow_local: bool) -> str:
    """The URL to give git for a configured ``repo_url``, or a ConfigError why it is refused.

    A local path becomes a ``file://`` URL (so ``--depth`` works on it), when allowed.
    """
    if _REMOTE_HELPER.match(repo_url.strip()):
        raise ConfigError(
            f'repoURL "{repo_url}": git remote helpers ("<transport>::<address>") are refused; '
            "give an https://, ssh:// or git@host:path URL"
        )
    if not is_local_repository(repo_url):
        return repo_url
    if not allow_local:
        raise ConfigError(
            f'repoURL "{repo_url}": a local path or file:// URL would read the worker\'s own '
            f"filesystem; refused unless the worker sets {ALLOW_LOCAL_REPOSITORIES_ENV}=true"
        )
    if "://" in repo_url:
        return repo_url
    return Path(repo_url).resolve().as_uri()


def allowed_protocols(*, allow_local: bool) -> str:
    """``GIT_ALLOW_PROTOCOL`` for git processes: the network transports, and file if allowed."""
    return ":".join((*NETWORK_PROTOCOLS, "file") if allow_local else NETWORK_PROTOCOLS)


@contextmanager
def git_environment(
    credentials: GitCredentials | None,
    author: tuple[str, str] = DEFAULT_AUTHOR,
    *,
    allow_local: bool = False,
) -> Iterator[dict[str, str]]:
    """Environment for git processes: no prompts, askpass for credentials, ``author`` as identity.

    Git refuses transports other than :data:`NETWORK_PROTOCOLS` (and local
    repositories unless ``allow_local``) whatever it is asked to fetch.
    """
    name, email = author
    env = {
        "GIT_ALLOW_PROTOCOL": allowed_protocols(allow_local=allow_local),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        # Rebases make commits too; they need an identity even on a bare worker.
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
    if credentials is None:
        yield env
        return
    credentials = github_app.resolve(credentials)  # an App's key becomes a token here
    with tempfile.TemporaryDirectory(prefix="freightline-askpass-") as tmp:
        script = Path(tmp) / "askpass.sh"
        script.write_text(_ASKPASS)
        script.chmod(stat.S_IRWXU)
        env = {
            **env,
            "GIT_ASKPASS": str(script),
            "FREIGHTLINE_GIT_USERNAME": credentials.username,
            "FREIGHTLINE_GIT_PASSWORD": credentials.password,
        }
        if credentials.ssh_private_key:
            env["GIT_SSH_COMMAND"] = _ssh_command(Path(tmp), credentials)
        yield env


def _ssh_command(tmp: Path, credentials: GitCredentials) -> str:
    """``GIT_SSH_COMMAND`` for a private key: only that key, and only known host keys.

    The key and the known hosts are files in the environment's private temporary
    directory (removed with it), never arguments or variables of their own. A host
    whose key is not in ``credentials.known_hosts`` is refused (``StrictHostKeyChecking``),
    as is any host when there are none: trusting a key on first use would let whoever
    answers first for the host receive the pushes.
    """
    assert credentials.ssh_private_key
    key = tmp / "id"
    key.touch(mode=stat.S_IRUSR | stat.S_IWUSR)  # ssh refuses a key others may read
    key.write_text(credentials.ssh_private_key.rstrip("\n") + "\n")  # ssh needs the newline
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text(credentials.known_hosts or "")
    options = {
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "BatchMode": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ConnectTimeout": "30",
    }
    # -F /dev/null: the worker's own ~/.ssh/config does not take part.
    parts = ["ssh", "-F", "/dev/null", "-i", str(key)]
    for name, value in options.items():
        parts += ["-o", f"{name}={value}"]
    return shlex.join(parts)


@contextmanager
def signing_environment(key_file: Path | None) -> Iterator[dict[str, str]]:
    """Environment that makes git sign every commit and tag with the worker's GPG key.

    The key is imported into a keyring of its own (``GNUPGHOME``, deleted afterwards,
    its agent stopped), trusted ultimately as Kargo trusts its signing key, and named
    to git by fingerprint through ``GIT_CONFIG_*`` (git's ``-c`` for every command, so
    rebases sign too). No key file: no signing, an empty environment.
    """
    if key_file is None:
        yield {}
        return
    if not key_file.is_file():
        raise ConfigError(f"{GIT_SIGNING_KEY_FILE_ENV}: {key_file} is not a file")
    with tempfile.TemporaryDirectory(prefix="freightline-gpg-") as home:
        gpg = ["gpg", "--batch", "--no-tty", "--homedir", home]
        try:
            _run_gpg([*gpg, "--import", str(key_file)])
            listing = _run_gpg([*gpg, "--with-colons", "--list-secret-keys"])
            fingerprints = [
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
            ]
            if not fingerprints:
                raise ConfigError(f"{GIT_SIGNING_KEY_FILE_ENV}: {key_file} holds no GPG secret key")
            _run_gpg([*gpg, "--import-ownertrust"], stdin=f"{fingerprints[0]}:6:\n")
            yield {
                "GNUPGHOME": home,
                "GIT_CONFIG_COUNT": "3",
                "GIT_CONFIG_KEY_0": "commit.gpgSign",
                "GIT_CONFIG_VALUE_0": "true",
                "GIT_CONFIG_KEY_1": "tag.gpgSign",
                "GIT_CONFIG_VALUE_1": "true",
                "GIT_CONFIG_KEY_2": "user.signingKey",
                "GIT_CONFIG_VALUE_2": fingerprints[0],
            }
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
                timeout=30,
            )


def _run_gpg(command: list[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise ConfigError(
            f"{GIT_SIGNING_KEY_FILE_ENV} is set but gpg is not installed on the worker"
        ) from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise ConfigError(f"{GIT_SIGNING_KEY_FILE_ENV}: gpg: {reason}")
    return result.stdout


class GitRunner:
    """Runs git in one directory with one environment."""

    def __init__(self, cwd: Path, env: Mapping[str, str], secrets: tuple[str, ...] = ()) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self._secrets = tuple(s for s in secrets if s)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What this runner scrubs from its errors (for a runner elsewhere, same secrets)."""
        return self._secrets

    def __call__(self, *args: str, check: bool = True) -> str:
        try:
            out: Any = git.Git(str(self.cwd)).execute(
                ["git", *args],
                env=self.env,
                with_extended_output=False,
                strip_newline_in_stdout=True,
            )
            return str(out)
        except git.GitCommandError as err:
            if not check:
                raise
            raise GitCommandError(self._scrub(f"git {args[0]}: {_stderr_of(err)}")) from None

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _stderr_of(err: git.GitCommandError) -> str:
    text = str(err.stderr or err.stdout or err).strip()
    text = re.sub(r"^stderr: ?'?", "", text).rstrip("'").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if line.startswith(("fatal:", "error:")):
            if line == _NO_REMOTE and number > 0:
                # git's words say nothing; ssh's line before them says why (a host key
                # that is not known, a key the server refused).
                return f"{lines[number - 1]} ({line})"
            return line
    return lines[-1] if lines else f"exit status {err.status}"


_NO_REMOTE = "fatal: Could not read from remote repository."


# A promotion's clone and worktrees live for one activity: git's automatic housekeeping
# after a commit, fetch or rebase (a `maintenance run --auto` or `gc --auto` process each
# time) would tidy what is deleted minutes later. `clone -c` keeps these in the clone's
# config, which its worktrees share.
_THROWAWAY_CONFIG = ("-c", "maintenance.auto=false", "-c", "gc.auto=0")


@dataclass
class _Refs:
    """A clone's branches as one ``for-each-ref`` lists them."""

    remote: dict[str, str] = field(default_factory=dict)
    """Each remote branch's commit (``refs/remotes/origin/<branch>``)."""
    attached: str | None = None
    """The branch the clone's own HEAD is on (a fresh clone's: the default branch)."""
    default: str | None = None
    """The remote's default branch, as the clone recorded it (``refs/remotes/origin/HEAD``)."""


class _Unknown:
    """A worktree's HEAD nobody has asked git for since it may have moved."""


_UNKNOWN = _Unknown()


class Clone:
    """One repository cloned into a workspace, with worktrees checked out from it."""

    def __init__(self, repo_url: str, path: Path, env: Mapping[str, str], secrets: tuple[str, ...]):
        self.repo_url = repo_url
        self.path = path
        self.author: tuple[str, str] | None = None
        """The git-clone step's ``author``: the default for commits in this clone."""
        self.env = env
        self.secrets = secrets
        self._git = GitRunner(path, env, secrets)
        self._refs: _Refs | None = None
        """The clone's branches as one ``for-each-ref`` listed them, while nothing can have
        moved them since (None: unknown, list them again when asked)."""
        self.complete = False
        """Whether the clone holds the whole history (made from a repository cache's mirror):
        a tag or commit it already has needs no fetch, and a missing one a full fetch."""

    def run(self, *args: str, check: bool = True) -> str:
        """Run git in the clone; refs may move, so the listed ones are forgotten first."""
        self._refs = None
        return self._git(*args, check=check)

    def forget_refs(self) -> None:
        """Something (a push, a fetch in a worktree) may have moved the clone's refs."""
        self._refs = None

    def _listed_refs(self) -> _Refs:
        """The branches, listed once for every question a promotion asks about them: which
        remote branches exist and at which commit, which branch the clone's own HEAD is on,
        the remote's default branch (one git process instead of one ``rev-parse`` each)."""
        if self._refs is None:
            listing = self._git(
                "for-each-ref",
                "--format=%(objectname)%00%(refname)%00%(HEAD)%00%(symref)",
                "refs/heads/",
                "refs/remotes/origin/",
            )
            refs = _Refs()
            for line in listing.splitlines():
                commit, name, checked_out, target = line.split("\0")
                if name == "refs/remotes/origin/HEAD":
                    if target.startswith("refs/remotes/origin/"):
                        refs.default = target.removeprefix("refs/remotes/origin/")
                elif name.startswith("refs/remotes/origin/"):
                    refs.remote[name.removeprefix("refs/remotes/origin/")] = commit
                elif checked_out == "*":
                    refs.attached = name.removeprefix("refs/heads/")
            self._refs = refs
        return self._refs

    @classmethod
    def create(
        cls,
        repo_url: str,
        path: Path,
        env: Mapping[str, str],
        secrets: tuple[str, ...] = (),
        *,
        allow_local: bool = False,
        blobless: bool = False,
    ) -> Clone:
        """Clone without a checkout; branches are fetched shallowly, worktrees added later.

        A local ``repo_url`` is refused unless ``allow_local`` (see :func:`remote_url`).
        ``blobless`` asks the server for no file contents until a checkout needs them
        (``--filter=blob:none``; a server without partial clone support ignores it).
        """
        url = remote_url(repo_url, allow_local=allow_local)
        path.parent.mkdir(parents=True, exist_ok=True)
        blobs = ("--filter=blob:none",) if blobless else ()
        GitRunner(path.parent, env, secrets)(
            "clone", *_THROWAWAY_CONFIG, "--no-checkout", "--depth", "1", "--no-single-branch",
            *blobs, url, str(path),
        )  # fmt: skip
        return cls(repo_url, path, env, secrets)

    @classmethod
    def from_mirror(
        cls,
        repo_url: str,
        mirror: Path,
        path: Path,
        env: Mapping[str, str],
        secrets: tuple[str, ...] = (),
        *,
        allow_local: bool = False,
    ) -> Clone:
        """A clone of a repository cache's ``mirror`` (already fetched) whose ``origin`` is
        ``repo_url``, so that fetches and pushes go to the real remote, as from :meth:`create`.

        ``--shared``: the clone borrows the mirror's objects (``objects/info/alternates``)
        and copies only its refs, so it costs milliseconds whatever the repository's size;
        what the clone writes (commits, a rebase's fetch) stays in its own object store.
        The mirror must outlive the clone (the cache's lease holds it).
        """
        url = remote_url(repo_url, allow_local=allow_local)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The mirror is a local path: git's "file" transport, whatever the worker allows
        # for the repositories a project names (this path is the worker's own, not theirs).
        local = {**env, "GIT_ALLOW_PROTOCOL": "file"}
        GitRunner(path.parent, local, secrets)(
            "clone", *_THROWAWAY_CONFIG, "--quiet", "--shared", "--no-checkout",
            "--end-of-options", str(mirror), str(path),
        )  # fmt: skip
        clone = cls(repo_url, path, env, secrets)
        clone.complete = True
        # (Not `clone -c remote.origin.url=`: clone writes the URL it cloned from over it.)
        clone._git("remote", "set-url", "--end-of-options", "origin", url)
        return clone

    def rev_parse(self, ref: str) -> str | None:
        """The commit ``ref`` names in this clone, or None."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", ref, check=False) or None
        except git.GitCommandError:
            return None

    def remote_branch_exists(self, branch: str) -> bool:
        """Whether the remote had ``branch`` when we cloned (the clone fetched every branch
        tip, so this costs no round trip; a branch made since shows up as a push rejection)."""
        return branch in self._listed_refs().remote

    def _free(self, branch: str) -> None:
        """Detach the clone's own HEAD if it is on ``branch``, so a worktree may check the
        branch out (git refuses a branch checked out elsewhere). Only then: a fresh clone's
        HEAD is on the default branch, and most promotions never check that one out."""
        refs = self._listed_refs()
        if refs.attached == branch:
            self._git("update-ref", "--no-deref", "HEAD", refs.remote[branch])
            refs.attached = None  # only HEAD moved: the rest of the listing holds

    def default_branch(self) -> str:
        """The branch the remote's HEAD names (what a checkout without a ref gets)."""
        if self.complete:
            # A mirror's HEAD is the remote's as it was when the mirror was made: ask anew.
            listing = self._git("ls-remote", "--symref", "origin", "HEAD")
            for line in listing.splitlines():
                if line.startswith("ref: refs/heads/"):
                    return line.split()[1].removeprefix("refs/heads/")
            raise ConfigError(f"{self.repo_url} has no default branch (is it empty?)")
        default = self._listed_refs().default
        if default is not None:
            return default
        try:
            ref = self._git("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", check=False)
        except git.GitCommandError:
            ref = ""
        if not ref.startswith("refs/remotes/origin/"):
            raise ConfigError(f"{self.repo_url} has no default branch (is it empty?)")
        return ref.removeprefix("refs/remotes/origin/")

    def add_worktree(
        self,
        target: Path,
        *,
        branch: str | None = None,
        tag: str | None = None,
        commit: str | None = None,
        create: bool = False,
        sparse: list[str] | None = None,
    ) -> Worktree:
        """Check out a branch, tag or commit at ``target`` (``create`` makes a missing branch;
        none of them: the default branch), only the ``sparse`` directories if given."""
        if target.exists() and any(target.iterdir()):
            raise ConfigError(f'checkout path "{target.name}" is not empty')
        patterns = sparse_patterns(sparse) if sparse else ()
        # A sparse checkout is added without files, then fills in only its directories
        # (so a blobless clone fetches no other file's contents).
        no_checkout = ("--no-checkout",) if patterns else ()
        if branch is None and tag is None and commit is None:
            branch = self.default_branch()
        if branch is not None:
            start = self._listed_refs().remote.get(branch)
            if start is not None:
                self._free(branch)
                self._git(
                    "worktree",
                    "add",
                    *no_checkout,
                    "-B",
                    branch,
                    "--end-of-options",
                    str(target),
                    f"refs/remotes/origin/{branch}",  # the listed commit, whatever tags say
                )
                return Worktree(self, target, branch, head=start)._sparse(patterns)
            if not create:
                raise ConfigError(
                    f'remote branch "{branch}" of repo {self.repo_url} does not exist; set '
                    "create: true to create it at checkout"
                )
            # An orphan branch with an empty tree. git 2.39 has no `worktree add --orphan`,
            # and `worktree add` needs a commit: not HEAD, which may name no commit (an empty
            # repository, or a HEAD naming a branch nobody pushed), but a throwaway commit
            # of the empty tree that the orphan branch leaves behind (it is never pushed).
            empty_tree = self._git("hash-object", "-t", "tree", "-w", os.devnull)
            empty = self._git("commit-tree", "--no-gpg-sign", "-m", "empty", empty_tree)
            self._git("worktree", "add", "--detach", "--end-of-options", str(target), empty)
            worktree = Worktree(self, target, branch, head=None)  # no commit yet
            worktree._git("checkout", "--quiet", "--orphan", branch)  # moves no ref but HEAD
            return worktree._sparse(patterns, populate=False)
        # A name from a project's configuration is never read as an option: a commit of
        # "--upload-pack=<command>" would run the command (git parses options after
        # arguments), so commits must be IDs, and --end-of-options precedes every name.
        # A complete clone (from a mirror fetched just now) has every tag and every
        # branch's commits: it fetches only what it lacks, and not shallowly.
        depth = () if self.complete else ("--depth", "1")
        if tag is not None:
            checkout = f"refs/tags/{tag}"
            if not (self.complete and self.rev_parse(f"{checkout}^{{commit}}")):
                refspec = f"{checkout}:{checkout}"
                # A tag or a commit ID matches no fetch refspec of origin's: no
                # remote-tracking branch moves, the listed refs hold.
                self._git("fetch", *depth, "--end-of-options", "origin", refspec)
        else:
            assert commit is not None
            if not _COMMIT_ID.match(commit):
                raise ConfigError(
                    f'commit "{commit}" is not a full commit ID '
                    "(40 hexadecimal digits, 64 with SHA-256)"
                )
            checkout = commit
            # A remote branch's tip (a Freight's commit often is one) is in every clone,
            # a shallow one too: no fetch, and no rev-parse to find that out.
            tip = commit.lower() in self._listed_refs().remote.values()
            if not (tip or (self.complete and self.rev_parse(f"{commit}^{{commit}}"))):
                self._git("fetch", *depth, "--end-of-options", "origin", commit)
                checkout = "FETCH_HEAD"
        self._git(
            "worktree", "add", *no_checkout, "--detach", "--end-of-options", str(target), checkout
        )
        # A commit's ID is what HEAD now names (git writes IDs in lower case); a tag's
        # commit is asked of git when someone needs it.
        head = commit.lower() if commit is not None else _UNKNOWN
        return Worktree(self, target, None, head=head)._sparse(patterns)


_GLOB = re.compile(r"[*?\[]")


def sparse_patterns(patterns: list[str]) -> tuple[str, ...]:
    """Kargo's rules for a sparse checkout's directories: relative, inside the repository,
    no globs (cone mode takes directories). A leading ``-`` is refused too: git would read
    it as an option."""
    for pattern in patterns:
        if Path(pattern).is_absolute():
            raise ConfigError(f"sparse checkout pattern must be relative: {pattern}")
        if pattern.startswith(".."):
            raise ConfigError(f"sparse checkout pattern cannot escape repository: {pattern}")
        if _GLOB.search(pattern):
            raise ConfigError(
                f"sparse checkout pattern cannot contain glob characters (*, ?, [): {pattern}; "
                "use directory paths like 'src/app' instead"
            )
        if pattern.startswith("-"):
            raise ConfigError(f"sparse checkout pattern cannot start with '-': {pattern}")
    return tuple(patterns)


class Worktree:
    """A checked-out working tree: commit to it, push it.

    Its HEAD is remembered between git commands that cannot move it (a push that needed
    no rebase, a tag), so that every step asking for the head does not cost a
    ``rev-parse``: :meth:`run` (any command, from any step) forgets it.
    """

    def __init__(
        self,
        clone: Clone,
        path: Path,
        branch: str | None,
        *,
        head: str | _Unknown | None = _UNKNOWN,
    ) -> None:
        self.clone = clone
        self.path = path
        self.branch = branch
        self._git = GitRunner(path, clone.env, clone.secrets)
        self._head = head

    def run(self, *args: str, check: bool = True) -> str:
        """Run git in the worktree. It may move HEAD or the clone's refs (a commit, a
        rebase, a fetch, a reset): what the worktree and its clone remember is forgotten."""
        self._head = _UNKNOWN
        self.clone.forget_refs()
        return self._git(*args, check=check)

    def _sparse(self, patterns: tuple[str, ...], *, populate: bool = True) -> Worktree:
        """Limit the checkout to ``patterns`` (cone mode), then fill in those files."""
        if patterns:
            # A sparse index holds one entry per directory left out, not one per file: in
            # a 20,000-file monorepo every later add, diff and commit reads 60 KB, not 2 MB.
            # (Neither command moves HEAD.)
            self._git("sparse-checkout", "set", "--cone", "--sparse-index", *patterns)
            if populate:
                self._git("read-tree", "-mu", "HEAD")
        return self

    def update_submodules(self) -> None:
        """``git submodule update --init --recursive``: the submodules' URLs are fetched under
        the same ``GIT_ALLOW_PROTOCOL`` and credentials as the repository itself."""
        self._git("submodule", "update", "--init", "--recursive")  # the submodules' HEADs only

    def current_branch(self) -> str:
        """The branch checked out here, or "" when HEAD is detached."""
        return self._git("branch", "--show-current")

    def head(self) -> str | None:
        """HEAD's commit, or None on a branch without commits."""
        if isinstance(self._head, _Unknown):
            try:
                self._head = self._git("rev-parse", "--verify", "--quiet", "HEAD", check=False)
            except git.GitCommandError:
                self._head = None
        return self._head

    def commit(self, message: str, author_name: str, author_email: str) -> str | None:
        """Commit everything in the tree; with nothing to commit, return the current head."""
        self._git("add", "--all", ".")
        identity = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        committer = GitRunner(self.path, {**self.clone.env, **identity}, self.clone.secrets)
        try:
            # Commit straight away: a promotion almost always has changes, and git finds out
            # whether there are any as it commits (no `diff --cached` first).
            committer("commit", "--quiet", "--no-verify", "-m", message, check=False)
        except git.GitCommandError as err:
            try:
                self._git("diff", "--cached", "--quiet", check=False)
            except git.GitCommandError:
                # Changes were staged, so the commit itself failed (signing, say).
                raise GitCommandError(self._git._scrub(f"git commit: {_stderr_of(err)}")) from None
            # Nothing staged: the tree already is what we would commit (on a new, empty
            # branch: nothing at all, and no head).
            return self.head()
        self._head = _UNKNOWN
        return self.head()

    def push(
        self, target_branch: str, *, max_attempts: int = MAX_PUSH_ATTEMPTS, force: bool = False
    ) -> str:
        """Push HEAD to ``target_branch``; on rejection fetch, rebase and try again.

        Pushing what the remote already has is a no-op (git answers "up to
        date"), so a retried promotion converges on the commit it pushed the
        first time. No ``ls-remote`` first: against a real remote every git
        call is a network round trip. ``force`` replaces the branch's history
        with ours, once, without integrating anything (Kargo's ``force``).
        """
        head = self.head()
        if head is None:
            raise ConfigError("nothing to push: the branch has no commits")
        # A push moves no HEAD (the remembered head holds) but does move the clone's
        # remote-tracking branch of the target.
        self.clone.forget_refs()
        if force:
            self._git(
                "push", "--porcelain", "--force", "origin", f"HEAD:refs/heads/{target_branch}"
            )
            return head
        for attempt in range(max_attempts):
            try:
                self._git(
                    "push", "--porcelain", "origin", f"HEAD:refs/heads/{target_branch}", check=False
                )
                head = self.head()  # a rebase (through run) made git tell it anew
                assert head is not None
                return head
            except git.GitCommandError as err:
                if not _is_rejection(err):
                    raise GitCommandError(
                        self._git._scrub(f"git push: {_stderr_of(err)}")
                    ) from None
            backoff = min(PUSH_BACKOFF_CAP, PUSH_BACKOFF_BASE * 2**attempt)
            time.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter, not a secret
            self._rebase_onto(target_branch)
        raise StepError(
            f'git push to "{target_branch}" was rejected {max_attempts} times: '
            "the branch keeps moving; try again later"
        )

    def push_tag(self, tag: str) -> None:
        """Push one tag, once (Kargo neither rebases nor retries a tag push).

        A tag the remote already has at the same commit counts as pushed, so a retried
        promotion converges; at another commit it is a GitCommandError (tags do not move).
        """
        ref = f"refs/tags/{tag}"
        local = self.clone.rev_parse(f"{ref}^{{commit}}")
        if local is None:
            raise ConfigError(f'tag "{tag}" does not exist in the checkout; create it first')
        try:
            # A tag's push moves neither HEAD nor a remote-tracking branch.
            self._git("push", "--porcelain", "origin", f"{ref}:{ref}", check=False)
        except git.GitCommandError as err:
            remote = self._git("ls-remote", "--end-of-options", "origin", f"{ref}^{{}}", ref)
            commits = [line.split()[0] for line in remote.splitlines() if line.strip()]
            # ls-remote lists the tag object, then (for an annotated tag) its commit.
            if not commits or commits[-1] != local:
                raise GitCommandError(self._git._scrub(f"git push: {_stderr_of(err)}")) from None

    def _rebase_onto(self, branch: str) -> None:
        if self.run("rev-parse", "--is-shallow-repository") == "true":
            self.run("fetch", "--unshallow", "--end-of-options", "origin", branch)
        else:
            self.run("fetch", "--end-of-options", "origin", branch)
        try:
            self.run("rebase", "FETCH_HEAD", check=False)
        except git.GitCommandError:
            if self._rebasing():
                self.run("rebase", "--abort")
            raise StepError(
                f'git push: "{branch}" moved and our commit conflicts with the new commits; '
                "nothing was pushed"
            ) from None

    def _rebasing(self) -> bool:
        git_dir = Path(self.run("rev-parse", "--git-dir"))
        if not git_dir.is_absolute():
            git_dir = self.path / git_dir
        return (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists()


def _is_rejection(err: git.GitCommandError) -> bool:
    text = f"{err.stderr} {err.stdout}"
    return any(
        marker in text
        for marker in (
            "[rejected]",
            "non-fast-forward",
            "fetch first",
            "failed to update ref",
            "cannot lock ref",
            "stale info",
        )
    )


def commit_author(
    config: Mapping[str, Any] | None, default: tuple[str, str] = DEFAULT_AUTHOR
) -> tuple[str, str]:
    """The commit author: the step's ``author`` config, else ``default`` (the worker's settings)."""
    author = dict((config or {}).get("author") or {})
    return str(author.get("name") or default[0]), str(author.get("email") or default[1])
