"""The pipeline as a table: each Stage's Freight, health, running promotion and queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table

from freightline.contracts.promotion import PromotionPhase
from freightline.contracts.stage import StageState


def pipeline_table(
    project: str,
    states: Sequence[StageState],
    notes: Mapping[str, str] | None = None,
    updating: frozenset[str] | set[str] = frozenset(),
) -> Table:
    """One row per Stage, upstream first; ``notes`` say what running promotions are doing;
    Stages in ``updating`` do not yet hold their project's applied configuration."""
    table = Table(title=f"project {project}", expand=False)
    for column in ("stage", "freight", "versions", "health", "promotion", "queued", "auto"):
        table.add_column(column)
    for state in states:
        current = state.current
        freight = "—"
        versions = ""
        if current:
            freight = current.freight_alias or current.freight[:7]
            freight += "" if current.verified else " (verifying)"
            versions = ", ".join(current.versions)
        promotion = ""
        if state.running:
            doing = (notes or {}).get(state.name, "running")
            promotion = f"[yellow]{doing}[/yellow] {state.running.freight_alias}"
        elif state.verifying:
            promotion = f"[yellow]verifying[/yellow] {state.verifying.freight_alias}"
        elif state.last_promotion:
            last = state.last_promotion
            succeeded = last.phase is PromotionPhase.SUCCEEDED
            colour = "green" if succeeded else "red"
            promotion = (
                f"[{colour}]{last.phase}[/{colour}] {last.freight_alias or last.freight[:7]}"
            )
            if not succeeded and last.message:
                promotion += f": {last.message[:60]}"
        queued = ", ".join(t.freight_alias or t.freight[:7] for t in state.queue)
        table.add_row(
            f"{state.name} (updating)" if state.name in updating else state.name,
            freight,
            versions,
            state.health.value,
            promotion,
            queued,
            "on" if state.config.auto_promotion else "off",
        )
    return table
