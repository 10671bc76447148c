"""The pipeline as a table: each Stage's Freight, health, verification, promotion and queue.

Every cell says the phase the Stage workflow's state holds now, in Kargo's
words: a verification that ended Failed, Error, Inconclusive or Aborted shows
as such (with its reason), not as still verifying; a promotion shows what it
waits for while it runs and how it ended after.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from freightline.contracts.promotion import PromotionPhase
from freightline.contracts.stage import StageState

MESSAGE_WIDTH = 60
"""How much of a failure's reason a cell shows (the ``status`` query holds all of it)."""

_VERIFICATION_ENDED = {
    "Failed": "red",
    "Error": "red",
    "Inconclusive": "yellow",
    "Aborted": "red",
}


def verification_cell(state: StageState) -> str:
    """The current Freight's verification: Verified, verifying, how it ended, or what it awaits."""
    current = state.current
    if current is None:
        return ""
    if state.verifying is not None and state.verifying.freight == current.freight:
        return "[yellow]verifying[/yellow]"
    record = next((v for v in state.verifications if v.freight == current.freight), None)
    if record is None:
        if current.verified:  # verified by a run older than the records kept
            return "[green]Verified[/green]"
        if state.running is not None:
            return ""  # the promotion column says what happens next
        return "[yellow]waiting for Healthy[/yellow]" if state.health_apps else "pending"
    if record.phase == "Successful":
        return "[green]Verified[/green]"
    colour = _VERIFICATION_ENDED.get(record.phase)
    if colour is None:  # a record still Pending or Running: being verified
        return "[yellow]verifying[/yellow]"
    cell = f"[{colour}]verification {record.phase}[/{colour}]"
    if record.message:
        cell += f": {_short(record.message)}"
    if current.verified:
        cell += " (verified before)"
    return cell


def promotion_cell(state: StageState, doing: str | None = None) -> str:
    """The running promotion and what it is doing (``doing``), or how the last one ended."""
    running = state.running
    if running is not None:
        alias = running.freight_alias or running.freight[:7]
        return f"[yellow]{doing or 'starting'}[/yellow] {alias}"
    last = state.last_promotion
    if last is None:
        return ""
    succeeded = last.phase is PromotionPhase.SUCCEEDED
    colour = "green" if succeeded else "red"
    cell = f"[{colour}]{last.phase.value}[/{colour}] {last.freight_alias or last.freight[:7]}"
    if not succeeded and last.message:
        cell += f": {_short(last.message)}"
    return cell


def pipeline_table(
    project: str,
    states: Sequence[StageState],
    notes: Mapping[str, str] | None = None,
    updating: frozenset[str] | set[str] = frozenset(),
) -> Table:
    """One row per Stage, upstream first; ``notes`` say what running promotions are doing;
    Stages in ``updating`` do not yet hold their project's applied configuration."""
    table = Table(title=f"project {project}", expand=False)
    # The metadata column only when some Stage has metadata: most pipelines set none, and
    # a narrow terminal should not lose the health and verification columns to it.
    with_metadata = any(state.metadata for state in states)
    columns = ["stage", "freight", "versions", "health", "verification", "promotion", "queued"]
    for column in (*columns, *(["metadata"] if with_metadata else []), "auto"):
        table.add_column(column)
    for state in states:
        current = state.current
        collection = state.current_collection
        if len(collection) > 1:  # one Freight per origin: a line each
            freight = "\n".join(
                f"{origin}: {ref.freight_alias or ref.freight[:7]}"
                for origin, ref in collection.items()
            )
            versions = "\n".join(", ".join(ref.versions) for ref in collection.values())
        else:
            freight = (current.freight_alias or current.freight[:7]) if current else "—"
            versions = ", ".join(current.versions) if current else ""
        cells = [
            f"{state.name} (updating)" if state.name in updating else state.name,
            freight,
            versions,
            state.health.value,
            verification_cell(state),
            promotion_cell(state, (notes or {}).get(state.name)),
            ", ".join(t.freight_alias or t.freight[:7] for t in state.queue),
            *([metadata_cell(state.metadata)] if with_metadata else []),
            auto_cell(state),
        ]
        table.add_row(*cells)
    return table


def metadata_cell(metadata: Mapping[str, Any]) -> str:
    """What ``set-metadata`` wrote on the Stage, compact: ``region="eu", tier=2``."""
    return _short(
        ", ".join(
            f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in metadata.items()
        )
    )


def _short(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 1] + "…"


def auto_cell(state: StageState) -> str:
    """Whether the Stage promotes new Freight by itself: on, off, or paused (by whom)."""
    if not state.config.auto_promotion:
        return "off"
    return f"paused by {state.auto_paused_by}" if state.auto_paused_by else "on"
