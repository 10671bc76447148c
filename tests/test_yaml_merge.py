"""yaml-merge, as Kargo's: the example on its Kargo reference page (the verbatim copy in
``tests/reference/kargo-steps/``) runs through the worktree runner against a real bare
repository with the page's sample files and must give the page's output; then kustomize's
merge rules that Kargo's step inherits, and the errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sandbox.gitops import KARGO_DEMO, create_bare_repo
from tests.kargo_pages import assert_all_covered, blocks, example
from tests.test_file_steps import CLONE_SRC_AND_OUT, COMMIT_AND_PUSH, add_to_main, outcome_of
from tests.test_file_steps import refused as refused_in
from tests.test_file_steps import run_steps as run_in
from tests.test_toml_steps import raw_file

BASE = """\
# Base values: comments and quoting stay.
image:
  repository: "nginx"
  tag: '1.0'   # the tag
replicas: 1
ports:
- 80
- 443
resources:
  limits: {cpu: 100m}
zeta: base-only
"""
OVERRIDE = """\
replicas: 3
ports:
- 8080
resources:
  limits:
    memory: 128Mi
  requests: null
image:
  tag: null
beta: new
alpha:
  nested: new
  gone: ~
"""


def page_files() -> tuple[dict[str, str], dict[str, str]]:
    """The page's sample input files, and its expected output files, by path."""
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for block in blocks("yaml-merge"):
        if block.label is None:
            continue
        # The first mention of a path is an input; a path named again is the output.
        (outputs if block.label in inputs else inputs)[block.label] = block.text
    return inputs, outputs


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    for path, text in page_files()[0].items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(text)
    (seed / "base.yaml").write_text(BASE)
    (seed / "override.yaml").write_text(OVERRIDE)
    (seed / "empty.yaml").write_text("")
    (seed / "list.yaml").write_text("- a\n")
    (seed / "scalar-image.yaml").write_text("image: nginx\n")
    (seed / "bad.yaml").write_text("a: [\n")
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


def merge(
    tmp_path: Path, repo: Path, in_files: list[str], **extra: Any
) -> tuple[dict[str, Any], bytes]:
    step = {
        "uses": "yaml-merge",
        "as": "merge",
        "config": {"inFiles": in_files, "outFile": "./out/merged.yaml", **extra},
    }
    outcomes = run_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step, *COMMIT_AND_PUSH])
    return outcomes[1].outputs, raw_file(repo, "stage/test", "merged.yaml")


def test_yaml_merge_page_examples_are_all_tested() -> None:
    assert_all_covered("yaml-merge", ["Common Usage"])


def test_yaml_merge_common_usage(tmp_path: Path, repo: Path) -> None:
    page_example = example("yaml-merge", "Common Usage")
    inputs, outputs = page_files()
    assert len(inputs) == 3 and list(outputs) == ["charts/my-chart/values.yaml"]
    outcomes = run_in(
        tmp_path, repo, [*page_example.steps, *COMMIT_AND_PUSH], variables=page_example.variables
    )
    (merged,) = [o for o in outcomes if o.uses == "yaml-merge"]
    assert merged.outputs == {
        "commitMessage": "Merged 3 YAML files to ./out/charts/my-chart/values.yaml\n"
        "- ./src/charts/my-chart/values.yaml\n"
        "- ./src/charts/qa/values.yaml\n"
        "- ./src/charts/qa/cluster-a/values.yaml"
    }
    expected = outputs["charts/my-chart/values.yaml"]
    assert raw_file(repo, "stage/test", "charts/my-chart/values.yaml").decode() == expected


def test_maps_merge_lists_and_scalars_replace_nulls_remove(tmp_path: Path, repo: Path) -> None:
    outputs, merged = merge(tmp_path, repo, ["./src/base.yaml", "./src/override.yaml"])
    assert outputs == {
        "commitMessage": "Merged 2 YAML files to ./out/merged.yaml\n- ./src/base.yaml\n"
        "- ./src/override.yaml"
    }
    # The base's order, comments and quoting; new keys after, in name order; lists whole.
    assert merged.decode() == (
        "# Base values: comments and quoting stay.\n"
        "image:\n"
        '  repository: "nginx"\n'
        "replicas: 3\n"
        "ports:\n"
        "- 8080\n"
        "resources:\n"
        "  limits: {cpu: 100m, memory: 128Mi}\n"
        "zeta: base-only\n"
        "alpha:\n"
        "  nested: new\n"
        "beta: new\n"
    )


