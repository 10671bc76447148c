"""What a Stage's verification runs: its AnalysisTemplates' metrics, args resolved."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import Field
from temporalio.exceptions import ApplicationError

from freightline.contracts.model import Contract
from freightline.errors import ConfigError, ExpressionError, root_cause
from freightline.kargo.analysis import (
    AnalysisPhase,
    AnalysisRunStatus,
    dry_run_metrics,
    resolve_metrics,
    retention_limits,
)
from freightline.kargo.expressions import NOW, render
from freightline.kargo.freight import artifact_functions
from freightline.kargo.metadata import metadata_functions
from freightline.kargo.resources import (
    AnalysisTemplate,
    ClusterAnalysisTemplate,
    Freight,
    Metric,
    Stage,
)


class VerificationRequest(Contract):
    """The input of a ``Verification`` workflow (no credentials: secrets stay on workers; a
    metric names them by reference only)."""

    project: str
    stage: str
    freight: str
    freight_alias: str | None = None
    metrics: tuple[Metric, ...]
    dry_run: tuple[str, ...] = ()
    """Metrics measured and reported, never deciding the run (the templates' ``dryRun``)."""
    measurement_retention: dict[str, int] = Field(default_factory=dict)
    """How many measurements a metric keeps (``measurementRetention``); others keep all."""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    """The Stage's ``analysisRunMetadata``, shown on the verification."""

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
    cluster_templates: Mapping[str, ClusterAnalysisTemplate] | None = None,
    collection: Sequence[Freight] = (),
    subscriptions: Mapping[str, Collection[str]] | None = None,
) -> VerificationRequest | None:
    """The verification to run for ``freight`` in ``stage``; None when the Stage has none.

    As in Kargo it verifies the Stage's whole Freight collection: ``collection`` (the Stage's
    current Freight, one per origin, ``freight`` among them) is what ``imageFrom`` and the
    like read, ``subscriptions`` (requested Warehouse → ``subscribed_repositories``) picks
    the origin where none is named.

    Its args see ``freightMetadata()`` of ``freight`` and ``known_freight`` (the Freight the
    Stage holds copies of) and ``stageMetadata()`` of this Stage (``stage_metadata``);
    ``now`` (the workflow's clock) is what ``now()`` gives in them. A reference with
    ``kind: ClusterAnalysisTemplate`` is looked up in ``cluster_templates``; every template
    named is merged into one run, as Argo Rollouts merges them."""
    verification = stage.spec.verification
    if verification is None or not verification.analysis_templates:
        return None
    chosen = []
    for reference in verification.analysis_templates:
        if reference.kind == "ClusterAnalysisTemplate":
            shared = (cluster_templates or {}).get(reference.name)
            template = shared.as_template() if shared is not None else None
        else:
            template = templates.get(reference.name)
        if template is None:
            raise ConfigError(
                f'Stage "{stage.metadata.name}": verification uses '
                f'{reference.kind or "AnalysisTemplate"} "{reference.name}", which is not applied'
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
        **artifact_functions(
            [freight, *(f for f in collection if f.origin.name != freight.origin.name)],
            subscriptions=subscriptions,
        ),
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
    # The Stage's vars, in order (a var sees the ones before it), as Kargo's args see them.
    rendered_vars: dict[str, Any] = {}
    for var in stage.spec.vars or ():
        env["vars"] = dict(rendered_vars)
        try:
            rendered_vars[var.name] = render(var.value, env) if var.value is not None else None
        except ExpressionError as err:
            raise ConfigError(f'Stage "{stage.metadata.name}": var "{var.name}": {err}') from None
    env["vars"] = rendered_vars
    # What an arg's valueFrom.fieldRef reads: the Freight and the Stage as their documents.
    objects = {
        "freight": freight.model_dump(mode="json", by_alias=True, exclude_none=True),
        "stage": stage.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    metrics = tuple(resolve_metrics(chosen, verification.args or [], env, objects))
    metadata = verification.analysis_run_metadata
    return VerificationRequest(
        project=project,
        stage=stage.metadata.name,
        freight=freight.metadata.name,
        freight_alias=freight.alias,
        metrics=metrics,
        dry_run=dry_run_metrics(chosen),
        measurement_retention=retention_limits(chosen),
        labels=dict(metadata.labels or {}) if metadata else {},
        annotations=dict(metadata.annotations or {}) if metadata else {},
    )
