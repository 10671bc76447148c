"""Local GitOps repositories: bare repos on disk seeded from a directory (the demo and tests)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
KARGO_DEMO = FIXTURES / "kargo-demo"
KARGO_QUICKSTART = FIXTURES / "kargo-quickstart"

_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sandbox",
    "GIT_AUTHOR_EMAIL": "sandbox@localhost",
    "GIT_COMMITTER_NAME": "Sandbox",
    "GIT_COMMITTER_EMAIL": "sandbox@localhost",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git (test and demo plumbing), returning stdout."""
    import os

    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def create_bare_repo(path: Path, seed: Path = KARGO_DEMO, branch: str = "main") -> Path:
    """A bare repository at ``path`` whose ``branch`` holds a copy of ``seed``."""
    git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(path))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(seed, work)
        git("init", "--quiet", f"--initial-branch={branch}", cwd=work)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", "Initial commit", cwd=work)
        git("push", "--quiet", str(path), f"HEAD:refs/heads/{branch}", cwd=work)
    return path


def branch_head(repo: Path, branch: str) -> str | None:
    """The commit a branch points at in a bare repo, or None."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo) or None
    except RuntimeError:
        return None


def commit_count(repo: Path, branch: str) -> int:
    return int(git("rev-list", "--count", f"refs/heads/{branch}", cwd=repo))


def show_file(repo: Path, branch: str, path: str) -> str:
    return git("show", f"refs/heads/{branch}:{path}", cwd=repo)
