"""``freightline status``'s table says each Stage's true phase: one case per phase, state by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from freightline.app.status_view import pipeline_table
from freightline.contracts.argocd import AppRef, HealthState
from freightline.contracts.project import stage_configs
from freightline.contracts.promotion import PromotionPhase
from freightline.contracts.stage import (
    HistoryEntry,
    LastPromotion,
    PromotionTicket,
    StageState,
    VerificationRecord,
)
from freightline.kargo.analysis import AnalysisPhase
from tests.pipelines import quickstart_up_to_push

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FREIGHT = "f" * 40
OLDER = "e" * 40


def stage(tmp_path: Path, **fields: object) -> StageState:
    config = stage_configs(quickstart_up_to_push(tmp_path))["test"]
    return StageState.model_validate({"config": config, **fields})


def held(
    freight: str = FREIGHT, alias: str = "wise-otter", *, verified: bool = False
) -> HistoryEntry:
    return HistoryEntry(
        freight=freight,
        freight_alias=alias,
        promotion=f"promotion:kargo-demo:test:{alias}:1",
        promoted_at=NOW,
        verified=verified,
        versions=("nginx:1.29.1",),
    )


def record(
    phase: AnalysisPhase, message: str | None = None, freight: str = FREIGHT
) -> VerificationRecord:
    return VerificationRecord(
        verification="verification:kargo-demo:test:wise-otter:1",
        freight=freight,
        freight_alias="wise-otter",
        phase=phase,
        message=message,
        started_at=NOW,
        finished_at=None if phase == "Running" else NOW,
    )


def row(state: StageState, notes: dict[str, str] | None = None) -> dict[str, str]:
    """The table's one row, as plain text by column."""
    table = pipeline_table("kargo-demo", [state], notes)
    console = Console(width=400, record=True, color_system=None)
    console.print(table)
    header, cells = [
        [c.strip() for c in line.strip("│┃ ").split("│" if "│" in line else "┃")]
        for line in console.export_text().splitlines()
        if ("│" in line or "┃" in line) and line.strip("│┃ ─━")
    ]
    return dict(zip(header, cells, strict=True))


@pytest.mark.parametrize(
    ("records", "verified", "expected"),
    [
        ([record("Successful")], True, "Verified"),
        (
            [record("Failed", "error-rate: 0.4 > 0.1")],
            False,
            "verification Failed: error-rate: 0.4 > 0.1",
        ),
        (
            [record("Error", "metric server unreachable")],
            False,
            "verification Error: metric server unreachable",
        ),
        (
            [record("Inconclusive", "no measurement decided")],
            False,
            "verification Inconclusive: no measurement decided",
        ),
        (
            [record("Aborted", "verification aborted by alice")],
            False,
            "verification Aborted: verification aborted by alice",
        ),
        # A re-verification that failed after an earlier success says both.
        (
            [record("Failed", "bad"), record("Successful")],
            True,
            "verification Failed: bad (verified before)",
        ),
        # A record of other Freight says nothing about the current one.
        ([record("Failed", "old", freight=OLDER)], False, "pending"),
    ],
)
def test_an_ended_verification_shows_its_phase_not_verifying(
    tmp_path: Path, records: list[VerificationRecord], verified: bool, expected: str
) -> None:
    state = stage(tmp_path, history=[held(verified=verified)], verifications=records)
    cells = row(state)
    assert cells["verification"] == expected
    assert cells["freight"] == "wise-otter"  # never "(verifying)" next to the Freight


def test_a_running_verification_shows_verifying(tmp_path: Path) -> None:
    state = stage(tmp_path, history=[held()], verifying=record("Running"))
    assert row(state)["verification"] == "verifying"


def test_a_promoted_freight_waits_for_healthy_before_verifying(tmp_path: Path) -> None:
    apps = [AppRef(name="kargo-demo-test", namespace="argocd")]
    state = stage(tmp_path, history=[held()], health_apps=apps, health=HealthState.PROGRESSING)
    cells = row(state)
    assert (cells["health"], cells["verification"]) == ("Progressing", "waiting for Healthy")


@pytest.mark.parametrize(
    ("phase", "message", "expected"),
    [
        (PromotionPhase.SUCCEEDED, "", "Succeeded wise-otter"),
        (
            PromotionPhase.FAILED,
            "rejected by dana: not today",
            "Failed wise-otter: rejected by dana: not today",
        ),
        (
            PromotionPhase.ERRORED,
            'step "push": no credentials',
            'Errored wise-otter: step "push": no credentials',
        ),
        (PromotionPhase.ABORTED, "aborted by alice", "Aborted wise-otter: aborted by alice"),
    ],
)
def test_the_last_promotion_shows_how_it_ended(
    tmp_path: Path, phase: PromotionPhase, message: str, expected: str
) -> None:
    last = LastPromotion(
        promotion="promotion:kargo-demo:test:wise-otter:1",
        freight=FREIGHT,
        freight_alias="wise-otter",
        phase=phase,
        message=message,
        finished_at=NOW,
    )
    assert row(stage(tmp_path, last_promotion=last))["promotion"] == expected


def test_a_running_promotion_shows_what_it_waits_for(tmp_path: Path) -> None:
    ticket = PromotionTicket(
        promotion="promotion:kargo-demo:test:wise-otter:1",
        freight=FREIGHT,
        freight_alias="wise-otter",
        requested_by="alice",
        requested_at=NOW,
    )
    state = stage(tmp_path, running=ticket)
    waiting = "waiting for approval (0 of 1; approvers: alice)"
    assert row(state, {"test": waiting})["promotion"] == f"{waiting} wise-otter"
    assert row(state)["promotion"] == "starting wise-otter"  # its workflow not answering yet


def test_a_stage_without_freight_is_unknown_and_says_so(tmp_path: Path) -> None:
    cells = row(stage(tmp_path))
    assert (cells["freight"], cells["health"], cells["verification"]) == ("—", "Unknown", "")
