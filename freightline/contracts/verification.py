"""What a Stage's verification runs: its AnalysisTemplates' metrics, args resolved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from temporalio.exceptions import ApplicationError

from freightline.contracts.model import Contract
from freightline.errors import ConfigError, root_cause
from freightline.kargo.analysis import AnalysisPhase, AnalysisRunStatus, resolve_metrics
from freightline.kargo.expressions import NOW
from freightline.kargo.freight import artifact_functions
from freightline.kargo.metadata import metadata_functions
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


def failure_type(phase: AnalysisPhase) -> str:
    """The ``ApplicationError`` type of a Verification whose run ended ``phase`` (not
    Successful): ``VerificationFailed``, ``VerificationError``, ``VerificationInconclusive``,
    ``VerificationAborted``. The Temporal UI then lists the run as failed, not completed."""
    return f"Verification{phase}"


def ended_run(failure: BaseException) -> AnalysisRunStatus | None:
    """The run a Verification that ended unsuccessfully carries as its failure's details;
    None for any other failure (a terminated or timed-out child, a crash)."""
    cause = root_cause(failure)
    if not isinstance(cause, ApplicationError) or not cause.details:
        return None
    phase = (cause.type or "").removeprefix("Verification")
    if cause.type == phase or phase not in ("Failed", "Error", "Inconclusive", "Aborted"):
        return None
    return AnalysisRunStatus.model_validate(cause.details[0])


def verification_request(
    project: str,
    stage: Stage,
    freight: Freight,
    templates: Mapping[str, AnalysisTemplate],
    known_freight: Sequence[Freight] = (),
    stage_metadata: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> VerificationRequest | None:
    """The verification to run for ``freight`` in ``stage``; None when the Stage has none.

    Its args see ``freightMetadata()`` of ``freight`` and ``known_freight`` (the Freight the
    Stage holds copies of) and ``stageMetadata()`` of this Stage (``stage_metadata``);
    ``now`` (the workflow's clock) is what ``now()`` gives in them."""
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
        **metadata_functions(
            {
                f.metadata.name: f.status.metadata
                for f in (*known_freight, freight)
                if f.status is not None and f.status.metadata
            },
            {stage.metadata.name: stage_metadata} if stage_metadata else {},
        ),
    }
    if now is not None:
        env[NOW] = now
    metrics = tuple(resolve_metrics(chosen, verification.args or [], env))
    return VerificationRequest(
        project=project,
        stage=stage.metadata.name,
        freight=freight.metadata.name,
        freight_alias=freight.alias,
        metrics=metrics,
    )
