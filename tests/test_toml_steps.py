"""toml-parse and toml-update, as Kargo's: every example on their Kargo reference pages (read
from the verbatim copies in ``tests/reference/kargo-steps/``) runs through the worktree runner
against a real bare repository, with the sample input the page gives; then the key paths of
toml-update's page, every other byte kept, and the errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.toml_files import toml_text
from freightline.app.client import apply_project, start_promotion
from freightline.contracts.promotion import PromotionPhase
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo
from tests.kargo_pages import assert_all_covered, blocks, example, page
from tests.pipelines import commit_freight, single_stage_project, with_freight
from tests.test_file_steps import (
    CLONE_SRC_AND_OUT,
    COMMIT_AND_PUSH,
    GIT_REPO,
    add_to_main,
    outcome_of,
)
from tests.test_file_steps import refused as refused_in
from tests.test_file_steps import run_steps as run_in

SETTINGS = """\
# The app's settings: every byte not updated stays as it is.
title   =   "demo"    # spaced out on purpose

[image]
repository = "my/image"
tag = "v1.0.0" # the tag Kargo promotes

[server]
port = 8080
ratio = 0.5
hosts = [ "a.example.com", 'b.example.com' ]
limits = { cpu = "500m", memory = 256 }

[labels]
"example.com/version" = "1.0.0"

[[services]]
name = "api"

[[services]]
name = "web"
"""


def raw_file(repo: Path, branch: str, path: str) -> bytes:
    """A file's bytes on a branch of a bare repository, unstripped."""
    return subprocess.run(
        ["git", "show", f"refs/heads/{branch}:{path}"], cwd=repo, capture_output=True, check=True
    ).stdout


def sample_toml(step: str) -> str:
    """The TOML sample input on a page (its one ``toml`` block under Common Usage)."""
    (block,) = [b for b in blocks(step) if b.language == "toml" and b.heading == "Common Usage"]
    return block.text


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    (seed / "config.toml").write_text(sample_toml("toml-parse"))
    (seed / "configs").mkdir()
    (seed / "configs/settings.toml").write_text(SETTINGS)
    (seed / "empty.toml").write_text("")
    (seed / "bad.toml").write_text("key = \n")
    (seed / "crlf.toml").write_bytes(b'a = 1\r\n[b]\r\nc = "x" # why\r\n')
    (seed / "no-newline.toml").write_bytes(b"v = 1")
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


def outputs_by_alias(tmp_path: Path, repo: Path, steps: list[dict[str, Any]], **kw: Any) -> Any:
    return {o.alias: o.outputs for o in run_in(tmp_path, repo, steps, **kw)}


# --- the pages' examples ---------------------------------------------------------------------


def test_toml_parse_page_examples_are_all_tested() -> None:
    assert_all_covered("toml-parse", ["Common Usage"])


def test_toml_update_page_examples_are_all_tested() -> None:
    assert_all_covered("toml-update", ["Common Usage"])


def test_toml_parse_common_usage(tmp_path: Path, repo: Path) -> None:
    page_example = example("toml-parse", "Common Usage")
    outputs = outputs_by_alias(tmp_path, repo, page_example.steps, variables=page_example.variables)
    # The page's outputs table: | `imageTag` | `string` | `v1.2.3` |
    table = re.findall(r"^\| `(\w+)` \| `string` \| `([^`]*)` \|$", page("toml-parse"), re.M)
    assert table == [("imageTag", "v1.2.3")]
    assert outputs["values"] == dict(table)


