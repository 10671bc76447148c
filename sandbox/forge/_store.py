"""The forge's state: bare git repositories on disk and the pull requests between their branches.

Merging is real git in the bare repository (``git merge-tree --write-tree`` then
``commit-tree`` and a compare-and-swap ``update-ref``), so a merge commit, a squash commit
and a rebase produce the history the forges produce, and a conflict is git's conflict.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sandbox.gitops import KARGO_DEMO

__all__ = [
    "AlreadyExists",
    "ForgeStore",
    "GitFailure",
    "HeadMismatch",
    "NeedsApproval",
    "NotMergeable",
    "PullRequest",
    "UnknownBranch",
]

_GIT_TIMEOUT = 60.0


class GitFailure(Exception):
    """A git command failed (git's words)."""


class AlreadyExists(Exception):
    """An open pull request already goes from this source to this target."""

    def __init__(self, existing: PullRequest) -> None:
        super().__init__(f"pull request #{existing.number} already exists")
        self.existing = existing


class UnknownBranch(Exception):
    """A branch the request names is not in the repository."""

    def __init__(self, branch: str, field: str) -> None:
        super().__init__(f"branch {branch!r} does not exist")
        self.branch = branch
        self.field = field


class NotMergeable(Exception):
    """The pull request cannot be merged: it is not open, or it conflicts with its target."""


class HeadMismatch(Exception):
    """The caller's expected head commit is not the source branch's head."""


class NeedsApproval(Exception):
    """The target branch requires approvals the pull request does not have yet."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class PullRequest:
    """One pull (merge) request, as the forge keeps it."""

    number: int
    id: int
    project: str
    source: str
    target: str
    title: str
    body: str
    author: str
    labels: list[str]
    head_sha: str
    base_sha: str
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    state: str = "open"  # open | closed | merged
    merge_commit: str | None = None
    merged_by: str | None = None
    merged_at: datetime | None = None
    closed_by: str | None = None
    closed_at: datetime | None = None
    method: str | None = None
    approved_by: list[str] = field(default_factory=list)


def _env(user: str) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": user,
        "GIT_AUTHOR_EMAIL": f"{user}@forge.localhost",
        "GIT_COMMITTER_NAME": user,
        "GIT_COMMITTER_EMAIL": f"{user}@forge.localhost",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }


def git(cwd: Path, *args: str, user: str = "Forge", env: dict[str, str] | None = None) -> str:
    """Run git in ``cwd`` as ``user`` (author and committer of what it writes); stdout."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**_env(user), **(env or {})},
        timeout=_GIT_TIMEOUT,
    )
    if done.returncode != 0:
        raise GitFailure(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def _succeeds(cwd: Path, *args: str, user: str = "Forge") -> tuple[bool, str]:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=_env(user),
        timeout=_GIT_TIMEOUT,
    )
    return done.returncode == 0, done.stdout.strip()


