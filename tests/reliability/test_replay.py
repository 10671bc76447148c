"""Determinism: recorded histories of real runs replay against today's workflow code.

A change to workflow code that would break runs in flight (a command added, removed or
reordered without ``workflow.patched``) fails here. Re-record deliberately with
``scripts/record-histories`` (see ``tests/histories/README.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

pytestmark = pytest.mark.reliability

HISTORIES = Path(__file__).resolve().parent.parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))


# The workflow IDs of histories whose commands depend on their own ID (a child's ID is
# derived from it); the others replay under their file's name.
WORKFLOW_IDS = {"stage-rollback": "stage:kargo-demo:test"}


def workflow_type(path: Path) -> str:
    started = json.loads(path.read_text())["events"][0]
    return str(started["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])


# The long-lived and the per-attempt workflows; a new workflow type should join this list
# (and scripts/record-histories) once its shape settles.
COVERED = {"Project", "Promotion", "Stage", "Verification", "Warehouse"}


def test_the_core_workflow_types_have_recorded_histories() -> None:
    assert {workflow_type(p) for p in RECORDED} >= COVERED


@pytest.mark.parametrize(
    "history",
    [WorkflowHistory.from_json(WORKFLOW_IDS.get(p.stem, p.stem), p.read_text()) for p in RECORDED],
    ids=[p.stem for p in RECORDED],
)
async def test_recorded_history_replays(history: WorkflowHistory) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
