"""json-update, as Kargo's: its reference example through the worktree runner against a real
bare repository, the key paths its page shows, every other byte kept, and its errors."""

from __future__ import annotations

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
from tests.test_file_steps import (
    CLONE_SRC_AND_OUT,
    COMMIT_AND_PUSH,
    GIT_REPO,
    outcome_of,
    run_steps,
)
from tests.test_file_steps import refused as refused_in

SETTINGS = """\
{
  "image": {
    "tag": "v1.0.0"
  },
  "example.com/version": "v1.0.0",
  "containers": [
    { "name": "my-app", "image": "my-app:v1.0" }
  ],
  "replicas":   2,
  "empty": {}
}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    (seed / "configs").mkdir()
    (seed / "configs/settings.json").write_text(SETTINGS)
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


def update(path: str, *updates: tuple[str, Any]) -> dict[str, Any]:
    return {
        "uses": "json-update",
        "as": "update",
        "config": {"path": path, "updates": [{"key": k, "value": v} for k, v in updates]},
    }


def test_json_update_reference_example(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "json-update",
            "as": "update",
            "config": {
                "path": "./src/configs/settings.json",
                "updates": [{"key": "image.tag", "value": '${{ imageFrom("my/image").Tag }}'}],
            },
        },
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_steps(tmp_path, repo, steps, images=("my/image:v2.0.0",))
    (updated,) = [o for o in outcomes if o.alias == "update"]
    assert updated.outputs == {
        "commitMessage": 'Updated ./src/configs/settings.json\n\n- image.tag: "v2.0.0"'
    }
    expected = SETTINGS.replace('"tag": "v1.0.0"', '"tag": "v2.0.0"')
    assert show_file(repo, "stage/test", "settings.json") + "\n" == expected


def test_the_key_paths_on_kargo_s_page_and_sjson_additions(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        update(
            "./src/configs/settings.json",
            ("example\\.com/version", "v2.0.0"),
            ("containers.0.image", "my-app:v2.0"),
            ("replicas", 3),
            ("image.pullPolicy", "Always"),
            ("empty.a.b", True),
            ("containers.-1", 1.5),
        ),
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_steps(tmp_path, repo, steps)
    message = next(o for o in outcomes if o.alias == "update").outputs["commitMessage"]
    assert message.splitlines()[2:] == [
        '- example\\.com/version: "v2.0.0"',
        '- containers.0.image: "my-app:v2.0"',
        "- replicas: 3",
        '- image.pullPolicy: "Always"',
        "- empty.a.b: true",
        "- containers.-1: 1.5",
    ]
    # sjson's own layout for what it adds: before the closing brace or bracket, no spaces.
    assert show_file(repo, "stage/test", "settings.json") + "\n" == (
        "{\n"
        '  "image": {\n'
        '    "tag": "v1.0.0"\n'
        '  ,"pullPolicy":"Always"},\n'
        '  "example.com/version": "v2.0.0",\n'
        '  "containers": [\n'
        '    { "name": "my-app", "image": "my-app:v2.0" }\n'
        "  ,1.5],\n"
        '  "replicas":   3,\n'
        '  "empty": {"a":{"b":true}}\n'
        "}\n"
    )


def test_sjson_past_the_end_and_through_a_scalar(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        update(
            "./src/configs/settings.json",
            ("containers.3", "x"),
            ("replicas.min", 1),
            ("empty.list.1", False),
        ),
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps)
    text = show_file(repo, "stage/test", "settings.json")
    assert '"containers": [{ "name": "my-app", "image": "my-app:v1.0" },null,null,"x"],' in text
    assert '"replicas":   {"min":1},' in text
    assert '"empty": {"list":[null,false]}' in text


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ((("image", {"tag": "x"}),), 'value for key "image" is not a scalar type'),
        ((("image.tag", None),), 'value for key "image.tag" is not a scalar type'),
        ((("image.tag", [1]),), 'value for key "image.tag" is not a scalar type'),
        ((("containers.x", 1),), "cannot set array element for non-numeric key 'x'"),
        ((("image..tag", 1),), "has an empty part"),
    ],
)
def test_json_update_errors_are_errored(
    tmp_path: Path, repo: Path, updates: tuple[tuple[str, Any], ...], message: str
) -> None:
    err = refused_in(
        tmp_path, repo, [CLONE_SRC_AND_OUT, update("./src/configs/settings.json", *updates)]
    )
    assert message in str(err) and outcome_of(err) == "Errored"


def test_json_update_config_and_file_errors(tmp_path: Path, repo: Path) -> None:
    for step, message in [
        (update("./src/none.json", ("a", 1)), 'error reading JSON file "./src/none.json"'),
        (update("../x.json", ("a", 1)), "leaves the work tree"),
        (update("./src/base/deploy.yaml", ("a", 1)), "error setting key"),
        ({"uses": "json-update", "config": {"path": "./x", "updates": []}}, "at least 1 item"),
        (
            {"uses": "json-update", "config": {"path": "./x", "updates": [{"key": "a"}]}},
            "updates.0.value: Field required",
        ),
    ]:
        err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
        assert message in str(err) and outcome_of(err) == "Errored", str(err)


@pytest.mark.integration
async def test_a_stage_using_json_update_applies_and_promotes(
    client: Client, worker: Worker, repo: Path
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        update("./src/configs/settings.json", ("image.tag", "${{ ctx.stage }}")),
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        {
            "uses": "git-commit",
            "config": {"path": "./out", "message": "${{ outputs.update.commitMessage }}"},
        },
        {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
    ]
    freight = commit_freight(repo, branch_head(repo, "main") or "")
    await apply_project(
        client, with_freight(single_stage_project(repo, steps, variables=GIT_REPO), freight)
    )
    result = await (await start_promotion(client, "p", "test", freight.metadata.name)).result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert '"tag": "test"' in show_file(repo, "stage/test", "settings.json")
