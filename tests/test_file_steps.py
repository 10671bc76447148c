"""copy, delete and file-write, as Kargo's: every example on their Kargo reference pages runs
through the worktree runner against a real bare repository, then the edge cases.

Kargo's examples run unchanged but for what cannot run here: ``REPO_URL`` (a local bare
repository) for ``https://github.com/example/repo.git``; ``copy``'s example takes its
overlay from a branch (``overlay``) instead of a second Warehouse's commit, since a
promotion here carries one Freight; and the ``git-commit`` of ``delete``'s example gets the
``message`` Kargo's own schema requires.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.repository_cache import RepositoryCache
from activities.worktree import WorktreeActivities
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import (
    PromotionPhase,
    StepOutcome,
    WorktreeBatch,
    plan_promotion,
)
from freightline.kargo.resources import Freight
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo, git, show_file
from tests.pipelines import commit_freight, single_stage_project, with_freight

GIT_REPO = [{"name": "gitRepo", "value": "REPO_URL"}]
CLONE_SRC_AND_OUT = {
    "uses": "git-clone",
    "config": {
        "repoURL": "${{ vars.gitRepo }}",
        "checkout": [
            {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"},
            {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
        ],
    },
}
COMMIT_AND_PUSH = [
    {"uses": "git-commit", "as": "commit", "config": {"path": "./out", "message": "rendered"}},
    {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The kargo-demo repository, plus a branch ``overlay`` that changes the test overlay."""
    path = create_bare_repo(tmp_path / "gitops.git")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(path), str(work))
        git("checkout", "--quiet", "-b", "overlay", cwd=work)
        (work / "stages/test/kustomization.yaml").write_text("# the overlay's version\n")
        git("commit", "--quiet", "-am", "overlay", cwd=work)
        git("push", "--quiet", "origin", "overlay", cwd=work)
    return path


def add_to_main(repo: Path, files: dict[str, str], links: dict[str, Path | str]) -> None:
    """Commit files and symlinks to ``main`` (a seed directory cannot carry symlinks in)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(repo), str(work))
        for name, text in files.items():
            (work / name).write_text(text)
        for name, target in links.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).symlink_to(target)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", "links", cwd=work)
        git("push", "--quiet", "origin", "main", cwd=work)


def run_steps(
    tmp_path: Path,
    repo: Path,
    steps: list[dict[str, Any]],
    *,
    variables: Any = GIT_REPO,
    images: tuple[str, ...] = (),
    freight: Freight | None = None,
    signing_key_file: Path | None = None,
    repository_cache: RepositoryCache | None = None,
) -> list[StepOutcome]:
    """Plan ``steps`` for one Freight (main's head, and ``images``; or ``freight``) and run
    them in the worktree activity (with the worker's ``repository_cache``, if given)."""
    if freight is None:
        freight = commit_freight(repo, branch_head(repo, "main") or "", images=images)
    resources = single_stage_project(repo, steps, variables=variables)
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(range(len(plan.steps))))
    outcomes: list[StepOutcome] = ActivityEnvironment().run(
        WorktreeActivities(
            scratch_root=tmp_path,
            allow_local_repositories=True,
            signing_key_file=signing_key_file,
            repository_cache=repository_cache,
        ).run_worktree_steps,
        batch,
    )
    return outcomes


def files_on(repo: Path, branch: str) -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", f"refs/heads/{branch}", cwd=repo).split())


def refused(
    tmp_path: Path, repo: Path, steps: list[dict[str, Any]], variables: Any = GIT_REPO
) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, steps, variables=variables)
    return caught.value


def outcome_of(err: ApplicationError) -> str:
    (details,) = err.details
    assert isinstance(details, dict)
    return str(details["outcome"])


# --- copy ------------------------------------------------------------------------------------


def test_copy_reference_example_combines_base_and_overlay(tmp_path: Path, repo: Path) -> None:
    # Kargo's "Common Usage", then (its "render, commit, push, etc.") the result into ./out.
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [
                    {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"},
                    {"branch": "overlay", "path": "./overlay"},
                    {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
                ],
            },
        },
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "copy",
            "config": {
                "inPath": "./overlay/stages/${{ ctx.stage }}/kustomization.yaml",
                "outPath": "./src/stages/${{ ctx.stage }}/kustomization.yaml",
            },
        },
        {"uses": "copy", "config": {"inPath": "./src/stages/test", "outPath": "./out"}},
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    assert [o.outputs for o in outcomes if o.uses == "copy"] == [{}, {}]
    assert files_on(repo, "stage/test") == {"kustomization.yaml", "configmap.yaml"}
    assert show_file(repo, "stage/test", "kustomization.yaml") == "# the overlay's version"
    configmap = (KARGO_DEMO / "stages/test/configmap.yaml").read_text().strip()
    assert show_file(repo, "stage/test", "configmap.yaml") == configmap


