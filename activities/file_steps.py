"""The file steps, as Kargo's: copy, delete, file-write.

They work on the plain files of the work tree, so every path goes through the
workspace, which refuses an absolute path and one that leaves the work tree,
symlinks included. Where Kargo resolves a path differently the difference is
Kargo's and deliberate: ``delete`` removes a symlink itself (its parent
directory is resolved, not the link), and ``file-write`` refuses a path that
reaches its file through any symlink, even one that stays inside. ``copy``
skips symlinks in what it copies and replaces a symlink where it would write,
so nothing it writes lands outside.

Outcomes follow Kargo's: ``copy`` and ``delete`` end Errored when they cannot
do it; ``file-write`` ends Failed for a path or mode it refuses, or for an
existing file without ``overwrite``.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from pathspec import GitIgnoreSpec
from pydantic import Field, model_validator

from activities.step_context import StepConfig, StepContext
from freightline.errors import ConfigError, PathEscapeError, StepError

# --- copy ------------------------------------------------------------------------------------


class CopyConfig(StepConfig):
    in_path: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    ignore: str | None = Field(default=None, min_length=1)
    """Patterns in .gitignore syntax, one a line, relative to ``inPath`` (a directory) or
    to the directory holding it (a file); ``.git`` is always ignored."""


def copy(ctx: StepContext, config: CopyConfig) -> dict[str, Any]:
    """Copy a file, or the contents of a directory (merged into the destination)."""
    source = ctx.workspace.resolve(config.in_path, field="inPath")
    target = ctx.workspace.resolve(config.out_path, field="outPath")
    if not source.exists():
        raise ConfigError(f'{ctx.describe()}: inPath "{config.in_path}" does not exist')
    lines = [".git", *(config.ignore or "").splitlines()]
    ignored = GitIgnoreSpec.from_lines(
        [line for line in lines if line.strip() and not line.startswith("#")]
    )
    if source.is_dir():
        _copy_tree(ctx, source, target, ignored)
    elif not ignored.match_file(source.name):
        _copy_file(ctx, source, target)
    return {}


def _copy_tree(ctx: StepContext, source: Path, target: Path, ignored: GitIgnoreSpec) -> None:
    # What to copy is listed before anything is written: a destination inside the source
    # is not copied into itself.
    directories, files = [], []
    for parent, names, filenames in os.walk(source):
        base = Path(parent)
        kept = []
        for name in sorted(names):
            relative = (base / name).relative_to(source).as_posix()
            if (base / name).is_symlink():
                continue  # as Kargo: symlinks are not copied
            if not ignored.match_file(relative + "/"):
                kept.append(name)
                directories.append(relative)
        names[:] = kept
        for name in sorted(filenames):
            relative = (base / name).relative_to(source).as_posix()
            if not (base / name).is_symlink() and not ignored.match_file(relative):
                files.append(relative)
    _make_directory(ctx, target, mode=source.stat().st_mode)
    for relative in directories:
        _make_directory(ctx, target / relative, mode=(source / relative).stat().st_mode)
    for relative in files:
        _copy_file(ctx, source / relative, target / relative)


def _copy_file(ctx: StepContext, source: Path, target: Path) -> None:
    _make_directory(ctx, target.parent)
    _no_link_at(ctx, target)
    if target.is_dir():
        raise ConfigError(
            f'{ctx.describe()}: cannot copy a file over directory "{_shown(ctx, target)}"'
        )
    shutil.copyfile(source, target)
    shutil.copymode(source, target)


def _make_directory(ctx: StepContext, path: Path, mode: int = 0o755) -> None:
    _no_link_at(ctx, path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f'{ctx.describe()}: "{_shown(ctx, path)}" is a file, not a directory')
    path.mkdir(parents=True, exist_ok=True, mode=mode & 0o777)


def _no_link_at(ctx: StepContext, path: Path) -> None:
    """Writing through a symlink could leave the work tree: the link goes, the copy replaces
    it. The parent must resolve inside the work tree."""
    ctx.workspace.resolve(_shown(ctx, path.parent), field="outPath")
    if path.is_symlink():
        path.unlink()


def _shown(ctx: StepContext, path: Path) -> str:
    return os.path.relpath(path, ctx.workspace.root)


# --- delete ----------------------------------------------------------------------------------


class DeleteConfig(StepConfig):
    path: str | None = Field(default=None, min_length=1)
    paths: list[str] | None = Field(default=None, min_length=1)
    paths_are_globs: bool = False
    strict: bool = False

    @model_validator(mode="after")
    def _one_of_path_or_paths(self) -> DeleteConfig:
        if (self.path is None) == (self.paths is None):
            raise ValueError("exactly one of path or paths is required")
        if any(not p for p in self.paths or ()):
            raise ValueError("paths: an entry is empty")
        return self


def delete(ctx: StepContext, config: DeleteConfig) -> dict[str, Any]:
    """Delete files and directories (a symlink itself, never what it points to)."""
    paths = [config.path] if config.path is not None else list(config.paths or ())
    found: list[Path] = []
    for path in paths:
        if config.paths_are_globs:
            matches = _glob(ctx, path)
            if not matches and config.strict:
                raise ConfigError(f'{ctx.describe()}: no paths matched pattern "{path}"')
        else:
            match = _existing(ctx, path)
            if match is None and config.strict:
                raise ConfigError(f'{ctx.describe()}: path "{path}" does not exist')
            matches = [match] if match is not None else []
        found += [m for m in matches if m not in found]
    for target in found:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return {}


def _existing(ctx: StepContext, path: str) -> Path | None:
    """The entry ``path`` names (its parent resolved, the entry itself not), or None."""
    normal = os.path.normpath(path)
    if os.path.isabs(normal):
        raise PathEscapeError(f'path: "{path}" is absolute; paths are relative to the work tree')
    if normal in (".", "..") or normal.startswith("../"):
        raise PathEscapeError(f'path: "{path}" leaves the work tree')
    parent = ctx.workspace.resolve(os.path.dirname(normal) or ".")
    target = parent / os.path.basename(normal)
    return target if os.path.lexists(target) else None


def _glob(ctx: StepContext, pattern: str) -> list[Path]:
    # ``**`` spans directories and ``*`` matches dot files, as Go's doublestar does.
    relative = pattern.removeprefix("./")
    if os.path.isabs(relative):
        raise PathEscapeError(f'path: "{pattern}" is absolute; paths are relative to the work tree')
    matches = glob.glob(relative, root_dir=ctx.workspace.root, recursive=True, include_hidden=True)
    found = []
    for match in sorted(matches):
        target = _existing(ctx, match)
        if target is not None:
            found.append(target)
    return found


# --- file-write ------------------------------------------------------------------------------

DEFAULT_PERMISSIONS = 0o600


class FileWriteConfig(StepConfig):
    path: str = Field(min_length=1)
    contents: str
    permissions: str | None = Field(default=None, pattern=r"^0[0-7]{3}$")
    overwrite: bool = False


def file_write(ctx: StepContext, config: FileWriteConfig) -> dict[str, Any]:
    """Write ``contents`` to a file of the work tree (a new one unless ``overwrite``)."""
    where = ctx.describe()
    normal = os.path.normpath(config.path)
    if os.path.isabs(config.path):
        raise StepError(f'{where}: path "{config.path}" must be relative')
    if normal == ".." or normal.startswith("../"):
        raise StepError(
            f'{where}: path "{config.path}" attempts to traverse outside the working directory'
        )
    if ".git" in PurePosixPath(normal).parts:
        raise StepError(f'{where}: writing to the .git directory is forbidden: "{config.path}"')
    mode = _permissions(where, config.permissions)
    try:
        target = ctx.workspace.resolve(config.path)
    except PathEscapeError as err:
        raise StepError(f"{where}: {err}") from None
    resolved = _shown(ctx, target)
    if resolved != normal:
        raise StepError(
            f'{where}: path "{config.path}" resolves to a different path "{resolved}" '
            "(symlinks are forbidden)"
        )
    if target.exists() and not config.overwrite:
        raise StepError(
            f'{where}: file "{config.path}" already exists; set overwrite to true to replace it'
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.write_text(config.contents)
        target.chmod(mode)
    except OSError as err:
        raise ConfigError(f'{where}: writing "{config.path}": {err.strerror}') from None
    return {}


def _permissions(where: str, permissions: str | None) -> int:
    if permissions is None:
        return DEFAULT_PERMISSIONS
    mode = int(permissions, 8)
    if mode & 0o111:
        raise StepError(f'{where}: permissions "{permissions}" must not include executable bits')
    if mode & 0o002:
        raise StepError(f'{where}: permissions "{permissions}" must not be world-writable')
    return mode
