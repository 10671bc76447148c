"""A worker's repository cache: one bare mirror per repository URL, shared by its activities.

Without it every promotion clones its repository afresh, and for a GitOps monorepo the
clone *is* the cost. With it, an activity *leases* the repository's mirror
(:meth:`RepositoryCache.lease`): the mirror fetches what is new (one incremental
fetch, or none when another lease's fetch began after this one asked), and the
activity makes its own clone of it with ``git clone --shared`` (refs copied, objects
borrowed), whose ``origin`` is the real remote (:meth:`activities.git.Clone.from_mirror`).
Commits, rebases and pushes happen in that clone, against the real remote, exactly as
in a fresh clone: the mirror never pushes, and no two activities share refs or a
checked-out branch. (``git worktree add`` straight from the mirror would share the
mirror's refs and branches between concurrent promotions, and push through a remote
that would then have to be configured in the mirror.)

On disk, under the cache's root, for each repository ``<key>`` (a hash of its URL):

- ``<key>.git``: the bare mirror (branches and tags, pruned), with no remote
  configured: the URL is given to each fetch, so neither a URL's user info nor any
  other credential is stored in it. Credentials reach git as for any clone
  (``GIT_ASKPASS``, ``GIT_SSH_COMMAND``: :func:`activities.git.git_environment`).
- ``<key>.lock``: ``flock``-ed *shared* by every lease while it is held (a clone
  borrows the mirror's objects) and *exclusive* to delete, rebuild or repack the
  mirror; its modification time is the mirror's last use (for LRU eviction).
- ``<key>.fetch.lock``: exclusive while fetching into, creating, repacking or
  evicting the mirror (git itself would refuse two concurrent ref updates).
- ``<key>.json``: the URL without user info, the mirror's size, when its last fetch
  began and with which credentials (a keyed hash whose key lives as long as the process).

``flock`` locks are released by the kernel when a process dies, so a worker restarted
after a crash finds its mirrors and reuses them; a git lock file a killed fetch left in
the mirror is removed before the next fetch (every writer of the mirror holds the fetch
lock). The cache's total size is bounded: after a lease's fetch, the least recently
used mirrors that no lease holds are deleted until the total fits (``evict.lock``: one
evictor at a time). A mirror whose fetch fails is checked with
``git fsck --connectivity-only``; a corrupt one is rebuilt when no other lease holds it,
and otherwise the lease yields None and the caller clones directly, as without a cache.

Nothing here is needed for correctness: an activity retried on a worker with an empty
cache makes a new mirror, and a lease that cannot use the cache falls back to a clone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from activities.git import GitRunner
from freightline.errors import GitCommandError
from freightline.kargo.credentials import GitCredentials
from freightline.logging import get_logger

__all__ = ["RepositoryCache"]

# What a mirror holds: branches and tags, force-updated (the remote may rewrite them).
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# The mirror never collects garbage on its own (a clone borrowing its objects could lose
# them); past this many packs, or about as many loose objects as make git's own gc --auto
# act (6,700: it samples one of the 256 fan-out directories), a fetch repacks the mirror
# when no lease holds it.
MAX_PACKS = 32
MAX_LOOSE_IN_SAMPLE = 6700 // 256
# Git lock files a killed git process may leave in a mirror (refs, packed-refs, HEAD, config).
_GIT_LOCKS = ("*.lock", "refs/**/*.lock")
_MIRROR_CONFIG = (
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("core.logAllRefUpdates", "false"),
)

# The branch a mirror's HEAD names, which no remote is expected to have: a clone of the
# mirror then has its own HEAD on no branch, so every branch is free for a worktree and
# the clone needs no `update-ref` to detach its HEAD first. (Nothing reads a mirror's
# HEAD: a checkout without a branch asks the remote for its default branch, which may
# have changed since. Were a remote to have the branch, the clone detaches its HEAD.)
NO_BRANCH = "freightline-mirror-has-no-head"

# Keys credentials' fingerprints in the metadata: not reversible offline, not comparable
# across processes (so a lease only ever skips its fetch for its own process's fetch).
_FINGERPRINT_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class _Entry:
    """One repository's files in the cache."""

    mirror: Path
    use_lock: Path
    fetch_lock: Path
    meta: Path
    staging: Path

    @classmethod
    def of(cls, root: Path, key: str) -> _Entry:
        return cls(
            mirror=root / f"{key}.git",
            use_lock=root / f"{key}.lock",
            fetch_lock=root / f"{key}.fetch.lock",
            meta=root / f"{key}.json",
            staging=root / f"{key}.new",
        )