def test_toml_update_common_usage(tmp_path: Path, repo: Path) -> None:
    page_example = example("toml-update", "Common Usage")
    # The page renders into ./out afterwards ("Render manifests to ./out, commit, push"):
    # here the updated file is copied there, committed and pushed.
    steps = [
        *page_example.steps,
        {
            "uses": "copy",
            "config": {"inPath": "./src/configs/settings.toml", "outPath": "./out/settings.toml"},
        },
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_in(
        tmp_path,
        repo,
        steps,
        variables=page_example.variables,
        images=("my/image:v2.0.0",),
    )
    (update,) = [o for o in outcomes if o.uses == "toml-update"]
    assert update.outputs == {
        "commitMessage": "Updated ./src/configs/settings.toml\n\n- image.tag: 'v2.0.0'"
    }
    expected = SETTINGS.replace('tag = "v1.0.0"', "tag = 'v2.0.0'")
    assert raw_file(repo, "stage/test", "settings.toml") == expected.encode()


def test_toml_update_writing_keys_on_the_page(tmp_path: Path, repo: Path) -> None:
    """The page's "Writing Keys" pairs: each TOML snippet, and the key that updates it."""
    keys = re.findall(r"^Update key: `([^`]+)`$", page("toml-update"), re.M)
    snippets = [b.text for b in blocks("toml-update") if b.heading == "Writing Keys"]
    assert len(keys) == len(snippets) == 3
    steps: list[dict[str, Any]] = [CLONE_SRC_AND_OUT]
    for index, (key, snippet) in enumerate(zip(keys, snippets, strict=True)):
        steps.append(
            {
                "uses": "file-write",
                "config": {"path": f"./out/{index}.toml", "contents": snippet},
            }
        )
        steps.append(
            {
                "uses": "toml-update",
                "config": {"path": f"./out/{index}.toml", "updates": [{"key": key, "value": 9}]},
            }
        )
    run_in(tmp_path, repo, [*steps, *COMMIT_AND_PUSH])
    assert raw_file(repo, "stage/test", "0.toml") == b"[package]\nversion = 9\n"
    assert raw_file(repo, "stage/test", "1.toml") == b'[labels]\n"example.com/version" = 9\n'
    assert raw_file(repo, "stage/test", "2.toml") == b"values = [1, 9, 3]\n"


# --- toml-update: every other byte kept ------------------------------------------------------


def test_toml_update_changes_only_the_values(tmp_path: Path, repo: Path) -> None:
    updates = [
        {"key": "title", "value": "it's new"},
        {"key": "server.port", "value": 9090},
        {"key": "server.ratio", "value": 0.25},
        {"key": "server.hosts.1", "value": "c.example.com"},
        {"key": "server.limits.memory", "value": 512},
        {"key": "labels.example\\.com/version", "value": "2.0.0"},
        {"key": "services.1.name", "value": True},
    ]
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        {
            "uses": "toml-update",
            "as": "u",
            "config": {"path": "./out/settings.toml", "updates": updates},
        },
        *COMMIT_AND_PUSH,
    ]
    outputs = outputs_by_alias(tmp_path, repo, steps)
    expected = (
        SETTINGS.replace('title   =   "demo"', 'title   =   "it\'s new"')
        .replace("port = 8080", "port = 9090")
        .replace("ratio = 0.5", "ratio = 0.25")
        .replace("'b.example.com'", "'c.example.com'")
        .replace("memory = 256", "memory = 512")
        .replace('"example.com/version" = "1.0.0"', "\"example.com/version\" = '2.0.0'")
        .replace('name = "web"', "name = true")
    )
    assert raw_file(repo, "stage/test", "settings.toml") == expected.encode()
    assert outputs["u"]["commitMessage"] == (
        "Updated ./out/settings.toml\n\n"
        '- title: "it\'s new"\n- server.port: 9090\n- server.ratio: 0.25\n'
        "- server.hosts.1: 'c.example.com'\n- server.limits.memory: 512\n"
        "- labels.example\\.com/version: '2.0.0'\n- services.1.name: true"
    )


def test_toml_update_keeps_line_ends_and_a_missing_last_newline(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "copy", "config": {"inPath": "./src/crlf.toml", "outPath": "./out/crlf.toml"}},
        {"uses": "copy", "config": {"inPath": "./src/no-newline.toml", "outPath": "./out/nl.toml"}},
        {
            "uses": "toml-update",
            "config": {"path": "./out/crlf.toml", "updates": [{"key": "b.c", "value": "y"}]},
        },
        {
            "uses": "toml-update",
            "config": {"path": "./out/nl.toml", "updates": [{"key": "v", "value": 2}]},
        },
        *COMMIT_AND_PUSH,
    ]
    run_in(tmp_path, repo, steps)
    assert raw_file(repo, "stage/test", "crlf.toml") == b"a = 1\r\n[b]\r\nc = 'y' # why\r\n"
    assert raw_file(repo, "stage/test", "nl.toml") == b"v = 2"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("v1.2.3", "'v1.2.3'"),
        ("it's", '"it\'s"'),
        ("two\nlines", '"two\\nlines"'),
        ("tab\there", "'tab\there'"),
        ("bell\x07 del\x7f", '"bell\\u0007 del\\u007F"'),
        ('back\\slash "quoted"', "'back\\slash \"quoted\"'"),
        (42, "42"),
        (42.0, "42.0"),
        (1e-7, "0.0000001"),
        (False, "false"),
    ],
)
def test_values_are_written_as_go_toml_writes_them(value: Any, text: str) -> None:
    assert toml_text(value) == text
    assert tomllib.loads(f"v = {text}")["v"] == value


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uses", "config", "message"),
    [
        ("toml-parse", {"path": "./src/none.toml"}, 'error reading TOML file "./src/none.toml"'),
        ("toml-parse", {"path": "./src/empty.toml"}, "could not parse empty TOML file"),
        ("toml-parse", {"path": "./src/bad.toml"}, 'could not parse TOML file "./src/bad.toml"'),
        ("toml-parse", {"path": "../x.toml"}, "leaves the work tree"),
        ("toml-parse", {"path": "/etc/x.toml"}, "is absolute"),
    ],
)
def test_toml_parse_errors_are_errored(
    tmp_path: Path, repo: Path, uses: str, config: dict[str, Any], message: str
) -> None:
    config = {"outputs": [{"name": "x", "fromExpression": "image.tag"}], **config}
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, {"uses": uses, "config": config}])
    assert message in str(err) and outcome_of(err) == "Errored"


