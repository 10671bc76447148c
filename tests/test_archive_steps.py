"""tar and untar, as Kargo's: every example on their Kargo reference pages (the verbatim copies
in ``tests/reference/kargo-steps/``) runs through the worktree runner against a real bare
repository, then what a hostile archive tries (escaping paths and links, bombs), the limits,
and the errors."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

import activities.archive_steps as archive_steps
from activities.worktree import WorktreeActivities
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import (
    PromotionPhase,
    StepOutcome,
    WorktreeBatch,
    plan_promotion,
)
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo, git
from tests.kargo_pages import assert_all_covered, example
from tests.pipelines import commit_freight, single_stage_project, with_freight
from tests.test_file_steps import (
    CLONE_SRC_AND_OUT,
    GIT_REPO,
    add_to_main,
    files_on,
    outcome_of,
)
from tests.test_toml_steps import raw_file

CHART_REPO = "https://example.github.io/helm-charts"
CHART_VERSION = "1.2.3"

# The work tree of a page example that clones nothing: main checked out at its root, the
# example's steps, then the result committed and pushed to stage/test to be looked at.
CLONE_ROOT = {
    "uses": "git-clone",
    "config": {"repoURL": "${{ vars.gitRepo }}", "checkout": [{"branch": "main", "path": "."}]},
}
PUSH_ROOT = [
    {"uses": "git-commit", "config": {"path": ".", "message": "result"}},
    {"uses": "git-push", "config": {"path": ".", "targetBranch": "stage/test"}},
]


def member(name: str, data: bytes = b"", **fields: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes], gzipped: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzipped else "w") as out:
        for info, data in members:
            out.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


BUNDLE = archive(
    member("bundle", type=tarfile.DIRTYPE, mode=0o755),
    member("bundle/app.yaml", b"kind: App\n"),
    member("bundle/logs/debug.log", b"log\n"),
    member("bundle/temp/x.txt", b"scratch\n"),
    member("bundle/.DS_Store", b"finder\n"),
    member("bundle/sub/keep.yaml", b"keep: true\n"),
    member("bundle/run.sh", b"#!/bin/sh\n", mode=0o755),
    member("bundle/link.yaml", type=tarfile.SYMTYPE, linkname="app.yaml"),
)
BUNDLE_FILES = {
    "app.yaml",
    "logs/debug.log",
    "temp/x.txt",
    ".DS_Store",
    "sub/keep.yaml",
    "run.sh",
    "link.yaml",
}


def repo_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    for path, data in files.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_bytes(data)
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return repo_with(
        tmp_path,
        {
            "artifacts/bundle.tar.gz": BUNDLE,
            "extracted/old.txt": b"replaced by the extraction\n",
            "source-code/main.py": b"print('hi')\n",
            "source-code/bin/run.sh": b"#!/bin/sh\n",
            "source-code/temp/cache.txt": b"cache\n",
            "source-code/.DS_Store": b"finder\n",
            "source-code/nested/.DS_Store": b"finder\n",
        },
    )


def freight_of(repo: Path, charts: tuple[str, ...] = ()) -> Freight:
    """A Freight for main's head (and charts ``name`` of CHART_REPO at CHART_VERSION)."""
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
        "commits": [{"repoURL": repo.as_uri(), "id": branch_head(repo, "main"), "branch": "main"}],
        "charts": [{"repoURL": CHART_REPO, "name": n, "version": CHART_VERSION} for n in charts],
    }
    name = freight_id(Freight.model_validate(body))
    body["metadata"]["name"] = name
    body["alias"] = freight_alias(name)
    return Freight.model_validate(body)


def run_steps(
    tmp_path: Path,
    repo: Path,
    steps: list[dict[str, Any]],
    *,
    variables: Any = GIT_REPO,
    charts: tuple[str, ...] = (),
) -> list[StepOutcome]:
    freight = freight_of(repo, charts)
    resources = single_stage_project(repo, steps, variables=variables)
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(range(len(plan.steps))))
    scratch = Path(tempfile.mkdtemp(dir=tmp_path, prefix="scratch-"))
    activity = WorktreeActivities(scratch_root=scratch, allow_local_repositories=True)
    outcomes: list[StepOutcome] = ActivityEnvironment().run(activity.run_worktree_steps, batch)
    return outcomes


