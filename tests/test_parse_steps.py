"""yaml-parse and json-parse, as Kargo's, and file-write's examples (which use yaml-parse,
asYAML and asJSON): every example on their Kargo reference pages runs through the worktree
runner against a real bare repository (``REPO_URL`` for Kargo's example repository), with
the sample input the page gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo, show_file
from tests.pipelines import commit_freight, single_stage_project, with_freight
from tests.test_file_steps import CLONE_SRC_AND_OUT, COMMIT_AND_PUSH, GIT_REPO, outcome_of
from tests.test_file_steps import refused as refused_in
from tests.test_file_steps import run_steps as run_in

APPS = """\
apps:
  test:
    replicas: 2
    image: {repository: nginx, tag: "1.29.1"}
    hosts: [test.example.com, test.example.org]
  prod:
    replicas: 5
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """kargo-demo plus the sample inputs of Kargo's pages."""
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    (seed / "charts/my-chart").mkdir(parents=True)
    (seed / "charts/my-chart/values.yaml").write_text('image:\n  tag: "v1.2.3"\n')
    (seed / "config.json").write_text('{\n  "image": {\n    "tag": "v1.2.3"\n  }\n}\n')
    (seed / "apps.yaml").write_text(APPS)
    (seed / "list.yaml").write_text("- a\n- b\n")
    (seed / "empty.yaml").write_text("")
    (seed / "bad.json").write_text("{not json")
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


def run_steps(tmp_path: Path, repo: Path, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {o.alias: o.outputs for o in run_in(tmp_path, repo, steps)}


@pytest.mark.parametrize(
    ("uses", "path"),
    [("yaml-parse", "./src/charts/my-chart/values.yaml"), ("json-parse", "./src/config.json")],
)
def test_parse_reference_examples(tmp_path: Path, repo: Path, uses: str, path: str) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": uses,
            "as": "values",
            "config": {
                "path": path,
                "outputs": [{"name": "imageTag", "fromExpression": "image.tag"}],
            },
        },
    ]
    assert run_steps(tmp_path, repo, steps)["values"] == {"imageTag": "v1.2.3"}


def test_file_write_reference_examples(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        # "Writing YAML", as on the page but for the path: ./src/apps.yaml.
        {
            "uses": "yaml-parse",
            "as": "read-config",
            "config": {
                "path": "./src/apps.yaml",
                "outputs": [{"name": "appConfig", "fromExpression": "apps[ctx.stage]"}],
            },
        },
        {
            "uses": "file-write",
            "config": {
                "path": "./out/app-config.yaml",
                "contents": "${{ asYAML(outputs['read-config'].appConfig) }}",
                "overwrite": True,
            },
        },
        # "Writing JSON".
        {
            "uses": "file-write",
            "config": {
                "path": "./out/app-config.json",
                "contents": "${{ asJSON(outputs['read-config'].appConfig) }}",
                "overwrite": True,
            },
        },
        *COMMIT_AND_PUSH,
    ]
    outputs = run_steps(tmp_path, repo, steps)
    expected = {
        "replicas": 2,
        "image": {"repository": "nginx", "tag": "1.29.1"},
        "hosts": ["test.example.com", "test.example.org"],
    }
    assert outputs["read-config"] == {"appConfig": expected}
    # go-yaml v3's layout (sorted keys, four spaces) and Go's indented JSON, as Kargo writes.
    assert show_file(repo, "stage/test", "app-config.yaml") == (
        "hosts:\n"
        "    - test.example.com\n"
        "    - test.example.org\n"
        "image:\n"
        "    repository: nginx\n"
        "    tag: 1.29.1\n"
        "replicas: 2"
    )
    text = show_file(repo, "stage/test", "app-config.json")
    assert json.loads(text) == expected
    assert text.startswith('{\n  "hosts": [\n    "test.example.com",')


def test_expressions_see_the_document_and_ctx(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {
            "uses": "yaml-parse",
            "as": "apps",
            "config": {
                "path": "./src/apps.yaml",
                "outputs": [
                    {"name": "names", "fromExpression": "keys(apps)"},
                    {"name": "total", "fromExpression": "apps.test.replicas + apps.prod.replicas"},
                    {"name": "stage", "fromExpression": "ctx.stage"},
                    {"name": "missing", "fromExpression": "apps.uat ?? 'none'"},
                ],
            },
        },
    ]
    outputs = run_steps(tmp_path, repo, steps)["apps"]
    assert sorted(outputs["names"]) == ["prod", "test"]
    assert outputs["total"] == 7 and outputs["stage"] == "test" and outputs["missing"] == "none"


@pytest.mark.parametrize(
    ("uses", "config", "message"),
    [
        ("yaml-parse", {"path": "./src/none.yaml"}, 'error reading YAML file "./src/none.yaml"'),
        ("yaml-parse", {"path": "./src/empty.yaml"}, "could not parse empty YAML file"),
        ("yaml-parse", {"path": "./src/list.yaml"}, "does not hold a map at its top"),
        ("json-parse", {"path": "./src/bad.json"}, 'could not parse JSON file "./src/bad.json"'),
        ("json-parse", {"path": "../x.json"}, "leaves the work tree"),
        ("yaml-parse", {"path": "./src/apps.yaml", "expr": "x"}, "expr: Extra inputs"),
    ],
)
def test_parse_errors_are_errored(
    tmp_path: Path, repo: Path, uses: str, config: dict[str, Any], message: str
) -> None:
    config = {"outputs": [{"name": "x", "fromExpression": "apps"}], **config}
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": uses, "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([], "outputs: List should have at least 1 item"),
        ([{"name": "x"}], "fromExpression: Field required"),
        ([{"name": "x", "fromExpression": "apps.test.replicas +"}], "apps.test.replicas +"),
        ([{"name": "x", "fromExpression": "nothing.here"}], "nothing"),
    ],
)
def test_bad_outputs_are_errored(
    tmp_path: Path, repo: Path, outputs: list[dict[str, Any]], message: str
) -> None:
    step = {"uses": "yaml-parse", "config": {"path": "./src/apps.yaml", "outputs": outputs}}
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
    assert message in str(err) and outcome_of(err) == "Errored"


@pytest.mark.integration
async def test_a_stage_using_the_parse_steps_applies_and_promotes(
    client: Client, worker: Worker, repo: Path
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {
            "uses": "json-parse",
            "as": "json",
            "config": {
                "path": "./src/config.json",
                "outputs": [{"name": "tag", "fromExpression": "image.tag"}],
            },
        },
        {
            "uses": "yaml-parse",
            "as": "yaml",
            "config": {
                "path": "./src/apps.yaml",
                "outputs": [{"name": "app", "fromExpression": "apps[ctx.stage]"}],
            },
        },
        {
            "uses": "file-write",
            "config": {
                "path": "./out/app.yaml",
                "contents": "${{ asYAML(outputs.yaml.app) }}",
            },
        },
        *COMMIT_AND_PUSH,
    ]
    freight = commit_freight(repo, branch_head(repo, "main") or "")
    await apply_project(
        client, with_freight(single_stage_project(repo, steps, variables=GIT_REPO), freight)
    )
    result = await (await start_promotion(client, "p", "test", freight.metadata.name)).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert result.outputs["json"] == {"tag": "v1.2.3"}
    assert result.outputs["yaml"]["app"]["replicas"] == 2
    assert "replicas: 2" in show_file(repo, "stage/test", "app.yaml")
