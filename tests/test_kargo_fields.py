"""No Kargo field silently ignored: every field of Kargo v1.11's CRDs is implemented or refused
by ``apply``; errors at apply; Stage vars, auto-rollback, platform variants, cacheByTag's and
insecureSkipTLSVerify's effects; Promotion documents; akuity's example repositories' manifests.

The CRDs and the subscription schemas are Kargo's own, checked in under
``tests/reference/kargo-crds`` (provenance in ``tests/reference/README.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import types
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML
from temporalio.client import Client
from temporalio.worker import Worker

from activities.discovery import DiscoveryActivities
from freightline.app.client import apply_project, stage_states
from freightline.app.webhooks import WebhookServer
from freightline.contracts.promotion import plan_promotion
from freightline.contracts.verification import verification_request
from freightline.contracts.warehouse import DiscoveryRequest
from freightline.errors import ConfigError
from freightline.kargo.compatibility import FIELDS, KARGO_VERSION, markdown_table
from freightline.kargo.config import group_by_project, load_file, load_text
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.resources import (
    RESOURCE_KINDS,
    Freight,
    ImageSubscription,
    ProjectResources,
    RepoSubscription,
)
from freightline.kargo.webhooks import receiver_path
from freightline.settings import load_settings
from sandbox.forge import ForgeEmulator
from sandbox.gitops import branch_head, create_bare_repo, show_file
from tests.conftest import wait_for
from tests.pipelines import (
    AUTO_PROMOTE_ALL,
    IMAGE,
    dump,
    freight_for,
    quickstart_documents,
    single_stage_project,
    with_freight,
)

REFERENCE = Path(__file__).parent / "reference" / "kargo-crds"
EXAMPLES = Path(__file__).parent / "fixtures" / "kargo-examples"
ARGO_ROLLOUTS = Path(__file__).parent / "reference" / "argo-rollouts"


# --- every field, implemented or refused --------------------------------------------------------


def _walk(node: dict[str, Any], path: str, out: set[str]) -> None:
    for name, child in (node.get("properties") or {}).items():
        child_path = f"{path}.{name}" if path else name
        out.add(child_path)
        _walk(child, child_path, out)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], path + "[]", out)


def kargo_fields() -> dict[str, set[str]]:
    """Kind -> every field path of Kargo's CRD (status and object bookkeeping left out)."""
    fields: dict[str, set[str]] = {}
    for crd_file in sorted(REFERENCE.glob("kargo.akuity.io_*.yaml")):
        crd = YAML(typ="safe").load(crd_file.read_text())
        kind = crd["spec"]["names"]["kind"]
        (version,) = crd["spec"]["versions"]
        paths: set[str] = set()
        _walk(version["schema"]["openAPIV3Schema"], "", paths)
        fields[kind] = {
            p
            for p in paths
            if p not in ("apiVersion", "kind", "metadata")
            and not p.startswith(("status", "metadata."))
        }
    # Argo Rollouts' AnalysisTemplate, as its own CRD has it.
    crd = YAML(typ="safe").load((ARGO_ROLLOUTS / "analysis-template-crd.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    paths = set()
    _walk(version["schema"]["openAPIV3Schema"], "", paths)
    fields["AnalysisTemplate"] = {p for p in paths if p.startswith("spec")}
    # A Warehouse's subscriptions are free-form in the CRD; their schemas are these.
    for schema_file in sorted((REFERENCE / "subscriptions").glob("*.json")):
        kind = schema_file.stem
        prefix = f"spec.subscriptions[].{kind}"
        fields["Warehouse"].add(prefix)
        for name in json.loads(schema_file.read_text())["properties"]:
            fields["Warehouse"].add(f"{prefix}.{name}")
    return fields


def test_every_kargo_field_is_implemented_or_refused() -> None:
    assert KARGO_VERSION == "v1.11.0"
    kargo = kargo_fields()
    assert set(kargo) == set(FIELDS)
    for kind, paths in kargo.items():
        listed = set(FIELDS[kind])
        # Inside a field refused whole (Argo Rollouts' job provider: a pod spec) nothing more.
        whole = [p for p, f in FIELDS[kind].items() if f.refused and f.refused_when is None]
        inside = {p for p in paths if any(p.startswith((w + ".", w + "[]")) for w in whole)}
        assert paths - inside - listed == set(), f"{kind}: fields Freightline does not account for"
        assert listed - paths == set(), f"{kind}: entries Kargo v1.11 does not have"
        for path, field in FIELDS[kind].items():
            assert bool(field.implemented) != bool(field.refused), (kind, path)


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner_models(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [m for arg in typing.get_args(annotation) for m in _inner_models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _accepts(model: type[BaseModel], path: str) -> bool:
    """Whether ``model`` has a field at ``path`` (by manifest name); free-form data counts."""
    parts = [p for p in path.replace("[]", "").split(".") if p]
    current: list[type[BaseModel]] = [model]
    for part in parts:
        found = [
            info
            for m in current
            for name, info in m.model_fields.items()
            if (info.alias or name) == part
        ]
        if not found:
            return False
        current = [m for info in found for m in _inner_models(info.annotation)]
        if not current:
            return True  # a scalar, or free-form (step config, metadata): nothing deeper
    return True


def test_implemented_fields_are_accepted_by_the_models() -> None:
    for kind, fields in FIELDS.items():
        model = RESOURCE_KINDS[kind]
        for path, field in fields.items():
            if field.implemented:
                assert _accepts(model, path), f"{kind} {path} is not in the model"


_WAREHOUSE = {
    "apiVersion": "kargo.akuity.io/v1alpha1",
    "kind": "Warehouse",
    "metadata": {"name": "w", "namespace": "p"},
    "spec": {"subscriptions": [{"image": {"repoURL": "ghcr.io/example/app"}}]},
}
_STAGE = {
    "apiVersion": "kargo.akuity.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": "s", "namespace": "p"},
    "spec": {
        "requestedFreight": [{"origin": {"kind": "Warehouse", "name": "w"}, "sources": {}}],
    },
}
_PROMOTION = {
    "apiVersion": "kargo.akuity.io/v1alpha1",
    "kind": "Promotion",
    "metadata": {"name": "promo", "namespace": "p"},
    "spec": {"stage": "s", "freight": "abc"},
}
_ANALYSIS_TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "AnalysisTemplate",
    "metadata": {"name": "t", "namespace": "p"},
    "spec": {
        "metrics": [
            {
                "name": "m",
                "provider": {"prometheus": {"address": "http://127.0.0.1:9090", "query": "up"}},
            }
        ]
    },
}
_PROJECT_CONFIG = {
    "apiVersion": "kargo.akuity.io/v1alpha1",
    "kind": "ProjectConfig",
    "metadata": {"name": "p", "namespace": "p"},
    "spec": {},
}
# Each refused field (outermost), a base document and a value that sets it.
REFUSED_EXAMPLES: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {
    ("Warehouse", "spec.shard"): (_WAREHOUSE, "east"),
    ("Stage", "spec.requestedFreight[].sources.autoPromotionOptions.selectionPolicy"): (
        _STAGE,
        "MatchUpstream",
    ),
    ("Promotion", "spec.origin"): (_PROMOTION, {"kind": "Warehouse", "name": "w"}),
    ("Promotion", "spec.steps"): (_PROMOTION, [{"uses": "git-clone"}]),
    ("Promotion", "spec.vars"): (_PROMOTION, [{"name": "a", "value": "b"}]),
    ("ProjectConfig", "spec.freightLinks"): (_PROJECT_CONFIG, [{"title": "t", "url": "u"}]),
    ("ProjectConfig", "spec.stageLinks"): (_PROJECT_CONFIG, [{"title": "t", "url": "u"}]),
    ("AnalysisTemplate", "spec.templates"): (_ANALYSIS_TEMPLATE, [{"templateName": "other"}]),
    ("AnalysisTemplate", "spec.metrics[].consecutiveSuccessLimit"): (_ANALYSIS_TEMPLATE, 3),
    ("AnalysisTemplate", "spec.metrics[].provider.web.jsonBody"): (_ANALYSIS_TEMPLATE, {"a": 1}),
    ("AnalysisTemplate", "spec.metrics[].provider.web.authentication"): (
        _ANALYSIS_TEMPLATE,
        {"basicAuth": {"username": "u", "password": "p"}},
    ),
    **{
        ("AnalysisTemplate", f"spec.metrics[].provider.{name}"): (_ANALYSIS_TEMPLATE, {"a": 1})
        for name in ("job", "kayenta", "skywalking", "plugin")
    },
}


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    node: Any = copy
    parts = path.replace("[]", ".0").split(".")
    for part in parts[:-1]:
        key: Any = int(part) if part.isdigit() else part
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    node[parts[-1]] = value
    return copy


def test_refused_fields_are_refused_by_apply_naming_field_and_reason() -> None:
    outermost = {
        (kind, path)
        for kind, fields in FIELDS.items()
        for path, field in fields.items()
        if field.refused
        and not any(
            path.startswith(other + ".") or path.startswith(other + "[]")
            for other, outer in fields.items()
            if outer.refused and outer.refused_when is None and other != path
        )
    }
    assert outermost == set(REFUSED_EXAMPLES)
    for (kind, path), (base, value) in REFUSED_EXAMPLES.items():
        text = dump([_set(base, path, value)])
        with pytest.raises(ConfigError) as refused:
            load_text(text, source="refused.yaml")
        shown = path.replace("[]", "[0]")
        reason = FIELDS[kind][path].refused
        assert "refused.yaml:" in str(refused.value)
        assert f"{shown}: {reason}" in str(refused.value), str(refused.value)
        # The base document alone loads (the field is what was refused).
        load_text(dump([base]), source="base.yaml")
    # NewestFreight, Kargo's default selection policy, is accepted.
    load_text(
        dump(
            [
                _set(
                    _STAGE,
                    "spec.requestedFreight[].sources.autoPromotionOptions.selectionPolicy",
                    "NewestFreight",
                )
            ]
        )
    )


# --- errors at apply ----------------------------------------------------------------------------


def test_apply_compiles_everything_up_front_and_reports_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: w, namespace: p}
spec:
  interval: 5 minutes
  subscriptions:
  - image:
      repoURL: ghcr.io/example/app
      constraint: ">=1.0 <<2"
      strictSemvers: "yes"
      ignoreTagsRegexes: ["[a-"]
  - git:
      repoURL: https://github.com/example/app.git
      expressionFilter: "subject startsWith"
      includePaths: ["glob:src/{a,b"]
      excludePaths: ["regexp:(?P<"]
  freightCreationCriteria:
    expression: "imageFrom('ghcr.io/example/app').Tag =="
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: a, namespace: p}
spec:
  metrics:
  - name: m
    initialDelay: 10 seconds
    provider:
      web: {url: "http://127.0.0.1/x", jsonPath: "$.value"}
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_file(config)
    lines = str(caught.value).splitlines()
    expected = [
        ('pipeline.yaml:5: document 1 (Warehouse "w"): spec.interval', "invalid duration"),
        ("spec.subscriptions[0].image.constraint", "invalid semver constraint"),
        ("spec.subscriptions[0].image.strictSemvers", "expected a valid boolean"),
        ("spec.subscriptions[0].image.ignoreTagsRegexes[0]", "invalid regular expression"),
        ("spec.subscriptions[1].git.expressionFilter", "unexpected end of expression"),
        ("spec.subscriptions[1].git.includePaths[0]", "invalid glob"),
        ("spec.subscriptions[1].git.excludePaths[0]", "invalid regular expression"),
        ("spec.freightCreationCriteria.expression", "unexpected end of expression"),
        ('document 2 (AnalysisTemplate "a"): spec.metrics[0].initialDelay', "invalid duration"),
        ("spec.metrics[0].provider.web.jsonPath", "must be in braces"),
    ]
    assert len(lines) == len(expected), lines
    for (where, what), line in zip(expected, sorted(lines, key=_line_number), strict=True):
        assert where in line and what in line, (where, what, line)
        assert line.startswith(f"{config}:")