def refused(tmp_path: Path, repo: Path, steps: list[dict[str, Any]]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, steps)
    return caught.value


def under(repo: Path, branch: str, folder: str) -> set[str]:
    prefix = folder.rstrip("/") + "/"
    return {f.removeprefix(prefix) for f in files_on(repo, branch) if f.startswith(prefix)}


def mode_of(repo: Path, branch: str, path: str) -> str:
    return git("ls-tree", f"refs/heads/{branch}", path, cwd=repo).split()[0]


# --- untar: the page's examples --------------------------------------------------------------

UNTAR_EXPECTED = {
    "Basic Usage": {f"bundle/{f}" for f in BUNDLE_FILES},
    "Strip Path Components": BUNDLE_FILES,
    "Ignore Patterns": {
        f"bundle/{f}" for f in BUNDLE_FILES - {"logs/debug.log", "temp/x.txt", ".DS_Store"}
    },
}


def test_untar_page_examples_are_all_tested() -> None:
    assert_all_covered("untar", [*UNTAR_EXPECTED, "Extract helm chart dependency"])


@pytest.mark.parametrize("heading", sorted(UNTAR_EXPECTED))
def test_untar_page_example(tmp_path: Path, repo: Path, heading: str) -> None:
    page_example = example("untar", heading)
    outcomes = run_steps(tmp_path, repo, [CLONE_ROOT, *page_example.steps, *PUSH_ROOT])
    assert [o.outputs for o in outcomes if o.uses == "untar"] == [{}]
    # outPath is replaced whole: extracted/old.txt is gone.
    assert under(repo, "stage/test", "extracted") == UNTAR_EXPECTED[heading]
    prefix = "extracted/" if heading == "Strip Path Components" else "extracted/bundle/"
    assert raw_file(repo, "stage/test", f"{prefix}app.yaml") == b"kind: App\n"
    assert mode_of(repo, "stage/test", f"{prefix}link.yaml") == "120000"  # a symlink
    assert mode_of(repo, "stage/test", f"{prefix}run.sh") == "100755"


def test_untar_extract_helm_chart_dependency(tmp_path: Path) -> None:
    """The page's last example. Its helm-update-chart step (its own step, with its own tests
    against a chart repository) is left out: its effect, the chart's archive in ``charts/``
    beside the former unpacked chart, is in the repository already."""
    chart = archive(
        member("myChart/Chart.yaml", b"name: myChart\nversion: 1.2.3\n"),
        member("myChart/templates/deploy.yaml", b"kind: Deployment\n"),
    )
    umbrella = "pathToMyUmbrellaChart"
    repo = repo_with(
        tmp_path,
        {
            f"{umbrella}/Chart.yaml": b"name: umbrella\n",
            f"{umbrella}/charts/myChart-{CHART_VERSION}.tgz": chart,
            f"{umbrella}/charts/myChart/Chart.yaml": b"name: myChart\nversion: 1.0.0\n",
            f"{umbrella}/charts/myChart/stale.yaml": b"from the former version\n",
        },
    )
    page_example = example("untar", "Extract helm chart dependency")
    steps = [s for s in page_example.steps if s["uses"] != "helm-update-chart"]
    assert len(steps) == len(page_example.steps) - 1
    steps += [
        {"uses": "git-commit", "config": {"path": "./target", "message": "chart"}},
        {"uses": "git-push", "config": {"path": "./target", "targetBranch": "stage/test"}},
    ]
    outcomes = run_steps(
        tmp_path,
        repo,
        steps,
        variables=page_example.variables,
        charts=("myChart", "kube-prometheus-stack"),  # the page asks chartFrom for both
    )
    assert [o.alias for o in outcomes if o.uses in ("untar", "delete")] == [
        "deleteFormerChart",
        "untar",
        "deleteTgz",
    ]
    assert under(repo, "stage/test", f"{umbrella}/charts") == {
        "myChart/myChart/Chart.yaml",
        "myChart/myChart/templates/deploy.yaml",
    }


# --- untar: hostile archives -----------------------------------------------------------------


