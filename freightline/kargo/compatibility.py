"""Every field of Kargo v1.11's resources, and what Freightline does with it.

:data:`FIELDS` names each field of Kargo's CRDs (``spec``, and the top-level
fields of Freight; ``status`` is kept by Freightline's workflows) and of the
subscription schemas a Warehouse's ``subscriptions`` follow, by kind and path
(``[]`` for a list's items), with either where it is implemented or why it is
refused. ``apply`` refuses a refused field (:func:`refusals`), naming the field
and the reason, so no field is accepted and silently ignored.
``tests/test_kargo_fields.py`` walks the CRDs (``tests/reference/kargo-crds``)
and fails on a field missing here, on an entry Kargo does not have, and on a
refusal ``apply`` lets through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["FIELDS", "KARGO_VERSION", "KargoField", "refusals"]

KARGO_VERSION: Final = "v1.11.0"


@dataclass(frozen=True)
class KargoField:
    """What Freightline does with one Kargo field.

    ``implemented`` says where (or how); ``refused`` says why ``apply`` refuses it.
    ``refused_when`` narrows a refusal to some values (None: any value but an empty one).
    """

    implemented: str = ""
    refused: str = ""
    refused_when: Callable[[Any], bool] | None = None


def _ok(where: str) -> KargoField:
    return KargoField(implemented=where)


def _no(why: str, when: Callable[[Any], bool] | None = None) -> KargoField:
    return KargoField(refused=why, refused_when=when)


_PLAN = "freightline/contracts/promotion.py"
_STEP_FIELDS: Final = {
    "as": _ok("the step's alias; its outputs go under it"),
    "config": _ok(_PLAN + " and the step registry (freightline/contracts/steps.py)"),
    "continueOnError": _ok("workflows/promotion.py"),
    "if": _ok("workflows/promotion.py (must be a boolean)"),
    "retry": _ok("workflows/promotion.py"),
    "retry.errorThreshold": _ok("workflows/promotion.py"),
    "retry.timeout": _ok("workflows/promotion.py"),
    "task": _ok(_PLAN + " (a PromotionTask's steps expanded)"),
    "task.kind": _ok("PromotionTask; ClusterPromotionTask is refused by apply (no cluster scope)"),
    "task.name": _ok(_PLAN),
    "uses": _ok("the step registry (freightline/contracts/steps.py)"),
    "vars": _ok(_PLAN + " (a step's vars)"),
    "vars[].name": _ok(_PLAN),
    "vars[].value": _ok(_PLAN),
}


def _steps(prefix: str) -> dict[str, KargoField]:
    fields = {prefix: _ok(_PLAN)}
    fields.update({f"{prefix}[].{path}": field for path, field in _STEP_FIELDS.items()})
    return fields


def _links(prefix: str) -> dict[str, KargoField]:
    why = (
        "Freight and Stage links are not shown: Kargo's UI renders their url as a Go "
        "template with sprig functions, and Freightline's web UI has no link list; leave "
        "them out"
    )
    return {
        prefix: _no(why),
        **{f"{prefix}[].{name}": _no(why) for name in ("title", "url", "description", "if")},
    }


def _receivers() -> dict[str, KargoField]:
    where = "freightline/app/webhooks.py (docs/webhooks.md)"
    fields = {"spec.webhookReceivers": _ok(where), "spec.webhookReceivers[].name": _ok(where)}
    for provider in (
        "artifactory",
        "azure",
        "bitbucket",
        "dockerhub",
        "generic",
        "gitea",
        "github",
        "gitlab",
        "harbor",
        "quay",
    ):
        base = f"spec.webhookReceivers[].{provider}"
        fields[base] = _ok(where)
        fields[f"{base}.secretRef"] = _ok(where + " (a Secret in the worker's credentials file)")
        fields[f"{base}.secretRef.name"] = _ok(where)
    fields["spec.webhookReceivers[].artifactory.virtualRepoName"] = _ok(where)
    generic = "spec.webhookReceivers[].generic.actions"
    for path in (
        "",
        "[].action",
        "[].parameters",
        "[].whenExpression",
        "[].targetSelectionCriteria",
        "[].targetSelectionCriteria[].kind",
        "[].targetSelectionCriteria[].name",
        "[].targetSelectionCriteria[].indexSelector",
        "[].targetSelectionCriteria[].indexSelector.matchIndices",
        "[].targetSelectionCriteria[].indexSelector.matchIndices[].key",
        "[].targetSelectionCriteria[].indexSelector.matchIndices[].operator",
        "[].targetSelectionCriteria[].indexSelector.matchIndices[].value",
        "[].targetSelectionCriteria[].labelSelector",
        "[].targetSelectionCriteria[].labelSelector.matchLabels",
        "[].targetSelectionCriteria[].labelSelector.matchExpressions",
        "[].targetSelectionCriteria[].labelSelector.matchExpressions[].key",
        "[].targetSelectionCriteria[].labelSelector.matchExpressions[].operator",
        "[].targetSelectionCriteria[].labelSelector.matchExpressions[].values",
    ):
        fields[generic + path] = _ok(where)
    return fields


_DISCOVERY = "activities/discovery.py"
_IMAGES = "activities/registry.py"
_SELECT = "freightline/kargo/selection.py"
_GIT = "activities/git_discovery.py"
_CHARTS = "activities/helm.py"
_SUBSCRIPTIONS: Final = {
    "image": {
        "repoURL": _ok(_IMAGES),
        "imageSelectionStrategy": _ok(_IMAGES + " (Digest, Lexical, NewestBuild, SemVer)"),
        "strictSemvers": _ok(_SELECT),
        "constraint": _ok(_SELECT + " (compiled at apply)"),
        "allowTags": _ok(
            "one more allowTagsRegexes entry (Kargo v1.11 fails discovery on it: deprecated)"
        ),
        "allowTagsRegexes": _ok(_SELECT + " (compiled at apply)"),
        "ignoreTags": _ok("exact tags left out (Kargo v1.11 fails discovery on it: deprecated)"),
        "ignoreTagsRegexes": _ok(_SELECT + " (compiled at apply)"),
        "platform": _ok(_IMAGES + " (os/arch or os/arch/variant)"),
        "insecureSkipTLSVerify": _ok(_DISCOVERY + " (a registry client that skips verification)"),
        "discoveryLimit": _ok(_IMAGES),
        "cacheByTag": _ok(_IMAGES + " (the worker remembers each tag's manifest)"),
    },
    "git": {
        "repoURL": _ok(_GIT),
        "commitSelectionStrategy": _ok(_GIT + " (NewestFromBranch, SemVer, Lexical, NewestTag)"),
        "branch": _ok(_GIT),
        "strictSemvers": _ok(_GIT),
        "semverConstraint": _ok(_GIT + " (compiled at apply)"),
        "allowTags": _ok(_GIT + " (one more allowTagsRegexes entry)"),
        "allowTagsRegexes": _ok(_GIT + " (compiled at apply)"),
        "ignoreTags": _ok(_GIT),
        "ignoreTagsRegexes": _ok(_GIT + " (compiled at apply)"),
        "expressionFilter": _ok(_GIT + " (compiled at apply; Kargo's commit and tag fields)"),
        "insecureSkipTLSVerify": _ok(_GIT + " (git -c http.sslVerify=false)"),
        "blobless": _ok("activities/git.py (step clones; discovery fetches are always blobless)"),
        "includePaths": _ok(_GIT + " (a base directory, glob: with **, regex:/regexp:)"),
        "excludePaths": _ok(_GIT + " (a base directory, glob: with **, regex:/regexp:)"),
        "discoveryLimit": _ok(_GIT),
        "since": _ok(_GIT + " (NewestFromBranch: commits at or after it, as Kargo)"),
    },
    "chart": {
        "repoURL": _ok(_CHARTS),
        "name": _ok(_CHARTS),
        "semverConstraint": _ok(_CHARTS + " (compiled at apply)"),
        "discoveryLimit": _ok(_CHARTS),
        "insecureSkipTLSVerify": _ok(_DISCOVERY + " (an HTTP client that skips verification)"),
    },
}


def _subscriptions() -> dict[str, KargoField]:
    fields = {"spec.subscriptions": _ok(_DISCOVERY)}
    for kind, members in _SUBSCRIPTIONS.items():
        fields[f"spec.subscriptions[].{kind}"] = _ok(_DISCOVERY)
        for name, field in members.items():
            fields[f"spec.subscriptions[].{kind}.{name}"] = field
    return fields


_STAGE = "workflows/stage.py, freightline/contracts/stage.py"
_VERIFY = "workflows/verification.py, freightline/contracts/verification.py"
_POLICY = "freightline/kargo/resources.py (ProjectResources.policy_for)"


def _match_upstream(value: Any) -> bool:
    return isinstance(value, str) and value == "MatchUpstream"


_KARGO_FIELDS: Final[Mapping[str, Mapping[str, KargoField]]] = {
    "Project": {},
    "ProjectConfig": {
        "spec": _ok("project-wide settings"),
        **_links("spec.freightLinks"),
        **_links("spec.stageLinks"),
        "spec.promotionPolicies": _ok(_POLICY),
        "spec.promotionPolicies[].stage": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector.name": _ok(_POLICY + " (exact, glob:, regex:)"),
        "spec.promotionPolicies[].stageSelector.matchLabels": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector.matchExpressions": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector.matchExpressions[].key": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector.matchExpressions[].operator": _ok(_POLICY),
        "spec.promotionPolicies[].stageSelector.matchExpressions[].values": _ok(_POLICY),
        "spec.promotionPolicies[].autoPromotionEnabled": _ok(_STAGE),
        "spec.promotionPolicies[].autoRollback": _ok(_STAGE + " (Kargo Enterprise's field)"),
        "spec.promotionPolicies[].autoRollback.onPromotion": _ok(
            _STAGE + ": a Failed or Errored promotion returns to the last verified Freight"
        ),
        "spec.promotionPolicies[].autoRollback.onVerification": _ok(
            _STAGE + " (empty: [Failed], as Kargo)"
        ),
        **_receivers(),
    },
    "Warehouse": {
        "spec": _ok("workflows/warehouse.py"),
        "spec.interval": _ok("workflows/warehouse.py"),
        "spec.freightCreationPolicy": _ok("workflows/warehouse.py"),
        "spec.freightCreationCriteria": _ok("workflows/warehouse.py"),
        "spec.freightCreationCriteria.expression": _ok(
            "freightline/kargo/freight.py (compiled at apply)"
        ),
        "spec.shard": _no(
            "Warehouse shards are not supported: any worker of the task queue discovers "
            "(a Stage's spec.shard routes its Argo CD steps); leave it out"
        ),
        **_subscriptions(),
    },
    "Stage": {
        "spec": _ok(_STAGE),
        "spec.shard": _ok("its Argo CD steps run on the shard's task queue (contracts/names.py)"),
        "spec.vars": _ok(
            _PLAN + " (before the promotion template's vars, as Kargo) and verification args"
        ),
        "spec.vars[].name": _ok(_PLAN),
        "spec.vars[].value": _ok(_PLAN),
        "spec.promotionTemplate": _ok(_PLAN),
        "spec.promotionTemplate.spec": _ok(_PLAN),
        "spec.promotionTemplate.spec.vars": _ok(_PLAN),
        "spec.promotionTemplate.spec.vars[].name": _ok(_PLAN),
        "spec.promotionTemplate.spec.vars[].value": _ok(_PLAN),
        **_steps("spec.promotionTemplate.spec.steps"),
        "spec.requestedFreight": _ok(_STAGE),
        "spec.requestedFreight[].origin": _ok(_STAGE),
        "spec.requestedFreight[].origin.kind": _ok("Warehouse, Kargo's only kind"),
        "spec.requestedFreight[].origin.name": _ok(_STAGE),
        "spec.requestedFreight[].sources": _ok(_STAGE),
        "spec.requestedFreight[].sources.direct": _ok(_STAGE),
        "spec.requestedFreight[].sources.stages": _ok(_STAGE),
        "spec.requestedFreight[].sources.requiredSoakTime": _ok(_STAGE),
        "spec.requestedFreight[].sources.availabilityStrategy": _ok(_STAGE),
        "spec.requestedFreight[].sources.autoPromotionOptions": _ok(_STAGE),
        "spec.requestedFreight[].sources.autoPromotionOptions.selectionPolicy": _no(
            "selectionPolicy MatchUpstream is not supported: a Stage does not track the Freight "
            "its upstream Stage holds now; it auto-promotes the newest available Freight "
            "(NewestFreight, the default)",
            _match_upstream,
        ),
        "spec.verification": _ok(_VERIFY),
        "spec.verification.analysisTemplates": _ok(_VERIFY),
        "spec.verification.analysisTemplates[].name": _ok(_VERIFY),
        "spec.verification.analysisTemplates[].kind": _ok(
            "AnalysisTemplate or ClusterAnalysisTemplate (workflows/cluster.py holds those)"
        ),
        "spec.verification.analysisRunMetadata": _ok(_VERIFY),
        "spec.verification.analysisRunMetadata.labels": _ok(_VERIFY),
        "spec.verification.analysisRunMetadata.annotations": _ok(_VERIFY),
        "spec.verification.args": _ok(_VERIFY),
        "spec.verification.args[].name": _ok(_VERIFY),
        "spec.verification.args[].value": _ok(_VERIFY + " (${{ }} with the Stage's vars)"),
    },
    "PromotionTask": {
        "spec": _ok(_PLAN),
        "spec.vars": _ok(_PLAN + " (defaults; a task step's vars win)"),
        "spec.vars[].name": _ok(_PLAN),
        "spec.vars[].value": _ok(_PLAN),
        **_steps("spec.steps"),
    },
    "Freight": {
        "alias": _ok("freightline/kargo/freight.py"),
        "origin": _ok("freightline/kargo/freight.py"),
        "origin.kind": _ok("Warehouse, Kargo's only kind"),
        "origin.name": _ok("freightline/kargo/freight.py"),
        "discoveredAt": _ok("workflows/warehouse.py (newest first)"),
        "images": _ok("freightline/kargo/freight.py (the ID), imageFrom()"),
        "images[].repoURL": _ok("imageFrom()"),
        "images[].tag": _ok("imageFrom()"),
        "images[].digest": _ok("imageFrom()"),
        "images[].annotations": _ok("imageFrom()"),
        "commits": _ok("freightline/kargo/freight.py (the ID), commitFrom()"),
        "commits[].repoURL": _ok("commitFrom()"),
        "commits[].id": _ok("commitFrom()"),
        "commits[].branch": _ok("commitFrom()"),
        "commits[].tag": _ok("commitFrom()"),
        "commits[].message": _ok("commitFrom()"),
        "commits[].author": _ok("commitFrom()"),
        "commits[].committer": _ok("commitFrom()"),
        "charts": _ok("freightline/kargo/freight.py (the ID), chartFrom()"),
        "charts[].repoURL": _ok("chartFrom()"),
        "charts[].name": _ok("chartFrom()"),
        "charts[].version": _ok("chartFrom()"),
        "artifacts": _ok("freightline/kargo/freight.py (the ID), artifactFrom()"),
        "artifacts[].artifactType": _ok("artifactFrom()"),
        "artifacts[].subscriptionName": _ok("artifactFrom()"),
        "artifacts[].version": _ok("artifactFrom()"),
        "artifacts[].metadata": _ok("artifactFrom()"),
    },
    "Promotion": {
        "spec": _ok("freightline apply starts it, as freightline promote does (app/cli.py)"),
        "spec.stage": _ok("the Stage it promotes into"),
        "spec.freight": _ok("the Freight (ID or alias) it promotes"),
        "spec.origin": _no(
            "a Promotion must name its Freight (spec.freight); an origin's auto-promotion "
            "candidate is not resolved"
        ),
        "spec.origin.kind": _no("see spec.origin"),
        "spec.origin.name": _no("see spec.origin"),
        "spec.steps": _no(
            "a Promotion runs its Stage's promotion template (Kargo overwrites spec.steps "
            "with it too); leave spec.steps out"
        ),
        **{f"spec.steps[].{path}": _no("see spec.steps") for path in _STEP_FIELDS},
        "spec.vars": _no(
            "a Promotion takes its Stage's vars (Kargo overwrites spec.vars with them too); "
            "leave spec.vars out"
        ),
        "spec.vars[].name": _no("see spec.vars"),
        "spec.vars[].value": _no("see spec.vars"),
    },
}


_ANALYSIS = "freightline/kargo/analysis.py"
_MEASURE = "activities/metrics.py and activities/providers/"


def _provider(name: str, fields: tuple[str, ...]) -> dict[str, KargoField]:
    base = f"spec.metrics[].provider.{name}"
    return {base: _ok(_MEASURE), **{f"{base}.{f}": _ok(_MEASURE) for f in fields}}


def _auth(base: str, basic: bool) -> dict[str, KargoField]:
    fields: dict[str, KargoField] = {}
    if basic:
        fields[f"{base}.basicAuth"] = _ok(_MEASURE)
        fields[f"{base}.basicAuth.username"] = _ok(_MEASURE)
        fields[f"{base}.basicAuth.password"] = _ok(_MEASURE + " ({{env.FREIGHTLINE_METRIC_*}})")
    else:
        why = "only a prometheus metric takes authentication (basicAuth); use headers here"
        fields[f"{base}.basicAuth"] = _no(why)
        fields[f"{base}.basicAuth.username"] = _no(why)
        fields[f"{base}.basicAuth.password"] = _no(why)
    for scheme, members in (
        ("oauth2", ("clientId", "clientSecret", "scopes", "tokenUrl")),
        ("sigv4", ("profile", "region", "roleArn")),
    ):
        if basic:  # prometheus: a client-credentials grant, AWS Signature Version 4
            fields[f"{base}.{scheme}"] = _ok(_MEASURE + f" ({scheme})")
            fields.update({f"{base}.{scheme}.{m}": _ok(_MEASURE) for m in members})
        else:
            why = f"{scheme} authentication is taken by prometheus metrics only; use headers"
            fields[f"{base}.{scheme}"] = _no(why)
            fields.update({f"{base}.{scheme}.{m}": _no(why) for m in members})
    return fields


def _unsupported_provider(name: str) -> KargoField:
    # The words of MetricProvider's own refusal (resources.PROVIDER_KINDS, in its order).
    return _no(
        f'the "{name}" provider is not supported; use one of prometheus, web, graphite, '
        "datadog, newRelic, cloudWatch, influxdb, wavefront"
    )


ANALYSIS_TEMPLATE_FIELDS: Final[Mapping[str, KargoField]] = {
    "spec": _ok(_ANALYSIS),
    "spec.args": _ok(_ANALYSIS),
    "spec.args[].name": _ok(_ANALYSIS),
    "spec.args[].value": _ok(_ANALYSIS),
    "spec.args[].valueFrom": _ok(_ANALYSIS),
    "spec.args[].valueFrom.fieldRef": _ok(_ANALYSIS + " (the Freight and the Stage)"),
    "spec.args[].valueFrom.fieldRef.fieldPath": _ok(_ANALYSIS),
    "spec.args[].valueFrom.secretKeyRef": _ok(_ANALYSIS + " (resolved in the activity)"),
    "spec.args[].valueFrom.secretKeyRef.key": _ok(_ANALYSIS),
    "spec.args[].valueFrom.secretKeyRef.name": _ok(_ANALYSIS),
    "spec.dryRun": _ok(_ANALYSIS),
    "spec.dryRun[].metricName": _ok(_ANALYSIS),
    "spec.measurementRetention": _ok(_ANALYSIS),
    "spec.measurementRetention[].limit": _ok(_ANALYSIS),
    "spec.measurementRetention[].metricName": _ok(_ANALYSIS),
    "spec.templates": _no(
        "nested templates are not supported: list every AnalysisTemplate in the Stage's "
        "verification.analysisTemplates (merged as Argo Rollouts merges them)"
    ),
    "spec.metrics": _ok(_ANALYSIS),
    "spec.metrics[].name": _ok(_ANALYSIS),
    "spec.metrics[].interval": _ok(_ANALYSIS),
    "spec.metrics[].initialDelay": _ok(_ANALYSIS),
    "spec.metrics[].count": _ok(_ANALYSIS),
    "spec.metrics[].successCondition": _ok(_ANALYSIS + " (compiled at apply)"),
    "spec.metrics[].failureCondition": _ok(_ANALYSIS + " (compiled at apply)"),
    "spec.metrics[].failureLimit": _ok(_ANALYSIS),
    "spec.metrics[].inconclusiveLimit": _ok(_ANALYSIS),
    "spec.metrics[].consecutiveErrorLimit": _ok(_ANALYSIS),
    "spec.metrics[].consecutiveSuccessLimit": _no(
        "consecutiveSuccessLimit (Argo Rollouts after v1.8) is not supported: a metric "
        "succeeds by its count and failureLimit"
    ),
    "spec.metrics[].provider": _ok(_MEASURE),
    **_provider(
        "prometheus", ("address", "query", "timeout", "insecure", "headers", "authentication")
    ),
    "spec.metrics[].provider.prometheus.headers[].key": _ok(_MEASURE),
    "spec.metrics[].provider.prometheus.headers[].value": _ok(_MEASURE),
    **_auth("spec.metrics[].provider.prometheus.authentication", basic=True),
    "spec.metrics[].provider.prometheus.rangeQuery": _ok(
        _MEASURE + " (query_range; a matrix result is a list)"
    ),
    "spec.metrics[].provider.prometheus.rangeQuery.start": _ok(_MEASURE + " (an expression)"),
    "spec.metrics[].provider.prometheus.rangeQuery.end": _ok(_MEASURE + " (an expression)"),
    "spec.metrics[].provider.prometheus.rangeQuery.step": _ok(_MEASURE),
    **_provider(
        "web",
        ("url", "method", "headers", "body", "jsonPath", "timeoutSeconds", "insecure"),
    ),
    "spec.metrics[].provider.web.headers[].key": _ok(_MEASURE),
    "spec.metrics[].provider.web.headers[].value": _ok(_MEASURE),
    "spec.metrics[].provider.web.jsonBody": _no(
        "jsonBody is not supported: give the JSON document as body"
    ),
    "spec.metrics[].provider.web.authentication": _no(
        "web metric authentication is not supported; send credentials in headers "
        "({{env.FREIGHTLINE_METRIC_*}})"
    ),
    **{
        path: _no("see spec.metrics[].provider.web.authentication")
        for path in _auth("spec.metrics[].provider.web.authentication", basic=True)
    },
    **_provider(
        "datadog",
        (
            "interval",
            "query",
            "queries",
            "formula",
            "apiVersion",
            "aggregator",
            "requestTimeout",
            "secretRef",
            "secretRef.name",
        ),
    ),
    "spec.metrics[].provider.datadog.secretRef.namespaced": _ok(
        "accepted, no effect: the worker has one credentials store"
    ),
    **_provider("newRelic", ("profile", "query", "timeout")),
    **_provider("graphite", ("address", "query")),
    **_provider("influxdb", ("profile", "query")),
    **_provider("wavefront", ("address", "query")),
    **_provider("cloudWatch", ("interval", "metricDataQueries")),
    **{
        f"spec.metrics[].provider.cloudWatch.metricDataQueries[].{path}": _ok(_MEASURE)
        for path in (
            "id",
            "expression",
            "label",
            "period",
            "returnData",
            "metricStat",
            "metricStat.period",
            "metricStat.stat",
            "metricStat.unit",
            "metricStat.metric",
            "metricStat.metric.metricName",
            "metricStat.metric.namespace",
            "metricStat.metric.dimensions",
            "metricStat.metric.dimensions[].name",
            "metricStat.metric.dimensions[].value",
        )
    },
    **{
        f"spec.metrics[].provider.{name}": _unsupported_provider(name)
        for name in ("job", "kayenta", "skywalking", "plugin")
    },
}
"""Argo Rollouts' AnalysisTemplate (``argoproj.io/v1alpha1``), as its CRD has it."""