def _line_number(line: str) -> int:
    return int(line.split(":")[1])


def test_image_platform_with_a_variant() -> None:
    image = ImageSubscription.model_validate(
        {"repoURL": "ghcr.io/example/app", "platform": "linux/arm/v7", "cacheByTag": True}
    )
    from activities.discovery import image_policy

    policy = image_policy(RepoSubscription(image=image))
    assert policy.platform_constraint is not None
    assert policy.platform_constraint.variant == "v7"
    assert policy.cache_by_tag is True
    with pytest.raises(ValueError, match="platform"):
        ImageSubscription.model_validate({"repoURL": "ghcr.io/x/y", "platform": "linux"})


# --- Stage vars and auto-rollback ---------------------------------------------------------------


def _stage_vars_project(repo: Path) -> ProjectResources:
    documents = YAML(typ="safe").load_all(
        dump(
            [
                {
                    "apiVersion": "kargo.akuity.io/v1alpha1",
                    "kind": "Project",
                    "metadata": {"name": "p"},
                },
                {
                    "apiVersion": "kargo.akuity.io/v1alpha1",
                    "kind": "Warehouse",
                    "metadata": {"name": "kargo-demo", "namespace": "p"},
                    "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}]},
                },
                {
                    "apiVersion": "kargo.akuity.io/v1alpha1",
                    "kind": "Stage",
                    "metadata": {"name": "test", "namespace": "p"},
                    "spec": {
                        "vars": [
                            {"name": "repo", "value": repo.as_uri()},
                            {"name": "team", "value": "blue"},
                            {"name": "label", "value": "${{ vars.team }}-${{ ctx.stage }}"},
                        ],
                        "requestedFreight": [
                            {
                                "origin": {"kind": "Warehouse", "name": "kargo-demo"},
                                "sources": {"direct": True},
                            }
                        ],
                        "promotionTemplate": {
                            "spec": {
                                "vars": [{"name": "team", "value": "green"}],
                                "steps": [
                                    {
                                        "uses": "compose-output",
                                        "as": "out",
                                        "config": {"team": "${{ vars.team }}"},
                                    }
                                ],
                            }
                        },
                        "verification": {
                            "analysisTemplates": [{"name": "t"}],
                            "args": [{"name": "label", "value": "${{ vars.label }}"}],
                        },
                    },
                },
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "AnalysisTemplate",
                    "metadata": {"name": "t", "namespace": "p"},
                    "spec": {
                        "args": [{"name": "label"}],
                        "metrics": [
                            {
                                "name": "m",
                                "provider": {"web": {"url": "http://127.0.0.1/{{args.label}}"}},
                            }
                        ],
                    },
                },
            ]
        )
    )
    (resources,) = group_by_project(load_text(dump(list(documents)))).values()
    return resources