def test_untar_skips_every_member_that_could_leave_out_path(tmp_path: Path) -> None:
    hostile = archive(
        member("safe.txt", b"safe\n"),
        member("../evil-parent.txt", b"evil\n"),
        member("/evil-absolute.txt", b"evil\n"),
        member("./dot.txt", b"skipped, as Kargo skips ./ names\n"),
        member("sub/../../evil-climb.txt", b"evil\n"),
        member("back\\slash.txt", b"evil\n"),
        member("up", type=tarfile.SYMTYPE, linkname=".."),
        member("up/through-up.txt", b"lands in outPath: the link was skipped\n"),
        member("out", type=tarfile.SYMTYPE, linkname="../../../.."),
        member("abs", type=tarfile.SYMTYPE, linkname="/etc"),
        member("abs/through-abs.txt", b"lands in outPath: the link was skipped\n"),
        member("hard", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        member("fifo", type=tarfile.FIFOTYPE),
        member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("inside", type=tarfile.SYMTYPE, linkname="safe.txt"),
        member("dirlink", type=tarfile.SYMTYPE, linkname="sub"),
        member("sub/nested.txt", b"nested\n"),
        member("dirlink/via-link.txt", b"written inside, through an inside link\n"),
        member(".git/config", b"[core]\n\tfsmonitor = evil\n"),
        member("sub/.git", b"gitdir: /elsewhere\n"),
        member("setuid", b"x", mode=0o4755),
    )
    repo = repo_with(tmp_path, {"hostile.tgz": hostile})
    steps = [
        CLONE_ROOT,
        {"uses": "untar", "config": {"inPath": "./hostile.tgz", "outPath": "./x"}},
        *PUSH_ROOT,
    ]
    run_steps(tmp_path, repo, steps)
    assert under(repo, "stage/test", "x") == {
        "safe.txt",
        "inside",
        "dirlink",
        "sub/nested.txt",
        "sub/via-link.txt",
        "setuid",
        "up/through-up.txt",
        "abs/through-abs.txt",
    }
    assert not [p for p in tmp_path.rglob("evil*")], "a member was written outside outPath"
    assert mode_of(repo, "stage/test", "x/setuid") == "100755"  # no set-id bit survives


def test_an_archive_that_contradicts_itself_is_errored(tmp_path: Path) -> None:
    clash = archive(member("a", b"a file\n"), member("a/b", b"where a directory should be\n"))
    repo = repo_with(tmp_path, {"clash.tgz": clash})
    step = {"uses": "untar", "config": {"inPath": "./src/clash.tgz", "outPath": "./src/x"}}
    err = refused(tmp_path, repo, [CLONE_SRC, step])
    assert 'failed to extract tar file "./src/clash.tgz"' in str(err)
    assert outcome_of(err) == "Errored"


def test_untar_bounds_what_an_archive_may_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real 51 MiB file of zeros: 50 KiB gzipped, past Kargo's 50 MiB limit for one file.
    big = archive(member("zeros.bin", bytes(51 * 1024 * 1024)))
    assert len(big) < 1024 * 1024
    many = archive(*(member(f"f{i}.txt", b"0123456789") for i in range(30)))
    repo = repo_with(tmp_path, {"big.tgz": big, "many.tgz": many, "x/old.txt": b"kept\n"})

    def untar(name: str) -> Any:
        step = {"uses": "untar", "config": {"inPath": f"./src/{name}", "outPath": "./src/x"}}
        return refused(tmp_path, repo, [CLONE_SRC, step])

    err = untar("big.tgz")
    assert "exceeds the size limit of 52428800 bytes" in str(err)
    assert outcome_of(err) == "Errored"
    monkeypatch.setattr(archive_steps, "MAX_TOTAL_SIZE", 250)
    assert "total size would exceed the limit of 250 bytes" in str(untar("many.tgz"))
    monkeypatch.setattr(archive_steps, "MAX_TOTAL_SIZE", 10**9)
    monkeypatch.setattr(archive_steps, "MAX_ENTRIES", 20)
    assert "more than 20 entries" in str(untar("many.tgz"))
    # A failed extraction leaves nothing behind: outPath as it was, no staging directory.
    failing = {
        "uses": "untar",
        "continueOnError": True,
        "config": {"inPath": "./many.tgz", "outPath": "./x"},
    }
    always = [{**step, "if": "${{ always() }}"} for step in PUSH_ROOT]
    outcomes = run_steps(tmp_path, repo, [CLONE_ROOT, failing, *always])
    assert outcomes[1].status.value == "Errored"
    assert under(repo, "stage/test", "x") == {"old.txt"}
    assert not [f for f in files_on(repo, "stage/test") if ".untar-" in f]


CLONE_SRC = {
    "uses": "git-clone",
    "config": {"repoURL": "${{ vars.gitRepo }}", "checkout": [{"branch": "main", "path": "./src"}]},
}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"inPath": "./src/none.tgz", "outPath": "./x"},
            'failed to open tar file "./src/none.tgz"',
        ),
        ({"inPath": "./src/source-code", "outPath": "./x"}, "failed to open tar file"),
        ({"inPath": "./src/source-code/main.py", "outPath": "./x"}, "error reading tar"),
        ({"inPath": "./src/artifacts/bundle.tar.gz", "outPath": "."}, "the whole work tree"),
        ({"inPath": "../bundle.tgz", "outPath": "./x"}, "leaves the work tree"),
        ({"inPath": "./src/artifacts/bundle.tar.gz", "outPath": "/x"}, "is absolute"),
        ({"inPath": "./src/artifacts/bundle.tar.gz", "outPath": "./src/../../x"}, "leaves the"),
        ({"inPath": "./a.tgz", "outPath": "./x", "stripComponents": -1}, "greater than or equal"),
        ({"inPath": "./a.tgz", "outPath": "./x", "ignore": ""}, "ignore: String should have"),
        ({"inPath": "./a.tgz"}, "outPath: Field required"),
        ({"inPath": "./src/artifacts/bundle.tar.gz", "outPath": "./src/.git"}, "git's metadata"),
    ],
)
def test_untar_errors_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    err = refused(tmp_path, repo, [CLONE_SRC, {"uses": "untar", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


# --- tar: the page's examples ----------------------------------------------------------------

TAR_EXPECTED = {
    "Basic Usage": (
        "artifacts/bundle.tar.gz",
        True,
        {"main.py", "bin/run.sh", "temp/cache.txt", ".DS_Store", "nested/.DS_Store"},
    ),
    "Uncompressed Archive": (
        "artifacts/bundle.tar",
        False,
        {"main.py", "bin/run.sh", "temp/cache.txt", ".DS_Store", "nested/.DS_Store"},
    ),
    "Ignore Patterns": ("artifacts/bundle.tar.gz", True, {"main.py", "bin/run.sh"}),
}


def test_tar_page_examples_are_all_tested() -> None:
    assert_all_covered("tar", TAR_EXPECTED)


@pytest.mark.parametrize("heading", sorted(TAR_EXPECTED))
def test_tar_page_example(tmp_path: Path, repo: Path, heading: str) -> None:
    path, gzipped, files = TAR_EXPECTED[heading]
    page_example = example("tar", heading)
    outcomes = run_steps(tmp_path, repo, [CLONE_ROOT, *page_example.steps, *PUSH_ROOT])
    assert [o.outputs for o in outcomes if o.uses == "tar"] == [{}]
    data = raw_file(repo, "stage/test", path)
    assert data.startswith(b"\x1f\x8b") is gzipped
    with tarfile.open(fileobj=io.BytesIO(data)) as created:
        names = {m.name for m in created.getmembers() if m.isreg()}
        assert names == files
        assert created.extractfile("main.py").read() == b"print('hi')\n"  # type: ignore[union-attr]
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in created.getmembers())


def test_tar_then_untar_round_trips_and_archives_are_reproducible(
    tmp_path: Path, repo: Path
) -> None:
    steps = [
        CLONE_ROOT,
        {
            "uses": "tar",
            "config": {"inPath": "./source-code", "outPath": "./a/one.tgz", "gzip": True},
        },
        # Same contents, a new modification time and mode: the same archive bytes.
        {
            "uses": "file-write",
            "config": {
                "path": "./source-code/main.py",
                "contents": "print('hi')\n",
                "overwrite": True,
            },
        },
        {
            "uses": "tar",
            "config": {"inPath": "./source-code", "outPath": "./a/two.tgz", "gzip": True},
        },
        {"uses": "tar", "config": {"inPath": "./source-code/main.py", "outPath": "./a/file.tar"}},
        {"uses": "untar", "config": {"inPath": "./a/one.tgz", "outPath": "./back"}},
        {"uses": "untar", "config": {"inPath": "./a/file.tar", "outPath": "./single"}},
        *PUSH_ROOT,
    ]
    run_steps(tmp_path, repo, steps)
    assert raw_file(repo, "stage/test", "a/one.tgz") == raw_file(repo, "stage/test", "a/two.tgz")
    assert under(repo, "stage/test", "back") == under(repo, "main", "source-code")
    assert mode_of(repo, "stage/test", "back/main.py") == "100644"
    assert under(repo, "stage/test", "single") == {"main.py"}


def test_tar_archives_symlinks_as_links_and_never_reads_outside(tmp_path: Path, repo: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("the worker's own file\n")
    add_to_main(repo, {}, {"source-code/leak": outside, "source-code/ok": "main.py"})
    steps = [
        CLONE_ROOT,
        {"uses": "tar", "config": {"inPath": "./source-code", "outPath": "./a.tar"}},
        *PUSH_ROOT,
    ]
    run_steps(tmp_path, repo, steps)
    with tarfile.open(fileobj=io.BytesIO(raw_file(repo, "stage/test", "a.tar"))) as created:
        links = {m.name: m.linkname for m in created.getmembers() if m.issym()}
        assert links == {"leak": str(outside), "ok": "main.py"}
        assert b"worker's own" not in raw_file(repo, "stage/test", "a.tar")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inPath": "./src/none", "outPath": "./x.tar"}, 'input path "./src/none" does not exist'),
        ({"inPath": "../", "outPath": "./x.tar"}, "leaves the work tree"),
        ({"inPath": "./src/source-code", "outPath": "../x.tar"}, "leaves the work tree"),
        ({"inPath": "./src/source-code", "outPath": "./src"}, "is a directory"),
        ({"inPath": "./src/source-code", "outPath": "./src/.git/x.tar"}, "git's metadata"),
        ({"inPath": "./src", "outPath": "./x.tar", "ignore": ""}, "ignore: String should have"),
        ({"inPath": "./src", "outPath": "./x.tar", "gzip": "maybe"}, "gzip: Input should be"),
    ],
)
def test_tar_errors_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    err = refused(tmp_path, repo, [CLONE_SRC, {"uses": "tar", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


def test_tar_bounds_what_it_reads(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_steps, "MAX_FILE_SIZE", 5)
    step = {"uses": "tar", "config": {"inPath": "./src/source-code", "outPath": "./x.tar"}}
    err = refused(tmp_path, repo, [CLONE_SRC, step])
    assert "exceeds the size limit of 5 bytes" in str(err) and outcome_of(err) == "Errored"


# --- a manifest that uses them passes apply and promotes --------------------------------------


@pytest.mark.integration
async def test_a_stage_using_these_steps_applies_and_promotes(
    client: Client, worker: Worker, repo: Path
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "untar",
            "config": {
                "inPath": "./src/artifacts/bundle.tar.gz",
                "outPath": "./out/unpacked",
                "stripComponents": 1,
                "ignore": "*.log\n",
            },
        },
        {
            "uses": "file-write",
            "config": {"path": "./out/override.yaml", "contents": "replicas: 2\n"},
        },
        {
            "uses": "yaml-merge",
            "as": "merge",
            "config": {
                "inFiles": ["./src/base/deploy.yaml", "./out/override.yaml"],
                "outFile": "./out/deploy.yaml",
            },
        },
        {
            "uses": "tar",
            "config": {"inPath": "./out/unpacked", "outPath": "./out/bundle.tgz", "gzip": True},
        },
        {"uses": "git-commit", "as": "commit", "config": {"path": "./out", "message": "built"}},
        {
            "uses": "git-tag",
            "as": "tag",
            "config": {
                "path": "./out",
                "tag": "test-${{ ctx.targetFreight.alias }}",
                "message": "m",
            },
        },
        {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
    ]
    freight = commit_freight(repo, branch_head(repo, "main") or "")
    await apply_project(
        client, with_freight(single_stage_project(repo, steps, variables=GIT_REPO), freight)
    )
    result = await (await start_promotion(client, "p", "test", freight.metadata.name)).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["tag"] == {"commit": result.outputs["push"]["commit"]}
    assert result.outputs["merge"]["commitMessage"].startswith("Merged 2 YAML files")
    files = files_on(repo, "stage/test")
    assert {"deploy.yaml", "bundle.tgz", "unpacked/app.yaml"} <= files
    assert "unpacked/logs/debug.log" not in files
