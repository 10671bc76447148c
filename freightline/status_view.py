"""The pipeline as a table: each Stage's Freight, health, running promotion and queue."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from freightline.stage import StageState


def pipeline_table(project: str, states: Sequence[StageState]) -> Table:
    """One row per Stage, upstream first."""
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
            promotion = f"[yellow]running[/yellow] {state.running.freight_alias}"
        elif state.last_promotion:
            last = state.last_promotion
            colour = "green" if last.phase == "Succeeded" else "red"
            promotion = (
                f"[{colour}]{last.phase}[/{colour}] {last.freight_alias or last.freight[:7]}"
            )
            if last.phase != "Succeeded" and last.message:
                promotion += f": {last.message[:60]}"
        queued = ", ".join(t.freight_alias or t.freight[:7] for t in state.queue)
        table.add_row(
            state.name,
            freight,
            versions,
            state.health,
            promotion,
            queued,
            "on" if state.config.auto_promotion else "off",
        )
    return table