def test_stage_vars_come_before_the_template_vars_and_reach_verification(
    tmp_path: Path,
) -> None:
    resources = with_freight(_stage_vars_project(tmp_path), freight_for("1.29.1"))
    freight = freight_for("1.29.1")
    plan = plan_promotion(resources, "test", freight.metadata.name, "promotion:p:test:x")
    (step,) = plan.steps
    # Kargo's order: the Stage's vars, then the template's (a later var of a name wins).
    assert [(v.name, v.value) for v in step.vars] == [
        ("repo", tmp_path.as_uri()),
        ("team", "blue"),
        ("label", "${{ vars.team }}-${{ ctx.stage }}"),
        ("team", "green"),
    ]
    request = verification_request(
        "p", resources.stages["test"], freight, resources.analysis_templates
    )
    assert request is not None
    (metric,) = request.metrics
    assert metric.provider.web is not None
    assert metric.provider.web.url == "http://127.0.0.1/blue-test"


def test_auto_rollback_as_kargo() -> None:
    def policies(rollback: dict[str, Any] | None) -> ProjectResources:
        config = json.loads(json.dumps(AUTO_PROMOTE_ALL))
        if rollback is not None:
            config["spec"]["promotionPolicies"][0]["autoRollback"] = rollback
        return ProjectResources.model_validate({"name": "kargo-demo", "project_config": config})

    assert policies(None).auto_rollback_on_verification("test") == ()
    # Kargo: onVerification absent or empty means [Failed].
    assert policies({}).auto_rollback_on_verification("test") == ("Failed",)
    assert policies({"onPromotion": ["Errored"]}).auto_rollback_on_verification("test") == (
        "Failed",
    )
    assert policies({"onVerification": ["Error"]}).auto_rollback_on_verification("test") == (
        "Error",
    )
    assert policies({}).auto_rollback_on_promotion("test") == ()
    assert policies({"onPromotion": ["Failed", "Errored"]}).auto_rollback_on_promotion("test") == (
        "Failed",
        "Errored",
    )


