"""git-clone, git-clear, git-commit and git-push, as Kargo v1.11's: every example on their
reference pages (``tests/reference/kargo-steps/git-*.md``) through the worktree runner
against real bare repositories, then the fields and edge cases Kargo has.

The examples run unchanged but for these substitutions:

- ``REPO_URL``/``gitRepo`` is a local bare repository, not ``https://github.com/example/...``;
- "Combining Multiple Sources" runs as written, for a Stage that requests Freight from two
  Warehouses (``base``: main's head, ``test-overlay``: the ``overlay`` branch's head), one
  Freight per origin in the promotion's collection;
- git-commit's "Common Usage" feeds it a ``kustomize-set-image`` without ``path`` or
  ``tag``, which Kargo's own schema refuses (both are required): refused here too, then
  run with them;
- git-push's "Pushing Tags" needs ``git-tag``, which is not in this branch: it runs when the
  step registry has ``git-tag`` and is skipped otherwise (the tag push itself is tested
  below on a tag made with git);
- where a page's example ends in "Commit, push, etc...", a commit and push follow, so that
  the result can be read back.
"""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.git import Clone, git_environment
from activities.git_steps import commit_url
from activities.repository_cache import RepositoryCache
from activities.worktree import WorktreeActivities
from freightline.contracts.promotion import StepOutcome, WorktreeBatch, plan_promotion
from freightline.kargo.resources import FreightRequest, Warehouse
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo, git, show_file
from tests.pipelines import commit_freight, single_stage_project, with_freight
from tests.test_file_steps import (
    CLONE_SRC_AND_OUT,
    COMMIT_AND_PUSH,
    GIT_REPO,
    add_to_main,
    files_on,
    outcome_of,
    run_steps,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """kargo-demo, plus charts/ and configs/ (for sparse checkouts) and a branch ``overlay``."""
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    for directory in ("charts/my-app", "charts/other", "configs/common", "configs/prod"):
        (seed / directory).mkdir(parents=True)
        (seed / directory / "file.txt").write_text(f"{directory}\n")
    (seed / "README.md").write_text("top level\n")
    path = create_bare_repo(tmp_path / "gitops.git", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(path), str(work))
        git("checkout", "--quiet", "-b", "overlay", cwd=work)
        (work / "stages/test/kustomization.yaml").write_text(
            "resources:\n- ../../base\n- configmap.yaml\nnamePrefix: overlaid-\n"
        )
        git("commit", "--quiet", "-am", "overlay", cwd=work)
        git("push", "--quiet", "origin", "overlay", cwd=work)
    return path


def outputs_of(outcomes: list[Any], alias: str) -> dict[str, Any]:
    (outcome,) = [o for o in outcomes if o.alias == alias]
    return dict(outcome.outputs)


def refusal(tmp_path: Path, repo: Path, steps: list[dict[str, Any]]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, steps)
    assert outcome_of(caught.value) == "Errored"
    return caught.value


def clone(*checkouts: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {
        "uses": "git-clone",
        "as": "clone",
        "config": {"repoURL": "${{ vars.gitRepo }}", "checkout": list(checkouts), **config},
    }


SRC = {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"}
OUT = {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"}


def message_on(repo: Path, branch: str) -> str:
    return git("log", "-1", "--format=%B", f"refs/heads/{branch}", cwd=repo)


# --- git-clone: the reference page ---------------------------------------------------------


def test_clone_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    outcomes = run_steps(tmp_path, repo, [clone(SRC, OUT)])
    # A branch created at checkout has no commit until it is pushed (Kargo pushes an
    # empty "Initial commit" at once; Freightline's first push creates the branch).
    assert outputs_of(outcomes, "clone") == {
        "commits": {"./src": branch_head(repo, "main"), "./out": ""}
    }


def run_for_two_warehouses(
    tmp_path: Path, repo: Path, steps: list[dict[str, Any]]
) -> list[StepOutcome]:
    """Run ``steps`` for a Stage fed by Warehouses ``base`` (main) and ``test-overlay`` (the
    ``overlay`` branch), both subscribed to ``repo``, holding one Freight of each."""
    resources = single_stage_project(repo, steps, variables=GIT_REPO)
    origins = {"base": "main", "test-overlay": "overlay"}
    warehouses = {
        name: Warehouse.model_validate(
            {
                "metadata": {"name": name, "namespace": "p"},
                "spec": {"subscriptions": [{"git": {"repoURL": repo.as_uri(), "branch": b}}]},
            }
        )
        for name, b in origins.items()
    }
    stage = resources.stages["test"]
    requested = [
        FreightRequest.model_validate(
            {"origin": {"kind": "Warehouse", "name": name}, "sources": {"direct": True}}
        )
        for name in origins
    ]
    stage = stage.model_copy(
        update={"spec": stage.spec.model_copy(update={"requested_freight": requested})}
    )
    freight = [
        commit_freight(repo, branch_head(repo, b) or "", name) for name, b in origins.items()
    ]
    resources = with_freight(
        resources.model_copy(update={"warehouses": warehouses, "stages": {"test": stage}}),
        *freight,
    )
    plan = plan_promotion(
        resources, "test", freight[0].metadata.name, "p:x", collection=[freight[1].metadata.name]
    )
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(range(len(plan.steps))))
    outcomes: list[StepOutcome] = ActivityEnvironment().run(
        WorktreeActivities(scratch_root=tmp_path, allow_local_repositories=True).run_worktree_steps,
        batch,
    )
    return outcomes


def test_clone_reference_example_combining_multiple_sources(tmp_path: Path, repo: Path) -> None:
    base = '${{ commitFrom(vars.gitRepo, warehouse("base")).ID }}'
    overlay = '${{ commitFrom(vars.gitRepo, warehouse(ctx.stage + "-overlay")).ID }}'
    steps = [
        clone({"commit": base, "path": "./src"}, {"commit": overlay, "path": "./overlay"}, OUT),
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "copy",
            "config": {
                "inPath": "./overlay/stages/${{ ctx.stage }}/kustomization.yaml",
                "outPath": "./src/stages/${{ ctx.stage }}/kustomization.yaml",
            },
        },
        {
            "uses": "kustomize-build",
            "config": {"path": "./src/stages/${{ ctx.stage }}", "outPath": "./out"},
        },
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_for_two_warehouses(tmp_path, repo, steps)
    assert outputs_of(outcomes, "clone")["commits"] == {
        "./src": branch_head(repo, "main"),
        "./overlay": branch_head(repo, "overlay"),
        "./out": "",
    }
    assert files_on(repo, "stage/test") == {
        "configmap-overlaid-kargo-demo-content.yaml",
        "deployment-overlaid-kargo-demo.yaml",
        "service-overlaid-kargo-demo.yaml",
    }


def test_clone_reference_example_sparse_checkout(tmp_path: Path, repo: Path) -> None:
    steps = [
        {
            "uses": "git-clone",
            "as": "clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "blobless": True,
                "checkout": [
                    {**SRC, "sparse": ["charts/my-app", "configs/common"]},
                    {**OUT, "sparse": ["stages/${{ ctx.stage }}"]},
                ],
            },
        },
        # "Work with the sparse checkouts...": what ./src holds goes to the one directory
        # ./out checks out.
        {"uses": "copy", "config": {"inPath": "./src", "outPath": "./out/stages/test/src"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    # Cone mode: the directories asked for, and the files at the top.
    assert files_on(repo, "stage/test") == {
        "stages/test/src/README.md",
        "stages/test/src/charts/my-app/file.txt",
        "stages/test/src/configs/common/file.txt",
    }


def test_clone_reference_example_submodules(tmp_path: Path, repo: Path) -> None:
    library = create_bare_repo(tmp_path / "library.git", seed=KARGO_DEMO / "base")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(repo), str(work))
        git(
            "-c", "protocol.file.allow=always", "submodule", "--quiet", "add",
            library.as_uri(), "vendor/library", cwd=work,
        )  # fmt: skip
        git("commit", "--quiet", "-m", "submodule", cwd=work)
        git("push", "--quiet", "origin", "main", cwd=work)
    steps = [
        clone(SRC, OUT, recurseSubmodules=True),
        # "Work with the checkouts, including their submodules...":
        {
            "uses": "copy",
            "config": {"inPath": "./src/vendor/library/deploy.yaml", "outPath": "./out/d.yaml"},
        },
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    assert (
        show_file(repo, "stage/test", "d.yaml")
        == (KARGO_DEMO / "base/deploy.yaml").read_text().strip()
    )
    # Without recurseSubmodules the submodule's directory is empty.
    with pytest.raises(ApplicationError, match=r"deploy\.yaml"):
        run_steps(tmp_path, repo, [clone(SRC, OUT), steps[1]])


# --- git-clone: as, refs, sparse rules -----------------------------------------------------


def test_as_names_a_checkout_in_the_commits_output(tmp_path: Path, repo: Path) -> None:
    outcomes = run_steps(tmp_path, repo, [clone({**SRC, "as": "source"}, {**OUT, "as": "out"})])
    assert outputs_of(outcomes, "clone") == {
        "commits": {"source": branch_head(repo, "main"), "out": ""}
    }


def test_a_checkout_without_a_ref_gets_the_default_branch(tmp_path: Path, repo: Path) -> None:
    steps = [
        clone({"path": "./src"}),
        {"uses": "file-write", "config": {"path": "./src/new.txt", "contents": "x\n"}},
        {"uses": "git-commit", "config": {"path": "./src", "message": "m"}},
        {"uses": "git-push", "as": "push", "config": {"path": "./src"}},
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    assert outputs_of(outcomes, "push")["branch"] == "main"
    assert show_file(repo, "main", "new.txt") == "x"


def headless_repo(tmp_path: Path, empty: bool) -> Path:
    """A bare repository whose HEAD names ``main``, which does not exist: it holds only
    ``stage/test`` (a GitOps repository of stage branches), or nothing at all."""
    path = tmp_path / "headless.git"
    if empty:
        git("init", "--quiet", "--bare", "--initial-branch=main", str(path))
    else:
        create_bare_repo(path, branch="stage/test")
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=path)
    return path


@pytest.mark.parametrize("cached", [False, True], ids=["direct", "cached"])
@pytest.mark.parametrize("empty", [False, True], ids=["stage-branches", "empty"])
def test_create_makes_a_branch_when_the_remote_head_names_no_branch(
    tmp_path: Path, empty: bool, cached: bool
) -> None:
    """Kargo clones bare and never checks out the remote's HEAD, so a HEAD naming a
    branch that does not exist (or an empty repository) stops no checkout."""
    repo = headless_repo(tmp_path, empty)
    cache = RepositoryCache(tmp_path / "cache", 1 << 30) if cached else None
    checkouts = [{"branch": "stage/prod", "create": True, "path": "./prod"}]
    if not empty:
        checkouts.append({"branch": "stage/test", "path": "./test"})
    steps = [
        clone(*checkouts),
        {"uses": "file-write", "config": {"path": "./prod/app.yaml", "contents": "prod\n"}},
        {"uses": "git-commit", "config": {"path": "./prod", "message": "prod"}},
        {"uses": "git-push", "config": {"path": "./prod"}},
    ]
    test_head = branch_head(repo, "stage/test")
    freight = commit_freight(repo, test_head or "0" * 40)
    outcomes = run_steps(tmp_path, repo, steps, freight=freight, repository_cache=cache)
    expected = {"./prod": ""} if empty else {"./prod": "", "./test": test_head}
    assert outputs_of(outcomes, "clone") == {"commits": expected}
    assert files_on(repo, "stage/prod") == {"app.yaml"}  # an orphan: nothing of stage/test
    assert git("rev-list", "--count", "refs/heads/stage/prod", cwd=repo) == "1"
    assert branch_head(repo, "main") is None


@pytest.mark.parametrize(
    ("checkouts", "reason"),
    [
        ([{**SRC, "as": "a"}, {**OUT, "as": "a"}], 'duplicate checkout alias "a" at checkout[1]'),
        (
            [{"branch": "main", "tag": "v1", "path": "./src"}],
            "branch and tag are mutually exclusive",
        ),
        ([{**SRC, "sparse": ["charts/*"]}], "cannot contain glob characters"),
        ([{**SRC, "sparse": ["../up"]}], "cannot escape repository"),
        ([{**SRC, "sparse": ["/abs"]}], "must be relative"),
        ([{**SRC, "sparse": []}], "sparse"),
        ([{"branch": "nope", "path": "./src"}], 'remote branch "nope" of repo'),
    ],
    ids=["duplicate-as", "two-refs", "glob", "dotdot", "absolute", "empty-sparse", "no-branch"],
)
def test_clone_refuses_what_kargo_refuses(
    tmp_path: Path, repo: Path, checkouts: list[dict[str, Any]], reason: str
) -> None:
    assert reason in str(refusal(tmp_path, repo, [clone(*checkouts)]))


# --- git-clear: the reference page -----------------------------------------------------------


def test_clear_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(repo), str(work))
        git("push", "--quiet", "origin", "main:stage/test", cwd=work)
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "REPO_URL",  # the page: https://github.com/example/repo.git
                "checkout": [{"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"}],
            },
        },
        {"uses": "git-clear", "config": {"path": "./out"}},
        # "Prepare the contents of ./out ...":
        {"uses": "file-write", "config": {"path": "./out/only.txt", "contents": "x\n"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    assert files_on(repo, "stage/test") == {"only.txt"}


# --- git-commit: the reference page ----------------------------------------------------------


SET_IMAGE_AS_ON_THE_PAGE = {
    "uses": "kustomize-set-image",
    "as": "update-image",
    "config": {"images": [{"image": "my/image"}]},
}
SET_IMAGE = {
    "uses": "kustomize-set-image",
    "as": "update-image",
    "config": {"path": "./src/base", "images": [{"image": "my/image", "tag": "v2.0.0"}]},
}


def test_commit_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    commit = {
        "uses": "git-commit",
        "as": "commit",
        "config": {"path": "./out", "message": "${{ outputs['update-image'].commitMessage }}"},
    }
    build = {
        "uses": "kustomize-build",
        "config": {"path": "./src/stages/${{ ctx.stage }}", "outPath": "./out"},
    }
    clear = {"uses": "git-clear", "config": {"path": "./out"}}
    err = refusal(tmp_path, repo, [CLONE_SRC_AND_OUT, clear, SET_IMAGE_AS_ON_THE_PAGE])
    assert "config.path" in str(err)
    push = {"uses": "git-push", "as": "push", "config": {"path": "./out"}}
    outcomes = run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, clear, SET_IMAGE, build, commit, push])
    assert (
        message_on(repo, "stage/test") == "Updated ./src/base to use new image\n\n- my/image:v2.0.0"
    )
    assert outputs_of(outcomes, "commit") == {"commit": branch_head(repo, "stage/test")}


def test_commit_reference_example_composed_message(tmp_path: Path, repo: Path) -> None:
    commit = {
        "uses": "git-commit",
        "as": "commit",
        "config": {
            "path": "./out",
            "message": "${{ ctx.stage }}: ${{ outputs['update-image'].commitMessage }}\n",
        },
    }
    copy = {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out"}}
    push = {"uses": "git-push", "config": {"path": "./out"}}
    run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, SET_IMAGE, copy, commit, push])
    assert message_on(repo, "stage/test") == (
        "test: Updated ./src/base to use new image\n\n- my/image:v2.0.0"
    )


# --- git-commit: authors, signing ----------------------------------------------------------


def authors_on(repo: Path, branch: str) -> str:
    return git("log", "-1", "--format=%an <%ae>|%cn <%ce>", f"refs/heads/{branch}", cwd=repo)


WRITE = {"uses": "file-write", "config": {"path": "./out/f.txt", "contents": "x\n"}}


def test_the_clone_author_is_the_default_and_the_commit_author_wins(
    tmp_path: Path, repo: Path
) -> None:
    author = {"name": "Clone Author", "email": "clone@example.com"}
    run_steps(tmp_path, repo, [clone(SRC, OUT, author=author), WRITE, *COMMIT_AND_PUSH])
    assert authors_on(repo, "stage/test") == (
        "Clone Author <clone@example.com>|Clone Author <clone@example.com>"
    )
    commit = {
        "uses": "git-commit",
        "config": {
            "path": "./out",
            "message": "m",
            "author": {"name": "Step Author", "email": "step@example.com"},
        },
    }
    write = {"uses": "file-write", "config": {"path": "./out/g.txt", "contents": "y\n"}}
    push = {"uses": "git-push", "config": {"path": "./out"}}
    run_steps(tmp_path, repo, [clone(SRC, OUT, author=author), write, commit, push])
    assert authors_on(repo, "stage/test").startswith("Step Author <step@example.com>|")


def test_a_signing_key_in_a_step_config_is_refused(tmp_path: Path, repo: Path) -> None:
    author = {"name": "a", "email": "a@example.com", "signingKey": "-----BEGIN PGP..."}
    err = refusal(tmp_path, repo, [clone(SRC, OUT, author=author)])
    assert "FREIGHTLINE_GIT_SIGNING_KEY_FILE" in str(err)
    assert "PGP" not in str(err)


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, str, Path]:
    """A fresh ed25519 key without a passphrase: (armored secret key file, fingerprint, a
    GNUPGHOME that trusts its public key, for verifying)."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", "Signer <signer@example.com>",
         "ed25519", "sign", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-secret-keys"], check=True, capture_output=True, text=True
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    key = tmp_path / "signing.asc"
    key.write_bytes(
        subprocess.run(
            [*gpg, "--armor", "--export-secret-keys", fingerprint], check=True, capture_output=True
        ).stdout
    )
    return key, fingerprint, home


def test_the_worker_signing_key_signs_every_commit(
    tmp_path: Path, repo: Path, signing_key: tuple[Path, str, Path]
) -> None:
    key, fingerprint, home = signing_key
    author = {"name": "Signer", "email": "signer@example.com"}
    steps = [clone(SRC, OUT, author=author), WRITE, *COMMIT_AND_PUSH]
    run_steps(tmp_path, repo, steps, signing_key_file=key)
    verified = subprocess.run(
        ["git", "log", "-1", "--format=%G?|%GF|%GS", "refs/heads/stage/test"],
        cwd=repo, env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert verified == f"G|{fingerprint}|Signer <signer@example.com>"
    # Without the setting nothing is signed.
    write = {"uses": "file-write", "config": {"path": "./out/g.txt", "contents": "y\n"}}
    run_steps(tmp_path, repo, [clone(SRC, OUT), write, *COMMIT_AND_PUSH])
    assert git("log", "-1", "--format=%G?", "refs/heads/stage/test", cwd=repo) == "N"


def test_an_unusable_signing_key_is_an_error(tmp_path: Path, repo: Path) -> None:
    bad = tmp_path / "bad.asc"
    bad.write_text("not a key\n")
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [clone(SRC, OUT)], signing_key_file=bad)
    assert outcome_of(caught.value) == "Errored"
    assert "FREIGHTLINE_GIT_SIGNING_KEY_FILE" in str(caught.value)


# --- git-push: the reference page ------------------------------------------------------------


def test_push_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,  # "Clone, prepare the contents of ./out, etc..."
        WRITE,
        {
            "uses": "git-commit",
            "config": {"path": "./out", "message": "rendered updated manifests"},
        },
        {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    # A local repository has no Git provider: no commitURL, as in Kargo.
    assert outputs_of(outcomes, "push") == {
        "commit": branch_head(repo, "stage/test"),
        "branch": "stage/test",
    }
    assert message_on(repo, "stage/test") == "rendered updated manifests"


def test_push_reference_example_for_use_with_a_pull_request(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        WRITE,
        {
            "uses": "git-commit",
            "config": {"path": "./out", "message": "rendered updated manifests"},
        },
        {
            "uses": "git-push",
            "as": "push",
            "config": {"path": "./out", "generateTargetBranch": True},
        },
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    branch = "kargo/promotion/p-x"  # the promotion's name ("p:x" here; ":" is no branch character)
    assert outputs_of(outcomes, "push") == {"commit": branch_head(repo, branch), "branch": branch}
    # Kargo forces a generated branch (it belongs to this promotion): a retry that made a
    # new commit replaces the branch instead of being rejected.
    write = {"uses": "file-write", "config": {"path": "./out/f.txt", "contents": "changed\n"}}
    again = run_steps(tmp_path, repo, [*steps[:1], write, *steps[2:]])
    assert outputs_of(again, "push")["commit"] == branch_head(repo, branch)
    assert int(git("rev-list", "--count", f"refs/heads/{branch}", cwd=repo)) == 1


def test_push_reference_example_pushing_tags(tmp_path: Path, repo: Path) -> None:
    # The page's git-tag omits ``message``, which Kargo's own git-tag schema requires
    # (tests/test_git_tag.py shows it refused as written); added here.
    steps = [
        CLONE_SRC_AND_OUT,
        WRITE,
        {"uses": "git-commit", "config": {"path": "./out", "message": "m"}},
        {"uses": "git-tag", "config": {"path": "./out", "tag": "v1.0.0", "message": "v1.0.0"}},
        {"uses": "git-push", "as": "push", "config": {"path": "./out", "tag": "v1.0.0"}},
    ]
    run_steps(tmp_path, repo, steps)
    assert git("rev-parse", "--verify", "--quiet", "refs/tags/v1.0.0^{commit}", cwd=repo)


# --- git-push: tag, force, provider, exclusive fields ------------------------------------


def test_push_tag_pushes_once_and_a_retry_converges(tmp_path: Path, repo: Path) -> None:
    with git_environment(None, allow_local=True) as env:
        source = Clone.create(repo.as_uri(), tmp_path / "clone", env, allow_local=True)
        worktree = source.add_worktree(tmp_path / "wt", branch="main")
        worktree.run("tag", "v1.0.0")
        worktree.push_tag("v1.0.0")
        head = branch_head(repo, "main")
        assert git("rev-parse", "refs/tags/v1.0.0", cwd=repo) == head
        worktree.push_tag("v1.0.0")  # the same tag at the same commit: already pushed
        worktree.run("commit", "--quiet", "--allow-empty", "-m", "later")
        worktree.run("tag", "--force", "v1.0.0")
        with pytest.raises(Exception, match="git push"):
            worktree.push_tag("v1.0.0")  # tags do not move
        worktree.run("tag", "--annotate", "--message", "release", "v2.0.0")
        worktree.push_tag("v2.0.0")
        # A retry makes the annotated tag again: another tag object, the same commit.
        worktree.run("tag", "--force", "--annotate", "--message", "again", "v2.0.0")
        worktree.push_tag("v2.0.0")
    assert git("rev-parse", "refs/tags/v1.0.0", cwd=repo) == head
    assert git("rev-parse", "refs/tags/v2.0.0^{commit}", cwd=repo) != head


def test_force_replaces_the_remote_branch(tmp_path: Path, repo: Path) -> None:
    first = branch_head(repo, "main") or ""
    add_to_main(repo, {"later.txt": "a commit ours does not have\n"}, {})
    steps = [
        clone({"commit": first, "path": "./src"}),
        {"uses": "file-write", "config": {"path": "./src/f.txt", "contents": "x\n"}},
        {"uses": "git-commit", "config": {"path": "./src", "message": "ours"}},
        {
            "uses": "git-push",
            "as": "push",
            "config": {"path": "./src", "targetBranch": "main", "force": True},
        },
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    assert outputs_of(outcomes, "push") == {"commit": branch_head(repo, "main"), "branch": "main"}
    assert "later.txt" not in files_on(repo, "main")
    assert git("rev-parse", "refs/heads/main^", cwd=repo) == first


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"tag": "v1", "force": True}, "tag and force are mutually exclusive"),
        ({"tag": "v1", "targetBranch": "x"}, "targetBranch and tag are mutually exclusive"),
        (
            {"generateTargetBranch": True, "targetBranch": "x"},
            "generateTargetBranch and targetBranch are mutually exclusive",
        ),
        ({"provider": "sourcehut"}, "provider"),
        ({"tag": "v9"}, 'tag "v9" does not exist'),
    ],
)
def test_push_refuses_what_kargo_refuses(
    tmp_path: Path, repo: Path, config: dict[str, Any], reason: str
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        WRITE,
        {"uses": "git-commit", "config": {"path": "./out", "message": "m"}},
        {"uses": "git-push", "config": {"path": "./out", **config}},
    ]
    assert reason in str(refusal(tmp_path, repo, steps))


def test_commit_urls_as_kargos_providers_make_them() -> None:
    sha = "abc123"
    assert commit_url("https://github.com/Org/Repo.git", sha) == (
        "https://github.com/org/repo/commit/abc123"
    )
    assert commit_url("https://gitlab.com/group/sub/repo", sha) == (
        "https://gitlab.com/group/sub/repo/-/commit/abc123"
    )
    assert commit_url("https://bitbucket.org/team/repo.git", sha) == (
        "https://bitbucket.org/team/repo/commits/abc123"
    )
    assert commit_url("https://gitea.example.com/o/r", sha) == (
        "https://gitea.example.com/o/r/commit/abc123"
    )
    assert commit_url("https://dev.azure.com/org/proj/_git/repo", sha) == (
        "https://dev.azure.com/org/proj/_git/repo/commit/abc123"
    )
    # An unknown host: no URL unless the provider is named.
    assert commit_url("https://git.example.com/o/r.git", sha) is None
    assert commit_url("https://git.example.com/o/r.git", sha, "gitea") == (
        "https://git.example.com/o/r/commit/abc123"
    )
    assert commit_url("git@github.com:o/r.git", sha) is None  # no host Kargo parses
    assert commit_url("/srv/git/r.git", sha) is None


@pytest.fixture
def https_repo(tmp_path: Path, repo: Path) -> Iterator[str]:
    """``repo`` served read-only over HTTPS (git's dumb protocol) with a self-signed
    certificate: its URL."""
    git("update-server-info", cwd=repo)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(repo.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{repo.name}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_insecure_skip_tls_verify_skips_certificate_checks(
    tmp_path: Path, repo: Path, https_repo: str
) -> None:
    variables = [{"name": "gitRepo", "value": https_repo}]
    checked = clone({"branch": "main", "path": "./src"})
    with pytest.raises(ApplicationError, match="certificate"):
        run_steps(tmp_path, repo, [checked], variables=variables)
    # Past TLS, git meets the server's next limit: a dumb HTTP server serves no shallow
    # clone. That is the point: the certificate was not checked.
    skipped = clone({"branch": "main", "path": "./src"}, insecureSkipTLSVerify=True)
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [skipped], variables=variables)
    assert "certificate" not in str(caught.value)
    assert "shallow" in str(caught.value)
