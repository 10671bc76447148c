"""How many git processes a promotion runs, and that running fewer changed nothing.

A promotion's git cost is mostly processes: each costs a few milliseconds of CPU however
small the repository. ``GIT_TRACE`` lists every git process (the remote's own too, for a
local bare repository), so their number is a regression guard; these tests count
processes, never time. The others check what the saving relies on: a head git moved
(a rebase) is asked anew, a commit that fails is not "nothing to commit", a push is
seen by a later checkout, and a mirror made when mirrors' HEADs named a branch works.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.exceptions import ApplicationError

from activities.git import Clone, git_environment
from activities.repository_cache import RepositoryCache
from freightline.contracts.promotion import StepOutcome
from sandbox.gitops import branch_head, create_bare_repo, git, show_file
from tests.pipelines import commit_freight
from tests.test_file_steps import outcome_of, run_steps

T = TypeVar("T")

# The throughput benchmark's git steps (bench/throughput.py), kustomize left out: main to
# ./src, the Stage's branch (the first promotion creates it) to ./out, a change, commit, push.
CLONE = {
    "uses": "git-clone",
    "as": "clone",
    "config": {
        "repoURL": "${{ vars.gitRepo }}",
        "checkout": [
            {"branch": "main", "path": "./src"},
            {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
        ],
    },
}
COMMIT = {"uses": "git-commit", "as": "commit", "config": {"path": "./out", "message": "rendered"}}
PUSH = {"uses": "git-push", "as": "push", "config": {"path": "./out"}}

# Every git process of a warm promotion of these steps on git 2.39, the remote's included
# (the push is 7 with the remote's side, the mirror's fetch 5): 37 with the
# repository cache and 35 without before the count was cut (2026-12-03), 27 and 25 after.
CEILING = {"cached": 27, "direct": 25}


def promotion(version: str) -> list[dict[str, Any]]:
    return [
        CLONE,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out/base"}},
        {"uses": "file-write", "config": {"path": "./out/version", "contents": version}},
        COMMIT,
        PUSH,
    ]


def traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[[], T]
) -> tuple[list[str], T]:
    """The git processes (``git <command> ...``) that ``run()`` started, and its result."""
    trace = tmp_path / "git-trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))  # git processes inherit it
    try:
        result = run()
    finally:
        monkeypatch.delenv("GIT_TRACE")
    return re.findall(r"trace: built-in: (git [^\n]*)", trace.read_text()), result


def outputs(outcomes: list[StepOutcome], alias: str) -> dict[str, Any]:
    (outcome,) = [o for o in outcomes if o.alias == alias]
    return dict(outcome.outputs)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "direct"])
def test_a_warm_promotion_runs_few_git_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    repo = create_bare_repo(tmp_path / "gitops.git")
    cache = RepositoryCache(tmp_path / "cache", 1 << 30) if cached else None
    run_steps(tmp_path, repo, promotion("1"), repository_cache=cache)  # the branch, the mirror
    freight = commit_freight(repo, branch_head(repo, "main") or "")  # (its git, untraced)
    commands, outcomes = traced(
        tmp_path,
        monkeypatch,
        lambda: run_steps(tmp_path, repo, promotion("2"), freight=freight, repository_cache=cache),
    )
    assert show_file(repo, "stage/test", "version") == "2"
    head = branch_head(repo, "stage/test")
    assert outputs(outcomes, "commit")["commit"] == head
    assert outputs(outcomes, "push")["commit"] == head
    assert outputs(outcomes, "clone")["commits"] == {
        "./src": branch_head(repo, "main"),
        "./out": git("rev-parse", "stage/test~1", cwd=repo),
    }
    assert len(commands) <= CEILING["cached" if cached else "direct"], "\n".join(commands)
    # One rev-parse (the new commit's ID), no diff before committing, no housekeeping in
    # the throwaway clone (a gc --auto after the push is the remote's receive-pack's).
    assert [c for c in commands if c.startswith("git rev-parse")] == [
        "git rev-parse --verify --quiet HEAD"
    ]
    assert not [c for c in commands if c.startswith(("git diff", "git maintenance"))]
    assert len([c for c in commands if c.startswith("git gc")]) <= 1


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "direct"])
def test_a_retried_promotion_commits_nothing_and_outputs_the_pushed_commit(
    tmp_path: Path, cached: bool
) -> None:
    repo = create_bare_repo(tmp_path / "gitops.git")
    cache = RepositoryCache(tmp_path / "cache", 1 << 30) if cached else None
    first = run_steps(tmp_path, repo, promotion("1"), repository_cache=cache)
    again = run_steps(tmp_path, repo, promotion("1"), repository_cache=cache)
    head = branch_head(repo, "stage/test")
    assert outputs(first, "push")["commit"] == head
    assert outputs(again, "commit")["commit"] == head
    assert outputs(again, "push")["commit"] == head
    assert git("rev-list", "--count", "stage/test", cwd=repo) == "1"


def test_a_commit_that_fails_is_an_error_not_nothing_to_commit(tmp_path: Path) -> None:
    # A message of blanks: git aborts the commit though changes are staged.
    repo = create_bare_repo(tmp_path / "gitops.git")
    steps = [*promotion("1")[:-2], {**COMMIT, "config": {"path": "./out", "message": "  "}}]
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, steps)
    assert outcome_of(caught.value) == "Failed"
    assert "empty commit message" in str(caught.value.cause or caught.value)


def test_a_new_branch_left_empty_has_nothing_to_commit(tmp_path: Path) -> None:
    repo = create_bare_repo(tmp_path / "gitops.git")
    outcomes = run_steps(tmp_path, repo, [CLONE, COMMIT])
    assert outputs(outcomes, "commit") == {"commit": ""}


def test_a_mirror_whose_head_names_a_branch_still_lets_a_checkout_have_it(
    tmp_path: Path,
) -> None:
    """Mirrors made before their HEAD named no branch have it on the default branch: a
    clone of one is on that branch, and detaches its HEAD to check the branch out."""
    repo = create_bare_repo(tmp_path / "gitops.git")
    cache = RepositoryCache(tmp_path / "cache", 1 << 30)
    run_steps(tmp_path, repo, promotion("1"), repository_cache=cache)
    (mirror,) = (tmp_path / "cache").glob("*.git")
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=mirror)
    outcomes = run_steps(tmp_path, repo, promotion("2"), repository_cache=cache)
    assert outputs(outcomes, "clone")["commits"]["./src"] == branch_head(repo, "main")
    assert show_file(repo, "stage/test", "version") == "2"


def test_a_branch_a_step_pushed_is_checked_out_by_a_later_clone_step(tmp_path: Path) -> None:
    """A push moves the clone's remote-tracking branch: a later git-clone of the same
    repository in the promotion checks the pushed branch out, not a new, empty one."""
    repo = create_bare_repo(tmp_path / "gitops.git")
    steps = [
        *promotion("1")[:-1],
        {**PUSH, "config": {"path": "./out", "targetBranch": "stage/other"}},
        {
            "uses": "git-clone",
            "as": "again",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [{"branch": "stage/other", "create": True, "path": "./other"}],
            },
        },
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    pushed = branch_head(repo, "stage/other")
    assert pushed is not None
    assert outputs(outcomes, "again")["commits"] == {"./other": pushed}


def test_a_push_that_rebased_returns_the_rebased_head(tmp_path: Path) -> None:
    """The worktree remembers its head from the commit; a rejected push's rebase moves
    HEAD, and the push returns (and the worktree then knows) the new head."""
    repo = create_bare_repo(tmp_path / "gitops.git")
    with git_environment(None, allow_local=True) as env:
        clone = Clone.create(str(repo), tmp_path / "clone", env, allow_local=True)
        worktree = clone.add_worktree(tmp_path / "work", branch="main")
        assert worktree.head() == branch_head(repo, "main")
        (tmp_path / "work" / "ours.txt").write_text("ours\n")
        ours = worktree.commit("ours", "Freightline", "freightline@localhost")
        outside = commit_outside(repo, "theirs.txt")
        pushed = worktree.push("main")
        assert worktree.head() == pushed
    assert ours is not None and pushed != ours
    assert pushed == branch_head(repo, "main")
    assert git("rev-parse", f"{pushed}~1", cwd=repo) == outside


def commit_outside(repo: Path, name: str) -> str:
    """Someone else's commit on main, pushed to the remote: the remote's new head."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(repo), str(work))
        (work / name).write_text(name)
        git("add", name, cwd=work)
        git("commit", "--quiet", "-m", name, cwd=work)
        git("push", "--quiet", "origin", "main", cwd=work)
    head = branch_head(repo, "main")
    assert head is not None
    return head


@pytest.mark.parametrize("tip", [True, False], ids=["branch-tip", "older-commit"])
def test_a_commit_checkout_fetches_only_a_commit_no_branch_has_at_its_tip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tip: bool
) -> None:
    """Without the cache the clone is shallow: a Freight's commit at a branch's tip is in
    it already, an older one is fetched; both are checked out."""
    repo = create_bare_repo(tmp_path / "gitops.git")
    older = branch_head(repo, "main")
    newer = commit_outside(repo, "newer.txt")
    commit = newer if tip else older
    assert commit is not None
    work = tmp_path / "work"
    with git_environment(None, allow_local=True) as env:
        clone = Clone.create(str(repo), tmp_path / "clone", env, allow_local=True)
        commands, worktree = traced(
            tmp_path, monkeypatch, lambda: clone.add_worktree(work, commit=commit)
        )
        assert worktree.head() == commit
    assert git("rev-parse", "HEAD", cwd=work) == commit
    assert (work / "newer.txt").exists() == tip
    fetches = [c for c in commands if c.startswith("git fetch")]
    assert len(fetches) == (0 if tip else 1), commands