def test_one_file_is_written_and_missing_files_may_be_skipped(tmp_path: Path, repo: Path) -> None:
    outputs, merged = merge(
        tmp_path,
        repo,
        ["./src/none.yaml", "./src/charts/qa/values.yaml", "./src/empty.yaml"],
        ignoreMissingFiles=True,
    )
    assert outputs == {
        "commitMessage": "Merged 2 YAML files to ./out/merged.yaml\n"
        "- ./src/charts/qa/values.yaml\n- ./src/empty.yaml"
    }
    assert merged == b"service:\n  enabled: true\n"
    outputs, merged = merge(tmp_path, repo, ["./src/charts/qa/values.yaml"])
    assert outputs == {"commitMessage": "Wrote ./src/charts/qa/values.yaml to ./out/merged.yaml"}


def test_all_files_missing_writes_an_empty_file(tmp_path: Path, repo: Path) -> None:
    step = {
        "uses": "yaml-merge",
        "as": "merge",
        "config": {
            "inFiles": ["./src/none.yaml"],
            "outFile": "./out/empty.yaml",
            "ignoreMissingFiles": True,
        },
    }
    outcomes = run_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step, *COMMIT_AND_PUSH])
    assert outcomes[1].outputs == {}
    assert raw_file(repo, "stage/test", "empty.yaml") == b""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"inFiles": ["./src/none.yaml"]}, 'input file "./src/none.yaml" not found'),
        (
            {"inFiles": ["./src/base.yaml", "./src/bad.yaml"]},
            'error reading input file "./src/bad.',
        ),
        (
            {"inFiles": ["./src/base.yaml", "./src/scalar-image.yaml"]},
            'wrong node kind at "image": expected a map but got a scalar',
        ),
        ({"inFiles": ["./src/base.yaml", "./src/list.yaml"]}, "expected a map but got a list"),
        ({"inFiles": ["../outside.yaml"]}, "leaves the work tree"),
        ({"inFiles": ["./src/base.yaml"], "outFile": "../x.yaml"}, "leaves the work tree"),
        ({"inFiles": ["./src/base.yaml"], "outFile": "/tmp/x.yaml"}, "is absolute"),
        ({"inFiles": ["./src/base.yaml"], "outFile": "./src"}, "is a directory"),
        ({"inFiles": ["./src/base.yaml"], "outFile": "./out/.git"}, "git's metadata"),
        ({"inFiles": ["./src/base.yaml"], "outFile": "./src/base.yaml/x"}, "error writing merged"),
        ({"inFiles": []}, "inFiles: List should have at least 1 item"),
        ({"inFiles": ["./src/base.yaml"], "outFile": ""}, "outFile: String should have at least"),
    ],
)
def test_yaml_merge_errors_are_errored(
    tmp_path: Path, repo: Path, config: dict[str, Any], message: str
) -> None:
    config = {"outFile": "./out/merged.yaml", **config}
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": "yaml-merge", "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


def test_yaml_merge_does_not_write_through_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("a: 1\n")
    repo = create_bare_repo(tmp_path / "gitops.git")
    add_to_main(repo, {"in.yaml": "b: 2\n"}, {"link.yaml": outside})
    for config in (
        {"inFiles": ["./src/in.yaml"], "outFile": "./src/link.yaml"},
        {"inFiles": ["./src/link.yaml"], "outFile": "./out/x.yaml"},
    ):
        step = {"uses": "yaml-merge", "config": config}
        err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
        assert "leaves the work tree" in str(err) and outcome_of(err) == "Errored"
    assert outside.read_text() == "a: 1\n"