class ForgeStore:
    """Repositories (``owner/name`` → bare repo) and their pull requests; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, Path] = {}
        self.pulls: dict[str, list[PullRequest]] = {}
        self.required_approvals: dict[tuple[str, str], int] = {}
        """(project, target branch) → approvals a merge through the API needs."""
        self.lock = threading.RLock()
        self._next_id = 1000

    # --- repositories ---------------------------------------------------------

    def add_repo(
        self, project: str, *, seed: Path | None = KARGO_DEMO, branch: str = "main"
    ) -> Path:
        """A bare repository for ``project`` (``owner/name``), ``branch`` seeded from ``seed``."""
        path = self.root / f"{project}.git"
        path.parent.mkdir(parents=True, exist_ok=True)
        git(path.parent, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(path))
        # Pushes over the emulator's smart HTTP land here, as they would on a forge.
        git(path, "config", "http.receivepack", "true")
        if seed is not None:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / "work"
                shutil.copytree(seed, work)
                git(work, "init", "--quiet", f"--initial-branch={branch}")
                git(work, "add", "--all")
                git(work, "commit", "--quiet", "-m", "Initial commit")
                git(work, "push", "--quiet", str(path), f"HEAD:refs/heads/{branch}")
        with self.lock:
            self.repos[project] = path
            self.pulls.setdefault(project, [])
        return path

    def branch_head(self, project: str, branch: str) -> str | None:
        ok, out = _succeeds(
            self.repos[project],
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/heads/{branch}^{{commit}}",
        )
        return out or None if ok else None

    # --- pull requests --------------------------------------------------------

    def open(
        self,
        project: str,
        *,
        source: str,
        target: str,
        title: str,
        body: str,
        author: str,
        labels: list[str] | None = None,
    ) -> PullRequest:
        """Open a pull request; :class:`AlreadyExists` if one is open for source → target."""
        with self.lock:
            base = self.branch_head(project, target)
            if base is None:
                raise UnknownBranch(target, "base")
            head = self.branch_head(project, source)
            if head is None:
                raise UnknownBranch(source, "head")
            for existing in self.pulls[project]:
                if existing.state == "open" and (existing.source, existing.target) == (
                    source,
                    target,
                ):
                    raise AlreadyExists(existing)
            if _succeeds(self.repos[project], "merge-base", "--is-ancestor", head, base)[0]:
                raise NotMergeable(f"No commits between {target} and {source}")
            self._next_id += 1
            pull = PullRequest(
                number=len(self.pulls[project]) + 1,
                id=self._next_id,
                project=project,
                source=source,
                target=target,
                title=title,
                body=body,
                author=author,
                labels=list(labels or []),
                head_sha=head,
                base_sha=base,
            )
            self.pulls[project].append(pull)
            return pull

    def get(self, project: str, number: int) -> PullRequest | None:
        with self.lock:
            for pull in self.pulls.get(project, []):
                if pull.number == number:
                    self.refresh(pull)
                    return pull
            return None

    def find(
        self,
        project: str,
        *,
        source: str | None = None,
        target: str | None = None,
        state: str = "all",
    ) -> list[PullRequest]:
        """Pull requests by branches and state: ``open``, ``closed`` (closed or merged),
        ``merged``, ``all``; newest first, as the forges list them."""
        with self.lock:
            found = []
            for pull in reversed(self.pulls.get(project, [])):
                if source is not None and pull.source != source:
                    continue
                if target is not None and pull.target != target:
                    continue
                if state == "open" and pull.state != "open":
                    continue
                if state == "closed" and pull.state == "open":
                    continue
                if state == "merged" and pull.state != "merged":
                    continue
                self.refresh(pull)
                found.append(pull)
            return found

    def refresh(self, pull: PullRequest) -> None:
        """An open pull request follows its branches (a push to the source moves its head)."""
        if pull.state != "open":
            return
        head = self.branch_head(pull.project, pull.source)
        base = self.branch_head(pull.project, pull.target)
        if head is not None and head != pull.head_sha:
            pull.head_sha = head
            pull.updated_at = _now()
        if base is not None:
            pull.base_sha = base

    def mergeable(self, pull: PullRequest) -> bool:
        """Whether the source merges into the target without conflicts (git's verdict)."""
        if pull.state != "open":
            return False
        repo = self.repos[pull.project]
        return _succeeds(repo, "merge-tree", "--write-tree", pull.base_sha, pull.head_sha)[0]

    def approved(self, pull: PullRequest) -> bool:
        """Whether the pull request has the approvals its target branch requires."""
        needed = self.required_approvals.get((pull.project, pull.target), 0)
        return len(pull.approved_by) >= needed

    def merge(
        self,
        project: str,
        number: int,
        *,
        method: str,
        user: str,
        sha: str | None = None,
        message: str | None = None,
        check_approvals: bool = True,
    ) -> PullRequest:
        """Merge in git (``merge``, ``squash`` or ``rebase``) and mark the pull request merged.

        :class:`NotMergeable` if it is not open or conflicts; :class:`HeadMismatch` if
        ``sha`` is given and is not the source's head; :class:`NeedsApproval` if the target
        requires approvals it lacks (``check_approvals=False``: an admin's override).
        """
        with self.lock:
            pull = self.get(project, number)
            if pull is None:
                raise KeyError(number)
            if pull.state != "open":
                raise NotMergeable(f"pull request #{number} is {pull.state}")
            if sha is not None and sha != pull.head_sha:
                raise HeadMismatch(sha)
            if check_approvals and not self.approved(pull):
                raise NeedsApproval(pull.number)
            repo = self.repos[project]
            base, head = pull.base_sha, pull.head_sha
            ok, out = _succeeds(repo, "merge-tree", "--write-tree", base, head)
            if not ok:
                raise NotMergeable(f"pull request #{number} conflicts with {pull.target}")
            tree = out.splitlines()[0]
            if method == "merge":
                text = message or f"Merge pull request #{number} from {project}/{pull.source}"
                new = git(repo, "commit-tree", tree, "-p", base, "-p", head, "-m", text, user=user)
            elif method == "squash":
                text = message or f"{pull.title} (#{number})"
                new = git(repo, "commit-tree", tree, "-p", base, "-m", text, user=user)
            elif method == "rebase":
                new = self._rebase(repo, base, head, user)
            else:
                raise ValueError(method)
            git(repo, "update-ref", f"refs/heads/{pull.target}", new, base)
            now = _now()
            pull.state = "merged"
            pull.method = method
            pull.merge_commit = new
            pull.merged_by = pull.closed_by = user
            pull.merged_at = pull.closed_at = pull.updated_at = now
            return pull

    def close(self, project: str, number: int, *, user: str) -> PullRequest:
        """Close without merging (a reviewer said no)."""
        with self.lock:
            pull = self.get(project, number)
            if pull is None:
                raise KeyError(number)
            if pull.state == "open":
                pull.state = "closed"
                pull.closed_by = user
                pull.closed_at = pull.updated_at = _now()
            return pull

    def _rebase(self, repo: Path, base: str, head: str, user: str) -> str:
        """Replay the source's own commits onto the target (``git cherry-pick`` in a
        throw-away worktree of the bare repository), keeping their authors and messages."""
        commits = git(repo, "rev-list", "--reverse", "--no-merges", f"{base}..{head}").split()
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "rebase"
            git(repo, "worktree", "add", "--quiet", "--detach", str(work), base)
            try:
                ok, _ = _succeeds(work, "cherry-pick", *commits, user=user)
                if not ok:
                    raise NotMergeable("the source's commits do not rebase onto the target")
                return git(work, "rev-parse", "HEAD")
            finally:
                git(repo, "worktree", "remove", "--force", str(work))
