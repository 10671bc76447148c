"""The archive steps, as Kargo's: tar and untar.

``untar`` extracts a tar file, gzipped or not (told apart by gzip's magic
bytes, as Kargo does), into ``outPath``, which it replaces whole: the archive
is extracted into a temporary directory of the work tree first, so a failure
leaves ``outPath`` as it was. What it extracts, as Kargo's code does: regular
files, directories and symlinks (hard links, devices and the like are skipped);
``stripComponents`` leading path parts removed, a member with no more parts than
that skipped. A member that could land outside ``outPath`` is skipped, never
written: an absolute name, one with ``../`` or a leading ``./`` or a backslash
(Kargo's rule, so an archive made with ``tar -C dir .`` needs
``stripComponents: 1``), and besides anything Python's ``tarfile`` *data*
filter refuses, which resolves each path on disk as it extracts, so a symlink
extracted earlier cannot carry a later member out; a symlink whose target is
absolute or leaves ``outPath`` is skipped too. The data filter also drops
owners and set-id bits. ``ignore`` takes .gitignore patterns, matched against
each member's path after stripping (Kargo's docs promise this; Kargo v1.11's
code matches only a single pattern equal to a file's name). A ``.git`` path part
is always skipped: an archive must not replace a checkout's git metadata.

Limits, Kargo's: a file of the archive may hold at most 50 MiB and all of them
together 100 MiB (counted from the archive's headers, which are what is
written); past either the step ends Errored and writes nothing. Beyond Kargo,
at most 100,000 entries (an archive of empty files costs inodes, not bytes).

``tar`` archives a file or a directory (its contents, not the directory
itself) into ``outPath``, gzipped when ``gzip`` is true, written to a temporary
file beside it and moved into place. Symlinks are archived as symlinks, never
followed, so nothing outside the work tree is read. ``ignore`` takes .gitignore
patterns relative to ``inPath``; ``.git`` is always left out (Kargo leaves it out
only without ``ignore``). The same 50 MiB / 100 MiB limits apply to what it
reads. Kargo's v1.11.0 has no ``tar`` (it came after, with these fields);
unlike Kargo's, the archive is reproducible: entries in name order, times and
owners zeroed, modes 0644 or 0755 (git's own two), so the same files give the
same bytes and a retried promotion commits nothing new.

Every failure of either step ends it Errored, as in Kargo.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pathspec import GitIgnoreSpec
from pydantic import Field

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError
from freightline.logging import get_logger

MAX_FILE_SIZE = 50 * 1024 * 1024
"""The most one file of an archive may hold (Kargo's limit)."""
MAX_TOTAL_SIZE = 100 * 1024 * 1024
"""The most all the files of an archive may hold together (Kargo's limit)."""
MAX_ENTRIES = 100_000
"""The most entries an archive may have (Freightline's limit)."""

_GZIP_MAGIC = b"\x1f\x8b"


def _ignore_spec(patterns: str | None) -> GitIgnoreSpec:
    lines = [line.strip() for line in (patterns or "").splitlines()]
    return GitIgnoreSpec.from_lines([line for line in lines if line and not line.startswith("#")])


def _ignored(spec: GitIgnoreSpec, name: str, *, directory: bool) -> bool:
    """Whether ``ignore`` leaves ``name`` out; a ``.git`` part always does."""
    return ".git" in name.split("/") or spec.match_file(name + "/" if directory else name)


class _Budget:
    """Counts what an archive holds against the limits."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.total = 0
        self.entries = 0

    def count(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise ConfigError(f"{self.where}: the archive has more than {MAX_ENTRIES} entries")

    def take(self, name: str, size: int) -> None:
        if size > MAX_FILE_SIZE:
            raise ConfigError(
                f'{self.where}: file "{name}" exceeds the size limit of {MAX_FILE_SIZE} bytes'
            )
        self.total += size
        if self.total > MAX_TOTAL_SIZE:
            raise ConfigError(
                f"{self.where}: the total size would exceed the limit of {MAX_TOTAL_SIZE} bytes"
            )


# --- untar -----------------------------------------------------------------------------------


class UntarConfig(StepConfig):
    in_path: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    strip_components: int | None = Field(default=None, ge=0)
    ignore: str | None = Field(default=None, min_length=1)


def untar(ctx: StepContext, config: UntarConfig) -> dict[str, Any]:
    """Extract a tar (or gzipped tar) file into ``outPath``, replacing what was there."""
    where = ctx.describe()
    source = ctx.workspace.resolve(config.in_path, field="inPath")
    target = ctx.workspace.resolve(config.out_path, field="outPath", writing=True)
    if not source.is_file():
        raise ConfigError(f'{where}: failed to open tar file "{config.in_path}": not a file')
    if target == ctx.workspace.root:
        raise ConfigError(f'{where}: outPath "{config.out_path}" would replace the whole work tree')
    staging = Path(tempfile.mkdtemp(prefix=".untar-", dir=ctx.workspace.root))
    try:
        _extract(where, source, staging, config)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {}


def _extract(where: str, source: Path, staging: Path, config: UntarConfig) -> None:
    with source.open("rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
    member_filter = _member_filter(where, config)
    try:
        with tarfile.open(source, "r:gz" if gzipped else "r:") as archive:
            # Each member passes member_filter, which ends in tarfile's data filter.
            archive.extractall(staging, filter=member_filter)  # noqa: S202
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:  # OSError: BadGzipFile,
        # or a member the archive's earlier members block (a file where a directory goes)
        raise ConfigError(
            f'{where}: failed to extract tar file "{config.in_path}": error reading tar: {err}'
        ) from None


def _member_filter(
    where: str, config: UntarConfig
) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    log = get_logger(__name__)
    ignored = _ignore_spec(config.ignore)
    strip = config.strip_components or 0
    budget = _Budget(where)

    def skip(member: tarfile.TarInfo, reason: str) -> None:
        log.warning("untar skipped an archive member", member=member.name, reason=reason)

    def member_filter(member: tarfile.TarInfo, staging: str) -> tarfile.TarInfo | None:
        # Every member counts, skipped ones too: tarfile keeps each header it reads in memory.
        budget.count()
        if not (member.isreg() or member.isdir() or member.issym()):
            return None  # as Kargo: only files, directories and symlinks
        name = member.name
        if strip:
            parts = name.split("/")
            if len(parts) <= strip:
                return None
            name = "/".join(parts[strip:])
        if not name or name == "/":
            return None
        if not _kargo_safe(name):
            skip(member, "its path could leave outPath")
            return None
        if _ignored(ignored, name, directory=member.isdir()):
            return None
        if member.issym() and not _kargo_safe(member.linkname):
            skip(member, "its link target could leave outPath")
            return None
        if member.isreg():
            budget.take(name, member.size)
        try:
            return tarfile.data_filter(member.replace(name=name, deep=False), staging)
        except tarfile.FilterError as err:
            skip(member, str(err))
            return None

    return member_filter


def _kargo_safe(path: str) -> bool:
    """Kargo's test of a member's path (and a symlink's target) before it extracts it."""
    return bool(path) and not (
        "\\" in path or path.startswith(("/", "./")) or "../" in path or path == ".."
    )


# --- tar -------------------------------------------------------------------------------------


class TarConfig(StepConfig):
    in_path: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    ignore: str | None = Field(default=None, min_length=1)
    gzip: bool = False


def tar(ctx: StepContext, config: TarConfig) -> dict[str, Any]:
    """Archive a file, or a directory's contents, into a tar (or gzipped tar) file."""
    where = ctx.describe()
    source = ctx.workspace.resolve(config.in_path, field="inPath")
    target = ctx.workspace.resolve(config.out_path, field="outPath", writing=True)
    if not source.exists():
        raise ConfigError(f'{where}: input path "{config.in_path}" does not exist')
    if target.is_dir():
        raise ConfigError(f'{where}: outPath "{config.out_path}" is a directory')
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    entries = _entries(where, source, _ignore_spec(config.ignore), skip=target)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            _write_archive(out, entries, gzipped=config.gzip)
        os.replace(temporary, target)
    except OSError as err:
        raise ConfigError(
            f'{where}: failed to create the tar archive "{config.out_path}": {err}'
        ) from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return {}


def _entries(
    where: str, source: Path, ignored: GitIgnoreSpec, *, skip: Path
) -> list[tuple[str, Path]]:
    """(name in the archive, path on disk) of everything to archive, in name order."""
    if not source.is_dir():
        _Budget(where).take(source.name, source.stat().st_size)
        return [(source.name, source)]
    budget = _Budget(where)
    entries = []
    for parent, directories, files in os.walk(source):
        base = Path(parent)
        directories.sort()
        kept = []
        for name in directories:
            path = base / name
            relative = path.relative_to(source).as_posix()
            if _ignored(ignored, relative, directory=not path.is_symlink()):
                continue
            budget.count()
            entries.append((relative, path))
            if not path.is_symlink():  # os.walk does not descend into one: archived as a link
                kept.append(name)
        directories[:] = kept
        for name in sorted(files):
            path = base / name
            relative = path.relative_to(source).as_posix()
            if (
                path == skip
                or name.startswith(f".{skip.name}.tmp")
                or _ignored(ignored, relative, directory=False)
            ):
                continue
            info = path.lstat()
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                continue  # sockets, fifos, devices: nothing a manifest holds
            budget.count()
            if stat.S_ISREG(info.st_mode):
                budget.take(relative, info.st_size)
            entries.append((relative, path))
    return sorted(entries)


def _write_archive(out: BinaryIO, entries: list[tuple[str, Path]], *, gzipped: bool) -> None:
    # Times zeroed in the gzip header and in every entry: the same files give the same bytes.
    stream: BinaryIO = (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0)  # type: ignore[assignment]
        if gzipped
        else out
    )
    try:
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name, path in entries:
                info = archive.gettarinfo(str(path), arcname=name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isdir():
                    info.mode = 0o755
                elif info.isreg():
                    info.mode = 0o755 if info.mode & stat.S_IXUSR else 0o644
                if info.isreg():
                    with path.open("rb") as content:
                        archive.addfile(info, content)
                else:
                    archive.addfile(info)
    finally:
        if gzipped:
            stream.close()
