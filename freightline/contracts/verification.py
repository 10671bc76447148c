"""What a Stage's verification runs: its AnalysisTemplates' metrics, args resolved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freightline.contracts.model import Contract
from freightline.errors import ConfigError
from freightline.kargo.analysis import resolve_metrics
from freightline.kargo.freight import artifact_functions
from freightline.kargo.resources import AnalysisTemplate, Freight, Metric, Stage


class VerificationRequest(Contract):
    """The input of a ``Verification`` workflow (no credentials: header secrets stay on workers)."""

    project: str
    stage: str
    freight: str
    freight_alias: str | None = None
    metrics: tuple[Metric, ...]

    @property
    def run_name(self) -> str:
        return f"{self.project}/{self.stage}/{self.freight_alias or self.freight[:7]}"


def verification_request(
    project: str, stage: Stage, freight: Freight, templates: Mapping[str, AnalysisTemplate]
) -> VerificationRequest | None:
    """The verification to run for ``freight`` in ``stage``; None when the Stage has none."""
    verification = stage.spec.verification
    if verification is None or not verification.analysis_templates:
        return None
    chosen = []
    for reference in verification.analysis_templates:
        template = templates.get(reference.name)
        if template is None:
            raise ConfigError(
                f'Stage "{stage.metadata.name}": verification uses AnalysisTemplate '
                f'"{reference.name}", which is not applied'
            )
        chosen.append(template)
    env: dict[str, Any] = {
        "ctx": {
            "project": project,
            "stage": stage.metadata.name,
            "targetFreight": {
                "name": freight.metadata.name,
                "alias": freight.alias,
                "origin": {"kind": freight.origin.kind, "name": freight.origin.name},
            },
        },
        "vars": {},
        **artifact_functions(freight),
    }
    metrics = tuple(resolve_metrics(chosen, verification.args or [], env))
    return VerificationRequest(
        project=project,
        stage=stage.metadata.name,
        freight=freight.metadata.name,
        freight_alias=freight.alias,
        metrics=metrics,
    )
