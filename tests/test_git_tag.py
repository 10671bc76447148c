"""git-tag, as Kargo's: every example on its Kargo reference page (the verbatim copy in
``tests/reference/kargo-steps/``) runs through the worktree runner against a real bare
repository, then the annotated tag itself, force, retries, and the errors.

The page's examples leave out ``message``, which Kargo's own schema requires: each runs
verbatim (and is refused for it, as Kargo refuses it), then with a message."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from activities.git_steps import (
    GitCloneConfig,
    GitCommitConfig,
    GitPushConfig,
    GitTagConfig,
    git_clone,
    git_commit,
    git_tag,
)
from activities.step_context import StepContext
from activities.workspace import Workspace
from freightline.contracts.promotion import plan_promotion
from freightline.errors import ConfigError
from sandbox.gitops import branch_head, create_bare_repo, git
from tests.kargo_pages import assert_all_covered, example
from tests.pipelines import commit_freight, single_stage_project, with_freight
from tests.test_file_steps import outcome_of, refused, run_steps

CLONE_MAIN_TO_OUT = {
    "uses": "git-clone",
    "config": {"repoURL": "${{ vars.gitRepo }}", "checkout": [{"branch": "main", "path": "./out"}]},
}
PUSH_TAGS = "tag" in GitPushConfig.model_fields
"""Whether git-push takes Kargo's ``tag`` yet (another change brings it)."""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """kargo-demo, plus a branch ``other`` whose tip the tag ``dev-team-a`` names."""
    path = create_bare_repo(tmp_path / "gitops.git")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(path), str(work))
        git("checkout", "--quiet", "-b", "other", cwd=work)
        (work / "other.txt").write_text("other\n")
        git("add", "other.txt", cwd=work)
        git("commit", "--quiet", "-m", "other", cwd=work)
        git("tag", "-a", "-m", "team a", "dev-team-a", cwd=work)
        git("push", "--quiet", "origin", "other", "dev-team-a", cwd=work)
    return path


def with_message(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**s, "config": {"message": "tagged by a promotion", **s["config"]}}
        if s["uses"] == "git-tag"
        else s
        for s in steps
    ]


def remote_tag(repo: Path, tag: str) -> str | None:
    try:
        return git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}", cwd=repo)
    except RuntimeError:
        return None


GIT_TAG_EXAMPLES = [
    "Basic Usage",
    "Tagging After a Commit",
    "Pushing After Tagging",
    "Overwriting an Existing Tag",
]


def test_git_tag_page_examples_are_all_tested() -> None:
    assert_all_covered("git-tag", GIT_TAG_EXAMPLES)


@pytest.mark.parametrize("heading", GIT_TAG_EXAMPLES)
def test_git_tag_page_example(tmp_path: Path, repo: Path, heading: str) -> None:
    steps = example("git-tag", heading).steps
    err = refused(tmp_path, repo, [CLONE_MAIN_TO_OUT, *steps])
    assert "message: Field required" in str(err) and outcome_of(err) == "Errored"
    if heading == "Pushing After Tagging" and not PUSH_TAGS:
        pytest.skip("git-push does not take Kargo's tag yet")
    if heading == "Tagging After a Commit":
        steps = [
            {"uses": "file-write", "config": {"path": "./out/release.txt", "contents": "1.0.0\n"}},
            *steps,
        ]
    outcomes = run_steps(tmp_path, repo, [CLONE_MAIN_TO_OUT, *with_message(steps)])
    by_step = {o.uses: o.outputs for o in outcomes}
    head = branch_head(repo, "main")
    if heading == "Tagging After a Commit":
        head = by_step["git-commit"]["commit"]
        assert head != branch_head(repo, "main")
    assert by_step["git-tag"] == {"commit": head}
    if heading == "Pushing After Tagging":
        assert remote_tag(repo, "v1.0.0") == head


