"""Reading the real git repositories behind Applications: resolve revisions, export trees.

A ``repoURL`` may be a ``file://`` URL or a local path (used in place), or any URL git can
fetch (mirrored into the emulator's cache directory and fetched on refresh). ``repo_map``
redirects a repoURL as written in the manifests to another location, so an Application can
keep a production-looking URL while the emulator reads a local bare repository.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT = 120.0


class GitError(Exception):
    """A git command failed; the message carries git's own words."""


class RevisionNotFoundError(GitError):
    """A revision does not resolve to a commit."""


def is_commit_sha(revision: str) -> bool:
    return bool(_SHA.match(revision))


def _git(args: list[str], *, cwd: Path | None = None, binary: bool = False) -> bytes:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=_GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()
        raise GitError(f"`git {' '.join(args)}` failed exit status {done.returncode}: {detail}")
    return done.stdout


class GitRepository:
    """One repository, read at commits."""

    def __init__(self, repo_url: str, location: str, cache_dir: Path) -> None:
        self.repo_url = repo_url
        self._lock = threading.Lock()
        local = _local_path(location)
        self._remote: str | None = None if local is not None else location
        if local is not None:
            self.path = local
        else:
            digest = hashlib.sha256(location.encode()).hexdigest()[:16]
            self.path = cache_dir / f"mirror-{digest}.git"

    def update(self) -> None:
        """Fetch a mirrored remote (a local repository is always current)."""
        if self._remote is None:
            return
        with self._lock:
            if not self.path.exists():
                _git(["clone", "--mirror", "--quiet", self._remote, str(self.path)])
            else:
                _git(["fetch", "--prune", "--quiet", "origin", "+refs/*:refs/*"], cwd=self.path)

    def _ensure(self) -> None:
        if self._remote is not None and not self.path.exists():
            self.update()
        if not self.path.exists():
            raise GitError(f"repository not found: {self.repo_url} ({self.path} does not exist)")

    def resolve(self, revision: str) -> str:
        """Resolve a branch, tag, HEAD or short SHA to a commit, as Argo CD's ls-remote does."""
        revision = revision or "HEAD"
        if is_commit_sha(revision):
            return revision  # Argo CD takes full SHAs as they are, without looking
        self._ensure()
        candidates = [revision]
        if not revision.startswith("refs/") and revision != "HEAD":
            candidates = [f"refs/heads/{revision}", f"refs/tags/{revision}", revision]
        for candidate in candidates:
            try:
                out = _git(
                    ["rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd=self.path
                )
            except GitError:
                continue
            sha = out.decode().strip()
            if is_commit_sha(sha):
                return sha
        raise RevisionNotFoundError(
            f"unable to resolve '{revision}' to a commit SHA: revision not found"
        )

    def export(self, sha: str, dest: Path) -> None:
        """Write the tree of a commit into ``dest``."""
        self._ensure()
        data = _git(["archive", "--format=tar", sha], cwd=self.path)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(dest, filter="data")


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
    if "://" in location or re.match(r"^[\w.-]+@[\w.-]+:", location):
        return None
    return Path(location).expanduser().resolve()


class Repositories:
    """The repositories the emulator reads, keyed by repoURL as written in the manifests."""

    def __init__(self, cache_dir: Path, repo_map: Mapping[str, str] | None = None) -> None:
        self._cache_dir = cache_dir
        self._map = {_normal(k): v for k, v in (repo_map or {}).items()}
        self._repos: dict[str, GitRepository] = {}
        self._lock = threading.Lock()

    def get(self, repo_url: str) -> GitRepository:
        key = _normal(repo_url)
        with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                repo = GitRepository(repo_url, self._map.get(key, repo_url), self._cache_dir)
                self._repos[key] = repo
            return repo


def _normal(url: str) -> str:
    # Argo CD treats https://host/org/repo, .../repo.git and .../repo/ as the same repository.
    url = url.strip().rstrip("/")
    return (
        url[:-4] if url.endswith(".git") and "://" in url and not url.startswith("file://") else url
    )