# --- akuity's example repositories ----------------------------------------------------------


def _example(name: str) -> ProjectResources:
    resources = []
    for document_file in sorted((EXAMPLES / name).glob("*.yaml")):
        resources.extend(load_file(document_file))
    (project,) = group_by_project(resources).values()
    return project


@pytest.mark.parametrize("name", ["kargo-simple", "kargo-advanced"])
def test_akuity_examples_apply_unchanged(name: str) -> None:
    """The manifests of akuity/kargo-simple and akuity/kargo-advanced, as they are upstream,
    load, group and plan every Stage (see tests/fixtures/kargo-examples/README.md for what
    stops them running offline)."""
    project = _example(name)
    assert project.name == name
    warehouse = project.warehouses["guestbook"]
    freight = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"namespace": name},
        "origin": {"kind": "Warehouse", "name": "guestbook"},
        "images": [{"repoURL": "ghcr.io/akuity/guestbook", "tag": "v0.0.1"}],
        "commits": [
            {"repoURL": s.git.repo_url, "id": "a" * 40}
            for s in warehouse.spec.subscriptions
            if s.git is not None
        ],
    }
    (loaded,) = load_text(dump([freight]))
    assert isinstance(loaded, Freight)
    project = with_freight(project, loaded)
    planned: dict[str, str | list[str]] = {}
    for stage, resource in project.stages.items():
        template = resource.spec.promotion_template
        if template is None:
            continue  # kargo-advanced's "prod" is a control-flow Stage: nothing to run
        try:
            plan = plan_promotion(project, stage, loaded.metadata.name, f"promotion:{stage}")
        except ConfigError as err:
            planned[stage] = str(err)
            continue
        planned[stage] = [s.uses for s in plan.steps]
    if name == "kargo-simple":
        # Its PromotionTask's pull-request steps are planned in every Stage; their `if:`
        # (vars.openpr, "true" in prod only) decides at run time.
        steps = ["git-clone", "kustomize-set-image", "git-commit", "git-push", "git-push"]
        steps += ["git-open-pr", "git-wait-for-pr"]
        assert planned == {stage: steps for stage in ("dev", "staging", "prod")}
    else:
        assert planned == {
            stage: [
                "git-clone",
                "git-clear",
                "kustomize-set-image",
                "kustomize-build",
                "git-commit",
                "git-push",
                "argocd-update",
            ]
            for stage in (
                "dev",
                "staging",
                "ab-test-a",
                "ab-test-b",
                "prod-west",
                "prod-central",
                "prod-east",
            )
        }