class RepositoryCache:
    """Bare mirrors under ``root``, at most ``max_bytes`` in total (least recently used go)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def mirror_path(self, url: str) -> Path:
        """Where the mirror of ``url`` (as given to git) lives."""
        return self._entry(url).mirror

    def _entry(self, url: str) -> _Entry:
        return _Entry.of(self.root, hashlib.sha256(url.encode()).hexdigest()[:24])

    @contextlib.contextmanager
    def lease(
        self,
        url: str,
        env: Mapping[str, str],
        credentials: GitCredentials | None = None,
    ) -> Iterator[Path | None]:
        """The mirror of ``url`` (as given to git: :func:`activities.git.remote_url`),
        fetched since this call began; never deleted, rebuilt or repacked until exit.

        ``env`` is the git environment with the credentials (:func:`git_environment`).
        Yields None when the mirror is corrupt and another lease holds it: the caller
        clones directly. Raises GitCommandError when the remote cannot be fetched.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self._entry(url)
        run = GitRunner(self.root, env, (credentials.password,) if credentials else ())
        with _flock(entry.use_lock, fcntl.LOCK_SH) as use:
            os.utime(entry.use_lock)  # last use, for eviction
            asked = time.time()
            with _flock(entry.fetch_lock, fcntl.LOCK_EX):
                usable = self._refresh(entry, url, run, asked, _fingerprint(credentials), use)
            if usable:
                self.evict()
            yield entry.mirror if usable else None

    def _refresh(
        self, entry: _Entry, url: str, run: GitRunner, asked: float, fingerprint: str, use: int
    ) -> bool:
        """Bring the mirror up to date (the fetch lock held); False: corrupt and in use."""
        log = get_logger(__name__)
        meta = _read_json(entry.meta)
        if entry.mirror.is_dir() and meta is not None and not meta.get("corrupt"):
            if meta.get("fetched", 0) >= asked and meta.get("who") == fingerprint:
                return True  # another lease's fetch began after we asked: it serves us too
            mirror = GitRunner(entry.mirror, run.env, run.secrets)
            try:
                for pattern in _GIT_LOCKS:  # a killed fetch's: we hold the only fetch lock
                    for stale in entry.mirror.glob(pattern):
                        stale.unlink(missing_ok=True)
                began = time.time()  # what a later lease compares its asking time with
                _fetch(mirror, url)
            except GitCommandError:
                if _intact(mirror):
                    raise  # the remote's fault (gone, refused us), as a fresh clone's would be
                log.warning("repository cache: corrupt mirror", url=_display(url))
            else:
                _write_meta(entry, url, began, fingerprint)
                _repack_if_idle(entry, mirror, use)
                return True
        elif entry.mirror.exists():
            log.warning("repository cache: unfinished mirror", url=_display(url))
        if entry.mirror.exists():
            # Rebuild only when no other lease borrows the mirror's objects.
            if not _upgrade(use):
                _write_json(entry.meta, {**(meta or {}), "corrupt": True})
                return False
            try:
                shutil.rmtree(entry.mirror)
            finally:
                fcntl.flock(use, fcntl.LOCK_SH)  # the fetch lock keeps evictors out meanwhile
        began = time.time()
        _create(entry, url, run)
        _write_meta(entry, url, began, fingerprint)
        log.info("repository cache: mirror created", url=_display(url))
        return True

    def size(self) -> int:
        """The cache's total size in bytes, as its mirrors last measured themselves."""
        return sum(int(meta.get("size", 0)) for _, meta in self._entries())

    def _entries(self) -> list[tuple[str, dict[str, Any]]]:
        entries = []
        for path in self.root.glob("*.json"):
            meta = _read_json(path)
            if meta is not None:
                entries.append((path.stem, meta))
        return entries

    def evict(self) -> None:
        """Delete the least recently used mirrors no lease holds until the total fits."""
        try:
            with _flock(self.root / "evict.lock", fcntl.LOCK_EX | fcntl.LOCK_NB):
                self._evict()
        except BlockingIOError:
            return  # another lease is at it

    def _evict(self) -> None:
        entries = self._entries()
        total = sum(int(meta.get("size", 0)) for _, meta in entries)

        def last_use(item: tuple[str, dict[str, Any]]) -> float:
            with contextlib.suppress(FileNotFoundError):
                return _Entry.of(self.root, item[0]).use_lock.stat().st_mtime
            return 0.0

        for key, meta in sorted(entries, key=last_use):
            if total <= self.max_bytes:
                return
            if _delete_if_idle(_Entry.of(self.root, key)):
                total -= int(meta.get("size", 0))
                get_logger(__name__).info(
                    "repository cache: mirror evicted", url=meta.get("url"), bytes=meta.get("size")
                )