FIELDS: Final[Mapping[str, Mapping[str, KargoField]]] = {
    **_KARGO_FIELDS,
    "AnalysisTemplate": ANALYSIS_TEMPLATE_FIELDS,
}
"""Kind -> field path -> what Freightline does with it."""


def refusals(kind: str, document: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """The refused fields ``document`` (plain data of ``kind``) sets: (location, reason).

    A refused field is reported at its outermost refused path only (``spec.steps``, not
    each step's ``uses`` too); an empty value (``[]``, ``{}``, ``""``, null) sets nothing.
    """
    fields = FIELDS.get(kind, {})
    refused = {path: field for path, field in fields.items() if field.refused}
    for path, field in sorted(refused.items()):
        if any(
            path.startswith(outer + ".") or path.startswith(outer + "[]")
            for outer, other in refused.items()
            if other.refused_when is None and outer != path
        ):
            continue  # inside a field that is refused whole: reported there
        for loc, value in _values(document, path.replace("[]", ".[]").split(".")):
            if value in (None, "", [], {}):
                continue
            if field.refused_when is not None and not field.refused_when(value):
                continue
            yield loc, field.refused


def _values(node: Any, parts: list[str], loc: tuple[Any, ...] = ()) -> Iterator[tuple[Any, Any]]:
    if not parts:
        yield loc, node
        return
    head, rest = parts[0], parts[1:]
    if head == "":
        yield from _values(node, rest, loc)
    elif head == "[]":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _values(item, rest, (*loc, index))
    elif isinstance(node, Mapping) and head in node:
        yield from _values(node[head], rest, (*loc, head))


def markdown_table() -> str:
    """The table of docs/kargo-compatibility.md (``python -m freightline.kargo.compatibility``)."""
    lines: list[str] = []
    for kind, fields in FIELDS.items():
        if not fields:
            continue
        lines += ["", f"### {kind}", "", "| field | what Freightline does |", "|---|---|"]
        for path, field in fields.items():
            status = (
                f"implemented: {field.implemented}"
                if field.implemented
                else f"**refused**: {field.refused}"
            )
            escaped = status.replace("|", "\\|")
            lines.append(f"| `{path}` | {escaped} |")
    return "\n".join(lines).lstrip("\n") + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