# --- insecureSkipTLSVerify ---------------------------------------------------------------------


@pytest.fixture
def https_chart_repository(tmp_path: Path) -> Iterator[str]:
    """An HTTPS chart repository whose certificate is self-signed (so no client trusts it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    index = dump([{"apiVersion": "v1", "entries": {"app": [{"version": "1.2.3", "urls": []}]}}])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = index.encode() if self.path.endswith("/index.yaml") else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/charts"
    finally:
        server.shutdown()
        server.server_close()


async def test_insecure_skip_tls_verify_reaches_the_chart_client(
    https_chart_repository: str,
) -> None:
    activities = DiscoveryActivities(CredentialStore(None))

    def request(**fields: Any) -> DiscoveryRequest:
        chart = {"repoURL": https_chart_repository, "name": "app", **fields}
        return DiscoveryRequest(
            project="p",
            warehouse="w",
            subscriptions=(RepoSubscription.model_validate({"chart": chart}),),
        )

    try:
        with pytest.raises(Exception, match=r"(?i)certificate"):
            await activities.discover_warehouse(request())
        result = await activities.discover_warehouse(request(insecureSkipTLSVerify=True))
    finally:
        await activities.aclose()
    (charts,) = result.subscriptions
    assert [c.version for c in charts.charts] == ["1.2.3"]


# --- Promotion documents and auto-rollback on promotion (a worker and Temporal) ----------------


async def _apply_file(client: Client, path: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "freightline",
        "apply",
        "-f",
        str(path),
        env={**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.mark.integration
async def test_a_promotion_document_starts_its_promotion_once(
    client: Client, worker: Worker, gitops_repo: Path, tmp_path: Path
) -> None:
    freight = freight_for("1.29.1")
    documents = [d for d in quickstart_documents(gitops_repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "PromotionTask":
            steps = document["spec"]["steps"]
            document["spec"]["steps"] = steps[: [s["uses"] for s in steps].index("git-push") + 1]
    documents.append(freight.model_dump(mode="json", by_alias=True, exclude_none=True))
    documents.append(
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Promotion",
            "metadata": {"name": "test-by-hand", "namespace": "kargo-demo"},
            "spec": {"stage": "test", "freight": freight.alias},
        }
    )
    manifest = tmp_path / "kargo.yaml"
    manifest.write_text(dump(documents))

    first = await _apply_file(client, manifest)
    assert "Promotion/test-by-hand created" in first
    assert "queued (Promotion/test-by-hand)" in first

    async def promoted() -> bool:
        test = {s.name: s for s in await stage_states(client, "kargo-demo")}["test"]
        return bool(test.history) and test.running is None and not test.queue

    await wait_for(promoted, timeout=60)
    # Applied again, unchanged: the Promotion exists already and starts nothing.
    second = await _apply_file(client, manifest)
    assert "Promotion/test-by-hand unchanged" in second and "queued" not in second
    test = {s.name: s for s in await stage_states(client, "kargo-demo")}["test"]
    assert [h.freight for h in test.history] == [freight.metadata.name]
    assert test.queue == [] and test.running is None


@pytest.mark.integration
async def test_a_failed_promotion_rolls_back_to_the_last_verified_freight(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    good, bad = freight_for("1.29.1"), freight_for("1.29.9")
    resources = single_stage_project(
        gitops_repo,
        [
            {
                "uses": "fail",
                "if": f"${{{{ imageFrom('{IMAGE}').Tag == '1.29.9' }}}}",
                "config": {"message": "1.29.9 cannot go anywhere"},
            },
            {"uses": "compose-output", "as": "out", "config": {"tag": "1"}},
        ],
    )
    policy = {
        "stage": "test",
        "autoPromotionEnabled": True,
        "autoRollback": {"onPromotion": ["Failed"]},
    }
    (config,) = load_text(
        dump(
            [
                {
                    **AUTO_PROMOTE_ALL,
                    "metadata": {"name": "p", "namespace": "p"},
                    "spec": {"promotionPolicies": [policy]},
                }
            ]
        )
    )
    resources = resources.model_copy(update={"project_config": config})
    await apply_project(client, with_freight(resources, good))

    async def test_state() -> Any:
        return {s.name: s for s in await stage_states(client, "p")}["test"]

    async def holds_good() -> bool:
        state = await test_state()
        return bool(state.history) and state.running is None and not state.queue

    await wait_for(holds_good, timeout=60)
    await apply_project(client, with_freight(resources, good, bad))

    async def rolled_back() -> bool:
        state = await test_state()
        return len(state.history) == 2 and state.running is None and not state.queue

    await wait_for(rolled_back, timeout=60)
    state = await test_state()
    # The bad Freight's promotion Failed; the Stage promoted the good one again, and holds
    # auto-promotion there instead of trying the bad one once more.
    assert [h.freight for h in state.history] == [good.metadata.name, good.metadata.name]
    assert state.history[0].promotion != state.history[1].promotion
    assert state.last_promotion is not None and state.last_promotion.freight == good.metadata.name
    assert state.auto_hold == {"kargo-demo": good.metadata.name}


def test_the_compatibility_page_lists_every_field_as_the_table_does() -> None:
    page = (Path(__file__).parent.parent / "docs" / "kargo-compatibility.md").read_text()
    heading = "## Every field\n\n"
    assert heading in page
    assert page.split(heading, 1)[1] == markdown_table(), (
        "regenerate the table: python -m freightline.kargo.compatibility"
    )


# --- akuity's examples, run: only their GitHub URLs rewritten to local repositories ---------


def _example_run(name: str, tmp_path: Path, *extra: dict[str, Any]) -> tuple[Path, Path]:
    """A bare repository seeded with the example's own kustomize tree, and a manifest of its
    Kargo documents, unchanged but for the GitHub URL, plus ``extra`` documents."""
    repo = create_bare_repo(tmp_path / f"{name}.git", EXAMPLES / f"{name}-repo")
    text = "\n---\n".join(f.read_text() for f in sorted((EXAMPLES / name).glob("*.yaml"))).replace(
        f"https://github.com/akuity/{name}.git", repo.as_uri()
    )
    manifest = tmp_path / "kargo.yaml"
    manifest.write_text(text + "\n---\n" + dump(list(extra)))
    return repo, manifest


def _guestbook_freight(name: str, tag: str, commit: str | None = None) -> Freight:
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"namespace": name},
        "origin": {"kind": "Warehouse", "name": "guestbook"},
        "images": [{"repoURL": "ghcr.io/akuity/guestbook", "tag": tag}],
    }
    if commit is not None:
        body["commits"] = [{"repoURL": commit.split("@")[0], "id": commit.split("@")[1]}]
    (freight,) = load_text(dump([body]))
    assert isinstance(freight, Freight)
    return freight


def _promotion(name: str, project: str, stage: str, freight: str) -> dict[str, Any]:
    return {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Promotion",
        "metadata": {"name": name, "namespace": project},
        "spec": {"stage": stage, "freight": freight},
    }


async def _last_promotion(client: Client, project: str, stage: str) -> Any:
    async def ended() -> bool:
        state = {s.name: s for s in await stage_states(client, project)}[stage]
        return state.last_promotion is not None and state.running is None and not state.queue

    await wait_for(ended, timeout=90)
    return {s.name: s for s in await stage_states(client, project)}[stage].last_promotion


def _on_forge(text: str, repo_url: str) -> str:
    """kargo-simple's manifests with its GitHub URL rewritten to the forge emulator's, and
    ``provider: github`` added to the pull-request steps (the emulator's host, 127.0.0.1,
    names no forge)."""
    documents = [d for d in YAML(typ="safe").load_all(text) if d]
    for document in documents:
        if document["kind"] == "PromotionTask":
            for step in document["spec"]["steps"]:
                if step["uses"] in ("git-open-pr", "git-wait-for-pr"):
                    step["config"]["provider"] = "github"
    return dump(documents).replace("https://github.com/akuity/kargo-simple.git", repo_url)


@pytest.mark.integration
async def test_kargo_simple_runs_dev_staging_and_prods_pull_request_on_a_forge(
    client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dev and staging push the new tag to main; prod pushes a branch of its own and opens
    a pull request into main on the forge, as written. Its git-wait-for-pr reads the
    open-pr step's ``prNumber``, an output Kargo deprecated in v1.6 and dropped in v1.7
    (now ``pr.id``): on Kargo v1.11, as here, the wait is given no number and errors. With
    that one expression updated, prod waits until a person merges the pull request."""
    from worker import build_worker

    token, secret = "forge-token-0123456789", "kargo-simple-hook-secret"
    forge = ForgeEmulator("github", tmp_path / "forge", token=token, webhook_secret=secret)
    try:
        forge.add_repo("akuity/kargo-simple", seed=EXAMPLES / "kargo-simple-repo")
        repo_url = forge.repo_url("akuity/kargo-simple")
        creds = tmp_path / "creds.yaml"
        creds.write_text(
            dump(
                [
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {
                            "name": "forge",
                            "labels": {"kargo.akuity.io/cred-type": "git"},
                        },
                        "stringData": {"repoURL": repo_url, "username": "bot", "password": token},
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "gh", "namespace": "kargo-simple"},
                        "stringData": {"secret": secret},
                    },
                ]
            )
        )
        monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(creds))
        text = "\n---\n".join(
            f.read_text() for f in sorted((EXAMPLES / "kargo-simple").glob("*.yaml"))
        )
        manifest = tmp_path / "kargo.yaml"
        freight = _guestbook_freight("kargo-simple", "v0.0.2")
        name = freight.metadata.name
        # The forge's pull_request events go to a Kargo GitHub receiver of the project's.
        receivers = {"webhookReceivers": [{"name": "gh", "github": {"secretRef": {"name": "gh"}}}]}
        project_config = {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "ProjectConfig",
            "metadata": {"name": "kargo-simple", "namespace": "kargo-simple"},
            "spec": receivers,
        }
        documents = [
            project_config,
            freight.model_dump(mode="json", by_alias=True, exclude_none=True),
        ]

        def main(path: str) -> str:
            return show_file(forge.store.repos["akuity/kargo-simple"], "main", path)

        async def promote(stage: str, tail: str = "", manifest_text: str = text) -> Any:
            documents.append(_promotion(f"{stage}-v0.0.2{tail}", "kargo-simple", stage, name))
            manifest.write_text(_on_forge(manifest_text, repo_url) + "\n---\n" + dump(documents))
            assert f"queued (Promotion/{stage}-v0.0.2{tail})" in await _apply_file(client, manifest)
            return await _last_promotion(client, "kargo-simple", stage)

        server = WebhookServer(
            client, credentials=CredentialStore(creds), host="127.0.0.1", index_interval=0
        )
        async with server, build_worker(client, load_settings(), queue=task_queue):
            path = receiver_path("kargo-simple", "github", "gh", secret)
            forge.webhook_url = f"http://127.0.0.1:{server.port}{path}"
            dev = await promote("dev")
            assert dev.phase == "Succeeded", dev.message
            assert "newTag: v0.0.2" in main("env/dev/kustomization.yaml")
            assert "newTag: v0.0.1" in main("env/staging/kustomization.yaml")
            # Staging takes it from dev (verified there: dev has no verification).
            staging = await promote("staging")
            assert staging.phase == "Succeeded", staging.message
            assert "newTag: v0.0.2" in main("env/staging/kustomization.yaml")

            prod = await promote("prod")
            (pr,) = forge.store.pulls["akuity/kargo-simple"]
            assert pr.target == "main" and pr.source.startswith("kargo/promotion/")
            assert pr.state == "open"
            assert "newTag: v0.0.2" in show_file(
                forge.store.repos["akuity/kargo-simple"], pr.source, "env/prod/kustomization.yaml"
            )
            assert "newTag: v0.0.1" in main("env/prod/kustomization.yaml")
            assert prod.phase == "Errored", prod.message
            assert "config.prNumber: Input should be a valid integer" in prod.message

            # Kargo v1.7's form of the same expression: prod waits for the merge.
            updated = text.replace(
                "task.outputs['open-pr'].prNumber", "task.outputs['open-pr'].pr.id"
            )
            assert updated != text
            documents.append(_promotion("prod-v0.0.2-again", "kargo-simple", "prod", name))
            manifest.write_text(_on_forge(updated, repo_url) + "\n---\n" + dump(documents))
            assert "queued (Promotion/prod-v0.0.2-again)" in await _apply_file(client, manifest)

            def second_pull() -> bool:
                return len(forge.store.pulls["akuity/kargo-simple"]) == 2

            await wait_for(second_pull, timeout=60)
            second = forge.store.pulls["akuity/kargo-simple"][1]
            # The receiver finds the waiting promotion by search attribute: once it is
            # visible, a person's merge wakes it (its next poll is 30 s away).
            url = forge.web_url("akuity/kargo-simple", second.number)

            async def waiting() -> bool:
                query = f"FreightlinePullRequest = '{url}'"
                return [e async for e in client.list_workflows(query)] != []

            await wait_for(waiting, timeout=60)
            forge.merge("akuity/kargo-simple", second.number, user="alice")
            (delivery,) = await asyncio.to_thread(forge.wait_for_deliveries, 1)
            assert delivery.status == 200, delivery
            prod = await _last_promotion(client, "kargo-simple", "prod")
            assert prod.phase == "Succeeded", prod.message
            assert "newTag: v0.0.2" in main("env/prod/kustomization.yaml")
        assert forge.violations == []  # every request and answer as GitHub's OpenAPI says
    finally:
        forge.stop()


