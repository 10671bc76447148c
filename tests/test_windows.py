"""Promotion windows: the calendar as pure code, then a real promotion held by a short window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from freightline.app.client import apply_project, start_promotion
from freightline.contracts.names import PROMOTION_WORKFLOW, task_queue
from freightline.contracts.promotion import PromotionPhase, PromotionRequest, PromotionResult
from freightline.kargo.resources import APPLY_CHECKS, ProjectConfig, PromotionWindow
from freightline.kargo.windows import evaluate, next_allowed, windows_for
from sandbox.gitops import branch_head
from tests.conftest import wait_for
from tests.pipelines import (
    freight_for,
    project_of,
    up_to_push_documents,
    with_freight,
)


def window(kind: str, name: str, **fields: Any) -> PromotionWindow:
    # As apply reads it: the schedule is checked (a window read back from a workflow is not).
    return PromotionWindow.model_validate(
        {"kind": kind, "name": name, **fields}, context=APPLY_CHECKS
    )


BUSINESS_HOURS = window(
    "Allow",
    "business-hours",
    dtstart="TZID=Europe/Berlin:20260105T090000",
    dtend="TZID=Europe/Berlin:20260105T170000",
    rrule="FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
)
FRIDAY_FREEZE = window(
    "Deny",
    "friday-freeze",
    dtstart="TZID=Europe/Berlin:20260109T120000",
    duration="12h",
    rrule="FREQ=WEEKLY;BYDAY=FR",
)


def berlin(day: int, hour: int, minute: int = 0, month: int = 1) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(2026, month, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin"))


# --- the calendar ---------------------------------------------------------------------------------


def test_no_windows_is_always_open() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert evaluate(now, []).open
    assert next_allowed(now, []) == now


def test_inside_an_allow_window_is_open() -> None:
    now = berlin(6, 10)  # Tuesday 10:00
    assert next_allowed(now, [BUSINESS_HOURS]) == now


def test_outside_allow_windows_waits_for_the_next_one() -> None:
    gate = evaluate(berlin(6, 18), [BUSINESS_HOURS])  # Tuesday 18:00
    assert not gate.open
    assert gate.next_open == berlin(7, 9)
    assert 'outside every allow window ("business-hours")' in gate.reason
    assert "reopen at 2026-01-07 08:00:00 UTC" in gate.reason
    # Saturday evening: Monday morning.
    assert next_allowed(berlin(10, 20), [BUSINESS_HOURS]) == berlin(12, 9)


def test_deny_wins_over_allow() -> None:
    windows = [BUSINESS_HOURS, FRIDAY_FREEZE]
    assert next_allowed(berlin(9, 11), windows) == berlin(9, 11)  # Friday morning: open
    gate = evaluate(berlin(9, 13), windows)  # Friday 13:00: frozen, allow is active too
    assert not gate.open
    assert 'inside deny window "friday-freeze"' in gate.reason
    assert gate.next_open == berlin(12, 9)  # the freeze ends at midnight, work resumes Monday


def test_deny_only_schedule_opens_when_the_deny_ends() -> None:
    assert next_allowed(berlin(9, 13), [FRIDAY_FREEZE]) == berlin(10, 0)
    assert next_allowed(berlin(9, 11), [FRIDAY_FREEZE]) == berlin(9, 11)


def test_recurrences_keep_the_wall_clock_across_daylight_saving() -> None:
    # Berlin moves to summer time on 29 March 2026: 09:00 local is 07:00 UTC after it.
    assert next_allowed(berlin(27, 18, month=3), [BUSINESS_HOURS]) == berlin(30, 9, month=3)
    assert berlin(30, 9, month=3).astimezone(UTC).hour == 7


def test_one_shot_window_that_has_passed_never_opens() -> None:
    once = window("Allow", "launch", dtstart="20260101T000000Z", dtend="20260102T000000Z")
    gate = evaluate(datetime(2026, 2, 1, tzinfo=UTC), [once])
    assert not gate.open and gate.next_open is None
    assert "no allowed time within 366 days" in gate.reason


def test_floating_times_use_the_windows_time_zone() -> None:
    local = window(
        "Deny",
        "night",
        dtstart="20260101T220000",
        duration="8h",
        rrule="FREQ=DAILY",
        timeZone="America/New_York",
    )
    ny_23h = datetime(2026, 1, 6, 4, 0, tzinfo=UTC)  # 23:00 in New York
    assert next_allowed(ny_23h, [local]) == datetime(2026, 1, 6, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtstart": "tomorrow", "dtend": "20260101T000000Z"}, "not an iCal date-time"),
        ({"dtstart": "20260101T000000Z"}, "exactly one of dtend or duration"),
        ({"dtstart": "20260101T000000Z", "duration": "1h", "rrule": "FREQ=SOMETIMES"}, "rrule"),
        ({"dtstart": "TZID=Mars/Olympus:20260101T000000", "duration": "1h"}, "unknown time zone"),
        ({"dtstart": "20260102T000000Z", "dtend": "20260101T000000Z"}, "end after it starts"),
    ],
)
def test_bad_windows_are_refused_when_loaded(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        window("Allow", "bad", **fields)


def test_windows_are_scoped_by_stage_selector(gitops_repo: Path) -> None:
    resources = project_with_windows(
        gitops_repo,
        [
            {
                "kind": "Deny",
                "name": "prod-freeze",
                "stageSelector": {"name": "prod"},
                "dtstart": "20260101T000000Z",
                "duration": "1h",
            },
            {"kind": "Allow", "name": "all", "dtstart": "20260101T000000Z", "duration": "1h"},
            {
                "kind": "Allow",
                "name": "glob",
                "stageSelector": {"name": "glob:u*"},
                "dtstart": "20260101T000000Z",
                "duration": "1h",
            },
        ],
    )
    assert [w.name for w in windows_for(resources, "prod")] == ["prod-freeze", "all"]
    assert [w.name for w in windows_for(resources, "uat")] == ["all", "glob"]


# --- a real promotion ----------------------------------------------------------------------------


def project_with_windows(repo: Path, windows: list[dict[str, Any]]) -> Any:
    config = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "ProjectConfig",
        "metadata": {"name": "kargo-demo", "namespace": "kargo-demo"},
        "spec": {"promotionWindows": windows},
    }
    return project_of([*up_to_push_documents(repo), config], "windows")


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What the Temporal UI shows as the workflow's current details."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


def ical(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@pytest.mark.integration
async def test_deny_window_holds_a_promotion_until_it_ends(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    # iCal times have whole seconds: the freeze starts now and ends a few seconds later.
    start = datetime.now(UTC).replace(microsecond=0)
    end = start + timedelta(seconds=6)
    freeze = {"kind": "Deny", "name": "freeze", "dtstart": ical(start), "dtend": ical(end)}
    freight = freight_for("1.29.1")
    await apply_project(client, with_freight(project_with_windows(gitops_repo, [freeze]), freight))

    handle = await start_promotion(client, "kargo-demo", "test", freight.alias or "")

    async def held() -> bool:
        status = await handle.query("status")
        return 'inside deny window "freeze"' in status["waitingForWindow"]

    await wait_for(held, timeout=30)
    assert "waiting for a promotion window" in await current_details(handle)
    assert branch_head(gitops_repo, "stage/test") is None  # nothing pushed while frozen

    result: PromotionResult = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    assert datetime.now(UTC) >= end
    assert result.windows_overridden_by is None
    history = (await handle.fetch_history()).to_json_dict()
    assert any("timerStartedEventAttributes" in e for e in history["events"])


@pytest.mark.integration
async def test_allow_window_lets_a_promotion_through_and_override_skips_a_closed_one(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    allow = {
        "kind": "Allow",
        "name": "today",
        "dtstart": ical(now - timedelta(hours=1)),
        "duration": "2h",
    }
    closed = {
        "kind": "Deny",
        "name": "all-day",
        "dtstart": ical(now),
        "duration": "24h",
        "stageSelector": {"name": "uat"},
    }
    first, second = freight_for("1.29.2"), freight_for("1.29.3")
    resources = with_freight(project_with_windows(gitops_repo, [allow, closed]), first, second)
    await apply_project(client, resources)

    passed = await (await start_promotion(client, "kargo-demo", "test", first.alias or "")).result()
    assert passed.phase is PromotionPhase.SUCCEEDED

    # uat is frozen all day: only an override (recorded) gets through now.
    overridden: PromotionResult = await client.execute_workflow(
        PROMOTION_WORKFLOW,
        PromotionRequest(
            project="kargo-demo",
            stage="uat",
            freight=second.metadata.name,
            requested_by="oncall-olga",
            override_windows=True,
        ),
        id=f"override-{second.alias}",
        task_queue=task_queue(),
        result_type=PromotionResult,
    )
    assert overridden.phase is PromotionPhase.SUCCEEDED
    assert overridden.windows_overridden_by == "oncall-olga"


def test_kargo_project_config_with_windows_still_loads() -> None:
    config = ProjectConfig.model_validate(
        {
            "metadata": {"name": "p", "namespace": "p"},
            "spec": {
                "promotionWindows": [
                    {
                        "kind": "Allow",
                        "name": "weekdays",
                        "dtstart": "TZID=America/New_York:20260101T090000",
                        "dtend": "TZID=America/New_York:20260101T170000",
                        "rrule": "FREQ=WEEKLY;BYDAY=MO,TU",
                    }
                ]
            },
        }
    )
    assert config.spec.promotion_windows and config.spec.promotion_windows[0].rrule