def test_copy_follows_gitignore_rules_skips_git_and_symlinks(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "file-write",
            "config": {"path": "./src/base/notes.tmp", "contents": "scratch\n"},
        },
        {
            "uses": "file-write",
            "config": {"path": "./src/base/keep/me.tmp", "contents": "kept\n"},
        },
        {
            "uses": "copy",
            "config": {
                "inPath": "./src",
                "outPath": "./out/copy",
                "ignore": "# comments and blank lines are not patterns\n\n*.tmp\n!base/keep/*.tmp\n"
                "stages/\n",
            },
        },
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    assert files_on(repo, "stage/test") == {
        "copy/base/deploy.yaml",
        "copy/base/keep/me.tmp",
        "copy/base/kustomization.yaml",
        "copy/base/service.yaml",
    }


def test_copy_does_not_write_through_a_symlink_and_keeps_modes(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    (seed / "run.sh").write_text("#!/bin/sh\n")
    (seed / "run.sh").chmod(0o755)
    repo = create_bare_repo(tmp_path / "gitops.git", seed=seed)
    add_to_main(
        repo, {}, {"link-out": outside, "dest.yaml": outside, "linked/deploy.yaml": outside}
    )
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "copy", "config": {"inPath": "./src/run.sh", "outPath": "./out/run.sh"}},
        # ./src/linked/deploy.yaml is a symlink to a file outside: the copy replaces the link.
        {
            "uses": "copy",
            "config": {"inPath": "./src/base", "outPath": "./src/linked"},
        },
        # A symlink inside what is copied is skipped.
        {"uses": "copy", "config": {"inPath": "./src", "outPath": "./out/all"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    assert outside.read_text() == "untouched\n"
    files = files_on(repo, "stage/test")
    assert "all/link-out" not in files and "all/run.sh" in files
    mode = git("ls-tree", "refs/heads/stage/test", "run.sh", cwd=repo).split()[0]
    assert mode == "100755"
    assert show_file(repo, "stage/test", "all/linked/deploy.yaml").startswith("apiVersion")
    # Named directly, a path through a symlink that leaves is refused.
    copy = {"uses": "copy", "config": {"inPath": "./src/run.sh", "outPath": "./src/dest.yaml"}}
    err = refused(tmp_path, repo, [CLONE_SRC_AND_OUT, copy])
    assert "leaves the work tree" in str(err) and outcome_of(err) == "Errored"
    assert outside.read_text() == "untouched\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inPath": "../gitops.git", "outPath": "./out"}, "leaves the work tree"),
        ({"inPath": "./src", "outPath": "/tmp/x"}, "is absolute"),
        ({"inPath": "./src/nothing-here", "outPath": "./out/x"}, "does not exist"),
        ({"inPath": "./src"}, "outPath: Field required"),
        ({"inPath": "./src", "outPath": "./out", "exclude": "x"}, "exclude: Extra inputs"),
    ],
)
def test_copy_refusals_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    err = refused(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": "copy", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


# --- delete ----------------------------------------------------------------------------------


def test_delete_reference_examples(tmp_path: Path, repo: Path) -> None:
    # Kargo's three examples in one promotion, after steps "that produce intermediate files".
    produce = [
        {"uses": "copy", "config": {"inPath": "./src/base", "outPath": path}}
        for path in ("./out/unwanted/file", "./out/tmp", "./out/build", "./out/kept")
    ] + [
        {"uses": "file-write", "config": {"path": path, "contents": "x"}}
        for path in ("./out/build.log", "./out/a.tmp", "./out/kept/deep/b.tmp", "./out/c.txt")
    ]
    steps = [
        CLONE_SRC_AND_OUT,
        *produce,
        {"uses": "delete", "config": {"path": "./out/unwanted/file"}},
        {
            "uses": "delete",
            "config": {"paths": ["./out/unwanted/file", "./out/tmp", "./out/build.log"]},
        },
        {
            "uses": "delete",
            "config": {
                "paths": ["./out/**/*.tmp", "./out/build/"],
                "pathsAreGlobs": True,
                "strict": True,
            },
        },
        {"uses": "git-commit", "config": {"path": "./out", "message": "rendered"}},
        {"uses": "git-push", "config": {"path": "./out"}},
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    assert [o.outputs for o in outcomes if o.uses == "delete"] == [{}, {}, {}]
    assert files_on(repo, "stage/test") == {
        "c.txt",
        "kept/deploy.yaml",
        "kept/kustomization.yaml",
        "kept/service.yaml",
    }


def test_delete_strict_missing_paths_are_errored_lenient_ones_are_not(
    tmp_path: Path, repo: Path
) -> None:
    lenient = {"uses": "delete", "config": {"paths": ["./out/none", "./nowhere/x"]}}
    globs = {"uses": "delete", "config": {"path": "./out/*.none", "pathsAreGlobs": True}}
    assert run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, lenient, globs])[1].outputs == {}
    for config, message in [
        ({"path": "./out/none", "strict": True}, 'path "./out/none" does not exist'),
        (
            {"path": "./out/*.none", "pathsAreGlobs": True, "strict": True},
            'no paths matched pattern "./out/*.none"',
        ),
        ({"path": "./a", "paths": ["./b"]}, "exactly one of path or paths"),
        ({}, "exactly one of path or paths"),
        ({"paths": []}, "paths: List should have at least 1 item"),
    ]:
        err = refused(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": "delete", "config": config}])
        assert message in str(err) and outcome_of(err) == "Errored"


def test_delete_removes_a_symlink_not_its_target_and_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep\n")
    repo = create_bare_repo(tmp_path / "gitops.git")
    add_to_main(repo, {}, {"to-outside": outside})
    run_steps(
        tmp_path,
        repo,
        [CLONE_SRC_AND_OUT, {"uses": "delete", "config": {"path": "./src/to-outside"}}],
    )
    assert (outside / "precious.txt").exists()
    for config in (
        {"path": "./src/to-outside/precious.txt"},
        {"path": "../outside"},
        {"path": "."},
        {"path": "./src/to-outside/*", "pathsAreGlobs": True},
    ):
        err = refused(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": "delete", "config": config}])
        assert "leaves the work tree" in str(err) and outcome_of(err) == "Errored"
    assert (outside / "precious.txt").exists()


# --- file-write ------------------------------------------------------------------------------


def test_file_write_modes_and_overwrite(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "file-write", "config": {"path": "./out/private.yaml", "contents": "a: 1\n"}},
        {
            "uses": "file-write",
            "config": {"path": "./out/new/dir/shared.yaml", "contents": "", "permissions": "0644"},
        },
        {
            "uses": "file-write",
            "config": {"path": "./out/private.yaml", "contents": "a: 2\n", "overwrite": True},
        },
        {"uses": "copy", "config": {"inPath": "./out", "outPath": "./out/snapshot"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    assert show_file(repo, "stage/test", "private.yaml") == "a: 2"
    assert show_file(repo, "stage/test", "new/dir/shared.yaml") == ""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"path": "./src/base/deploy.yaml", "contents": "x"}, "already exists; set overwrite"),
        ({"path": "/etc/x", "contents": "x"}, 'path "/etc/x" must be relative'),
        ({"path": "./src/../../x", "contents": "x"}, "traverse outside the working directory"),
        ({"path": "./out/.git/config", "contents": "x"}, "the .git directory is forbidden"),
        ({"path": "./link/x", "contents": "x"}, "(symlinks are forbidden)"),
        ({"path": "./escape/x", "contents": "x"}, "leaves the work tree"),
        ({"path": "./x", "contents": "x", "permissions": "0755"}, "executable bits"),
        ({"path": "./x", "contents": "x", "permissions": "0666"}, "world-writable"),
    ],
)
def test_file_write_refusals_fail(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "file-write", "config": config},
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = create_bare_repo(tmp_path / "linked.git")
    add_to_main(linked, {}, {"inside": "base", "outside": elsewhere})
    steps.insert(
        1,
        {
            "uses": "git-clone",
            "config": {"repoURL": linked.as_uri(), "checkout": [{"branch": "main", "path": "./l"}]},
        },
    )
    config = dict(config)
    config["path"] = (
        config["path"].replace("./link/", "./l/inside/").replace("./escape/", "./l/outside/")
    )
    steps[-1] = {"uses": "file-write", "config": config}
    err = refused(tmp_path, repo, steps)
    assert message in str(err) and outcome_of(err) == "Failed"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"path": "./x"}, "contents: Field required"),
        (
            {"path": "./x", "contents": "x", "permissions": "644"},
            "permissions: String should match",
        ),
        ({"path": "", "contents": "x"}, "path: String should have at least 1 character"),
    ],
)
def test_file_write_schema_refusals_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    err = refused(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": "file-write", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


# --- a manifest that uses them passes apply and promotes --------------------------------------


@pytest.mark.integration
async def test_a_stage_using_the_file_steps_applies_and_promotes(
    client: Client, worker: Worker, repo: Path
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out"}},
        {"uses": "delete", "config": {"path": "./out/service.yaml"}},
        {
            "uses": "file-write",
            "config": {"path": "./out/stage.txt", "contents": "${{ ctx.stage }}\n"},
        },
        *COMMIT_AND_PUSH,
    ]
    freight = commit_freight(repo, branch_head(repo, "main") or "")
    await apply_project(
        client, with_freight(single_stage_project(repo, steps, variables=GIT_REPO), freight)
    )
    handle = await start_promotion(client, "p", "test", freight.metadata.name)
    result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["push"]["commit"] == branch_head(repo, "stage/test")
    assert files_on(repo, "stage/test") == {"deploy.yaml", "kustomization.yaml", "stage.txt"}
    assert show_file(repo, "stage/test", "stage.txt") == "test"