def _create(entry: _Entry, url: str, run: GitRunner) -> None:
    """Fetch a new bare mirror aside, then move it in place (a crash leaves no half mirror)."""
    shutil.rmtree(entry.staging, ignore_errors=True)  # a crashed creation's leftovers
    run("init", "--quiet", "--bare", f"--initial-branch={NO_BRANCH}", str(entry.staging))
    mirror = GitRunner(entry.staging, run.env, run.secrets)
    for key, value in _MIRROR_CONFIG:
        mirror("config", key, value)
    try:
        _fetch(mirror, url)
    except GitCommandError as err:
        shutil.rmtree(entry.staging, ignore_errors=True)
        raise GitCommandError(str(err).replace("git fetch:", "git clone:", 1)) from None
    entry.staging.rename(entry.mirror)


def _fetch(mirror: GitRunner, url: str) -> None:
    mirror(
        "fetch", "--quiet", "--prune", "--no-write-fetch-head", "--end-of-options", url, *REFSPECS
    )


def _intact(mirror: GitRunner) -> bool:
    """Whether every object the mirror's refs reach is there (git fsck's connectivity)."""
    try:
        mirror("fsck", "--connectivity-only", "--no-progress")
    except GitCommandError:
        return False
    return True


def _repack_if_idle(entry: _Entry, mirror: GitRunner, use: int) -> None:
    objects = entry.mirror / "objects"
    packs = len(list((objects / "pack").glob("*.pack")))
    loose = len(list((objects / "17").glob("*"))) if (objects / "17").is_dir() else 0
    if packs <= MAX_PACKS and loose <= MAX_LOOSE_IN_SAMPLE:
        return
    if not _upgrade(use):
        return  # a lease borrows objects a repack would move: another time
    try:
        mirror("repack", "-a", "-d", "-q")
    finally:
        fcntl.flock(use, fcntl.LOCK_SH)


def _write_meta(entry: _Entry, url: str, fetched: float, who: str) -> None:
    meta = {"url": _display(url), "size": _size(entry.mirror), "fetched": fetched, "who": who}
    _write_json(entry.meta, meta)


def _size(mirror: Path) -> int:
    """The mirror's objects in bytes, packed and loose (without a git process per fetch)."""
    total = 0
    for directory, _, files in os.walk(mirror / "objects"):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(directory, name)).st_size
    return total


def _delete_if_idle(entry: _Entry) -> bool:
    # The lock files stay: deleting one that another process has open would let two
    # holders of "the" lock exist at once, each on its own file.
    try:
        with (
            _flock(entry.use_lock, fcntl.LOCK_EX | fcntl.LOCK_NB),
            _flock(entry.fetch_lock, fcntl.LOCK_EX | fcntl.LOCK_NB),
        ):
            entry.meta.unlink(missing_ok=True)
            shutil.rmtree(entry.mirror, ignore_errors=True)
            return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[int]:
    """``flock`` on ``path`` (created if missing) until exit; BlockingIOError with LOCK_NB."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _upgrade(use: int) -> bool:
    """Turn this lease's shared lock on ``use`` exclusive, if no other lease holds it.

    Linux converts a ``flock`` by dropping the old lock first: a refused conversion leaves
    no lock at all, so the shared one is taken again (at once: whoever blocks it needs the
    fetch lock, which the caller holds, to do anything with the mirror).
    """
    try:
        fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(use, fcntl.LOCK_SH)
        return False
    return True


def _fingerprint(credentials: GitCredentials | None) -> str:
    if credentials is None:
        return "anonymous"
    material = "\0".join(
        (
            credentials.username,
            credentials.password,
            credentials.ssh_private_key or "",
            repr(credentials.github_app),  # which App installation (its repr shows no key)
        )
    )
    return hmac.new(_FINGERPRINT_KEY, material.encode(), hashlib.sha256).hexdigest()


def _display(url: str) -> str:
    """``url`` without user info (an https URL may carry a token there)."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(data))
    staging.replace(path)