@pytest.mark.parametrize(
    ("path", "key", "value", "message"),
    [
        ("./src/configs/settings.toml", "image.digest", "x", "key path not found"),
        ("./src/configs/settings.toml", "server.hosts.2", "x", "key path not found"),
        ("./src/configs/settings.toml", "image", "x", "addresses Table instead of a scalar"),
        ("./src/configs/settings.toml", "server.hosts", "x", "addresses Array instead"),
        ("./src/configs/settings.toml", "server.limits", "x", "addresses InlineTable instead"),
        ("./src/configs/settings.toml", "services.0", "x", "addresses ArrayTable instead"),
        ("./src/configs/settings.toml", "image.tag", ["a"], "value is not a TOML scalar type"),
        ("./src/configs/settings.toml", "image.tag", None, "value is not a TOML scalar type"),
        ("./src/bad.toml", "key", "x", 'error parsing TOML file "./src/bad.toml"'),
        ("./src/none.toml", "key", "x", 'error reading TOML file "./src/none.toml"'),
        ("../outside.toml", "key", "x", "leaves the work tree"),
        ("./out/.git", "key", "x", "git's metadata"),
    ],
)
def test_toml_update_errors_are_errored(
    tmp_path: Path, repo: Path, path: str, key: str, value: Any, message: str
) -> None:
    step = {
        "uses": "toml-update",
        "config": {"path": path, "updates": [{"key": key, "value": value}]},
    }
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
    assert message in str(err) and outcome_of(err) == "Errored"


def test_toml_update_through_a_symlink_out_of_the_work_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.toml"
    outside.write_text("a = 1\n")
    repo = create_bare_repo(tmp_path / "gitops.git")
    add_to_main(repo, {}, {"link.toml": outside})
    step = {
        "uses": "toml-update",
        "config": {"path": "./src/link.toml", "updates": [{"key": "a", "value": 2}]},
    }
    err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
    assert "leaves the work tree" in str(err) and outcome_of(err) == "Errored"
    assert outside.read_text() == "a = 1\n"


def test_toml_update_schema_refusals(tmp_path: Path, repo: Path) -> None:
    for config, message in [
        ({"path": "./src/config.toml", "updates": []}, "updates: List should have at least 1"),
        ({"path": "./src/config.toml", "updates": [{"key": "a"}]}, "value: Field required"),
        ({"path": "./src/config.toml"}, "updates: Field required"),
    ]:
        step = {"uses": "toml-update", "config": config}
        err = refused_in(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
        assert message in str(err) and outcome_of(err) == "Errored"


# --- a manifest that uses them passes apply and promotes --------------------------------------


@pytest.mark.integration
async def test_a_stage_using_the_toml_steps_applies_and_promotes(
    client: Client, worker: Worker, repo: Path
) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "copy", "config": {"inPath": "./src/configs", "outPath": "./out"}},
        {
            "uses": "toml-parse",
            "as": "read",
            "config": {
                "path": "./out/settings.toml",
                "outputs": [{"name": "port", "fromExpression": "server.port"}],
            },
        },
        {
            "uses": "toml-update",
            "as": "update",
            "config": {
                "path": "./out/settings.toml",
                "updates": [{"key": "server.port", "value": "${{ outputs.read.port + 1 }}"}],
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
    assert result.outputs["read"] == {"port": 8080}
    assert b"port = 8081\n" in raw_file(repo, "stage/test", "settings.toml")