def test_an_existing_tag_is_an_error_without_force(tmp_path: Path, repo: Path) -> None:
    # The clone fetched dev-team-a (it names the tip of a branch it fetched).
    step = {"uses": "git-tag", "config": {"path": "./out", "tag": "dev-team-a", "message": "m"}}
    err = refused(tmp_path, repo, [CLONE_MAIN_TO_OUT, step])
    assert 'tag "dev-team-a" already exists' in str(err) and outcome_of(err) == "Errored"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"path": "./out", "tag": "v 1", "message": "m"}, "not a valid git tag name"),
        ({"path": "./out", "tag": "-d", "message": "m"}, "not a valid git tag name"),
        ({"path": "./out", "tag": "v1", "message": ""}, "message: String should have"),
        ({"path": "./out", "tag": "", "message": "m"}, "tag: String should have"),
        ({"path": "./nowhere", "tag": "v1", "message": "m"}, "is not inside a git-clone checkout"),
        ({"path": "../", "tag": "v1", "message": "m"}, "leaves the work tree"),
        ({"path": "./out", "tag": "v1", "message": "m", "sign": True}, "sign: Extra inputs"),
    ],
)
def test_git_tag_errors_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    err = refused(tmp_path, repo, [CLONE_MAIN_TO_OUT, {"uses": "git-tag", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


# --- the tag itself, on a real clone ----------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path, repo: Path) -> Any:
    freight = commit_freight(repo, branch_head(repo, "main") or "")
    resources = single_stage_project(repo, [CLONE_MAIN_TO_OUT])
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    context = StepContext(
        workspace=Workspace(tmp_path / "scratch"),
        plan=plan,
        git_credentials=lambda _url: None,
        allow_local_repositories=True,
    )
    with context.resources:
        git_clone(
            context,
            GitCloneConfig.model_validate(
                {"repoURL": repo.as_uri(), "checkout": [{"branch": "main", "path": "./out"}]}
            ),
        )
        yield context


def tag_object(ctx: StepContext, tag: str) -> tuple[str, str, str]:
    """(object type, the commit it names, its message) of a tag in the checkout."""
    out = ctx.workspace.root / "out"
    return (
        git("cat-file", "-t", f"refs/tags/{tag}", cwd=out),
        git("rev-parse", f"refs/tags/{tag}^{{commit}}", cwd=out),
        git("for-each-ref", "--format=%(contents)", f"refs/tags/{tag}", cwd=out),
    )


def test_an_annotated_tag_on_head_kept_on_retry_moved_with_force(
    ctx: StepContext, repo: Path
) -> None:
    head = branch_head(repo, "main")
    config = GitTagConfig(path="./out", tag="v1.0.0", message="release 1.0.0")
    assert git_tag(ctx, config) == {"commit": head}
    assert tag_object(ctx, "v1.0.0") == ("tag", head, "release 1.0.0")
    tag_id = git("rev-parse", "refs/tags/v1.0.0", cwd=ctx.workspace.root / "out")
    # A retry that finds the tag on HEAD already (cloned back after a push) keeps it.
    assert git_tag(ctx, config) == {"commit": head}
    assert git("rev-parse", "refs/tags/v1.0.0", cwd=ctx.workspace.root / "out") == tag_id
    # On another commit, the tag exists: an error, unless force moves it.
    (ctx.workspace.root / "out/next.txt").write_text("next\n")
    new_head = git_commit(ctx, GitCommitConfig(path="./out", message="next"))["commit"]
    with pytest.raises(ConfigError, match=r'tag "v1\.0\.0" already exists'):
        git_tag(ctx, config)
    moved = GitTagConfig(path="./out", tag="v1.0.0", message="moved", force=True)
    assert git_tag(ctx, moved) == {"commit": new_head}
    assert tag_object(ctx, "v1.0.0") == ("tag", new_head, "moved")


def test_force_moves_a_tag_fetched_from_the_remote(ctx: StepContext, repo: Path) -> None:
    assert remote_tag(repo, "dev-team-a") == branch_head(repo, "other")
    config = GitTagConfig(path="./out", tag="dev-team-a", message="m", force=True)
    assert git_tag(ctx, config) == {"commit": branch_head(repo, "main")}
    assert tag_object(ctx, "dev-team-a")[1] == branch_head(repo, "main")