@pytest.mark.integration
async def test_kargo_advanced_renders_dev_and_stops_at_argo_cd(
    client: Client, worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, manifest = _example_run("kargo-advanced", tmp_path)
    head = branch_head(repo, "main")
    assert head is not None
    freight = _guestbook_freight("kargo-advanced", "v0.0.3", f"{repo.as_uri()}@{head}")
    manifest.write_text(
        manifest.read_text()
        + dump(
            [
                freight.model_dump(mode="json", by_alias=True, exclude_none=True),
                _promotion("dev-v0.0.3", "kargo-advanced", "dev", freight.metadata.name),
            ]
        )
    )
    assert "queued (Promotion/dev-v0.0.3)" in await _apply_file(client, manifest)
    dev = await _last_promotion(client, "kargo-advanced", "dev")
    # Everything up to git-push ran: the rendered branch holds the new image. What stops
    # the run is its last step, argocd-update: this worker has no Argo CD.
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "refs/heads/env/dev"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert listing, "the rendered branch env/dev was pushed"
    everything = "".join(show_file(repo, "env/dev", path) for path in listing)
    assert "ghcr.io/akuity/guestbook:v0.0.3" in everything
    assert dev.phase in ("Errored", "Failed")
    assert "ARGOCD_SERVER" in dev.message, dev.message


def test_selectors_and_webhook_expressions_are_compiled_at_apply() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(
            dump(
                [
                    {
                        **_PROJECT_CONFIG,
                        "spec": {
                            "promotionPolicies": [
                                {
                                    "stageSelector": {"name": "regexp:("},
                                    "autoPromotionEnabled": True,
                                }
                            ],
                            "webhookReceivers": [
                                {
                                    "name": "r",
                                    "generic": {
                                        "secretRef": {"name": "s"},
                                        "actions": [
                                            {"action": "Refresh", "whenExpression": "a ==="}
                                        ],
                                    },
                                }
                            ],
                        },
                    }
                ]
            )
        )
    message = str(caught.value)
    assert "spec.promotionPolicies[0].stageSelector.name: invalid regular expression" in message
    assert "spec.webhookReceivers[0].generic.actions[0].whenExpression: expression" in message
    # regexp: selects Stages as regex: does (Kargo's name patterns).
    config = dict(_PROJECT_CONFIG)
    config["spec"] = {
        "promotionPolicies": [{"stageSelector": {"name": "regexp:^prod-"}, "autoRollback": {}}]
    }
    (loaded,) = load_text(dump([config]))
    resources = ProjectResources.model_validate({"name": "p", "project_config": loaded})
    assert resources.policy_for("prod-east") is not None
    assert resources.policy_for("dev") is None
