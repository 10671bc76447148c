"""A per-attempt working directory that step paths cannot escape."""

from __future__ import annotations

import os
from pathlib import Path

from freightline.errors import PathEscapeError


class Workspace:
    """The directory one run of a step sequence works in.

    Every user-supplied path goes through ``resolve``, which refuses
    absolute paths and anything that leaves the directory, symlinks
    included.
    """

    def __init__(self, base: Path) -> None:
        base = base.resolve()
        self.root = base / "work"
        """Where step paths point."""
        self.private = base / "repos"
        """Where clones live, out of reach of step paths."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.private.mkdir(parents=True, exist_ok=True)

    def resolve(self, path: str, *, field: str = "path", writing: bool = False) -> Path:
        """The absolute path of ``path`` inside the workspace.

        ``writing``: the step writes there, so a path in git's metadata (a ``.git`` part)
        is refused too; what lands there (a gitdir, a config) would steer, or run
        commands in, the git that later steps run.
        """
        if not isinstance(path, str) or not path.strip():
            raise PathEscapeError(f'{field}: expected a relative path, got "{path}"')
        if os.path.isabs(path):
            raise PathEscapeError(
                f'{field}: "{path}" is absolute; paths are relative to the work tree'
            )
        candidate = (self.root / path).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise PathEscapeError(f'{field}: "{path}" leaves the work tree')
        if writing and ".git" in candidate.relative_to(self.root).parts:
            raise PathEscapeError(f'{field}: "{path}" is in git\'s metadata (.git)')
        return candidate
