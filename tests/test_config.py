"""Resource models, the Freight ID rule and configuration loading."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import textwrap
from pathlib import Path
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freightline.errors import ConfigError
from freightline.kargo.config import (
    check_references,
    group_by_project,
    load_file,
    load_text,
    substitute_env,
)
from freightline.kargo.freight import (
    freight_alias,
    freight_id,
    freight_id_preimage,
    normalize_chart_url,
    normalize_git_url,
)
from freightline.kargo.resources import (
    APPLY_CHECKS,
    RESOURCE_KINDS,
    AnalysisTemplate,
    Chart,
    Freight,
    FreightOrigin,
    GitCommit,
    Image,
    ProjectResources,
    PromotionStep,
    ResourceBase,
    Stage,
    Warehouse,
    parse_duration,
)
from sandbox.gitops import KARGO_QUICKSTART

QUICKSTART = KARGO_QUICKSTART / "kargo.yaml"
QUICKSTART_ENV = {
    "GITOPS_REPO_URL": "https://github.com/example/kargo-demo.git",
    "GITHUB_USERNAME": "example",
    "GITHUB_PAT": "ghp_not_a_real_token",
}

HEADER = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: demo
---
"""

WAREHOUSE = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: images
spec:
  interval: 1m
  subscriptions:
  - image:
      repoURL: ghcr.io/example/app
      discoveryLimit: 10
"""


def quickstart_text() -> str:
    return substitute_env(QUICKSTART.read_text(), QUICKSTART_ENV)


def without_secret(text: str) -> str:
    documents = text.split("\n---\n")
    return "\n---\n".join(d for d in documents if "kind: Secret" not in d)


def load_error(text: str, source: str = "pipeline.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(text, source=source)
    return str(caught.value)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


# --- the quickstart ----------------------------------------------------------------------------


def test_quickstart_secret_is_refused_with_the_credential_scheme() -> None:
    text = quickstart_text()
    message = load_error(text, source=str(QUICKSTART))
    assert f"{QUICKSTART}:{line_of(text, 'kind: Secret') - 1}: document 2" in message
    assert 'Secret "kargo-demo-repo"' in message
    assert "move this document, unchanged" in message
    assert "FREIGHTLINE_CREDENTIALS_FILE" in message
    assert "FREIGHTLINE_GIT_USERNAME" in message and "FREIGHTLINE_GIT_PASSWORD" in message
    assert "https://github.com/example/kargo-demo.git" in message
    # the credential itself never reaches an error message
    assert "ghp_not_a_real_token" not in message
    assert len(message.splitlines()) == 1


def test_quickstart_without_secret_loads_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "kargo.yaml"
    path.write_text(without_secret(quickstart_text()))
    resources = load_file(path)
    assert [r.kind for r in resources] == [
        "Project",
        "Warehouse",
        "PromotionTask",
        "Stage",
        "Stage",
        "Stage",
    ]
    projects = group_by_project(resources)
    assert list(projects) == ["kargo-demo"]
    demo = projects["kargo-demo"]
    assert sorted(demo.stages) == ["prod", "test", "uat"]
    assert list(demo.promotion_tasks) == ["demo-promo-process"]
    warehouse = demo.warehouses["kargo-demo"]
    image = warehouse.spec.subscriptions[0].image
    assert image is not None
    assert image.discovery_limit == 5
    assert image.image_selection_strategy == "SemVer"
    assert image.strict_semvers is True
    assert warehouse.spec.interval == "5m0s"
    uat = demo.stages["uat"]
    assert uat.spec.requested_freight[0].sources.stages == ["test"]
    task = demo.promotion_tasks["demo-promo-process"]
    assert task.spec.steps[2].as_ == "update"
    assert task.spec.vars is not None
    assert task.spec.vars[0].value == "https://github.com/example/kargo-demo.git"
    assert task.spec.steps[0].config is not None
    # expressions are left for the evaluator, untouched by env substitution
    assert task.spec.steps[0].config["repoURL"] == "${{ vars.gitopsRepo }}"
    assert resources[3].source is not None
    assert resources[3].source.file == str(path)


def test_every_kind_round_trips_through_json() -> None:
    resources: list[ResourceBase] = list(load_text(without_secret(quickstart_text())))
    resources += load_text(
        HEADER
        + textwrap.dedent(
            """\
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: settings
            data:
              repoURL: https://github.com/example/repo.git
            ---
            apiVersion: kargo.akuity.io/v1alpha1
            kind: ProjectConfig
            metadata:
              name: demo
            spec:
              promotionPolicies:
              - stage: test
                autoPromotionEnabled: true
              - stageSelector:
                  name: "glob:uat*"
                autoPromotionEnabled: true
            ---
            apiVersion: kargo.akuity.io/v1alpha1
            kind: Freight
            metadata:
              name: abc
            alias: wise-otter
            origin: {kind: Warehouse, name: images}
            images:
            - {repoURL: ghcr.io/example/app, tag: 1.0.0, digest: "sha256:00ff",
               annotations: {a: b}}
            commits:
            - {repoURL: "https://github.com/example/app", id: abc123, branch: main}
            charts:
            - {repoURL: "oci://ghcr.io/example/chart", version: 1.2.3}
            ---
            apiVersion: kargo.akuity.io/v1alpha1
            kind: Promotion
            metadata:
              name: test.abc.1
            spec:
              stage: test
              freight: abc
            ---
            apiVersion: argoproj.io/v1alpha1
            kind: AnalysisTemplate
            metadata:
              name: success-rate
            spec:
              args:
              - name: service
              - name: threshold
                value: "0.95"
              metrics:
              - name: success-rate
                interval: 30s
                initialDelay: 10s
                count: 4
                successCondition: result[0] >= 0.95
                failureLimit: 1
                provider:
                  prometheus:
                    address: http://127.0.0.1:9090
                    query: sum(rate(http_requests_total[1m]))
              - name: health
                successCondition: result == "ok"
                provider:
                  web:
                    url: http://127.0.0.1:8080/health
                    headers: [{key: Accept, value: application/json}]
                    jsonPath: "{$.status}"
            ---
            apiVersion: argoproj.io/v1alpha1
            kind: ClusterAnalysisTemplate
            metadata:
              name: shared
            spec:
              metrics:
              - name: health
                provider: {web: {url: http://127.0.0.1:8080/health}}
            ---
            apiVersion: kargo.akuity.io/v1alpha1
            kind: ClusterConfig
            metadata:
              name: cluster
            spec:
              webhookReceivers:
              - name: shared
                github: {secretRef: {name: shared-secret}}
            """
        )
    )
    assert {r.kind for r in resources} == set(RESOURCE_KINDS)
    for resource in resources:
        dumped = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        again = type(resource).model_validate(dumped)
        assert again == resource, resource.kind
        assert again.model_dump(mode="json", by_alias=True, exclude_none=True) == dumped


def test_analysis_template_defaults() -> None:
    template = AnalysisTemplate.model_validate(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "t"},
            "spec": {
                "metrics": [
                    {
                        "name": "m",
                        "provider": {"prometheus": {"address": "http://p", "query": "up"}},
                    }
                ]
            },
        }
    )
    metric = template.spec.metrics[0]
    assert (metric.failure_limit, metric.inconclusive_limit, metric.consecutive_error_limit) == (
        0,
        0,
        4,
    )


def test_auto_promotion_policies() -> None:
    resources = load_text(
        without_secret(quickstart_text())
        + textwrap.dedent(
            """\
            ---
            apiVersion: kargo.akuity.io/v1alpha1
            kind: ProjectConfig
            metadata:
              name: kargo-demo
            spec:
              promotionPolicies:
              - stage: test
                autoPromotionEnabled: true
              - stageSelector: {name: "regex:^ua"}
                autoPromotionEnabled: true
            """
        )
    )
    demo = group_by_project(resources)["kargo-demo"]
    assert demo.auto_promotion_enabled("test")
    assert demo.auto_promotion_enabled("uat")
    assert not demo.auto_promotion_enabled("prod")


# --- problems, each located --------------------------------------------------------------------


def test_malformed_yaml_names_file_and_line() -> None:
    text = HEADER + "kind: Warehouse\nmetadata:\n  name: [unclosed\nspec: {}\n"
    message = load_error(text, source="broken.yaml")
    assert message.startswith("broken.yaml:")
    assert "invalid YAML" in message
    line = int(message.split(":")[1])
    assert line in range(7, 10)


def test_wrong_type() -> None:
    text = HEADER + WAREHOUSE.replace("discoveryLimit: 10", "discoveryLimit: lots")
    message = load_error(text)
    expected_line = line_of(text, "discoveryLimit")
    assert message.startswith(
        f'pipeline.yaml:{expected_line}: document 2 (Warehouse "images"): '
        "spec.subscriptions[0].image.discoveryLimit: expected a valid integer"
    )
    assert 'got "lots"' in message


def test_missing_required_field() -> None:
    text = HEADER + WAREHOUSE.replace("      repoURL: ghcr.io/example/app\n", "")
    message = load_error(text)
    line = line_of(text, "- image:")
    assert f'pipeline.yaml:{line}: document 2 (Warehouse "images"): ' in message
    assert "spec.subscriptions[0].image.repoURL: required field is missing" in message


def test_unknown_field() -> None:
    text = HEADER + WAREHOUSE + "  colour: blue\n"
    message = load_error(text)
    line = line_of(text, "colour")
    assert (
        f'pipeline.yaml:{line}: document 2 (Warehouse "images"): spec.colour: '
        'unknown field "colour"' in message
    )


def test_snake_case_spelling_is_an_unknown_field() -> None:
    text = HEADER + WAREHOUSE.replace("discoveryLimit", "discovery_limit")
    message = load_error(text)
    assert 'spec.subscriptions[0].image.discovery_limit: unknown field "discovery_limit"' in (
        message
    )


def test_enum_violation() -> None:
    text = HEADER + WAREHOUSE.replace(
        "      discoveryLimit: 10", "      imageSelectionStrategy: Newest"
    )
    message = load_error(text)
    line = line_of(text, "imageSelectionStrategy")
    assert f'pipeline.yaml:{line}: document 2 (Warehouse "images"): ' in message
    assert "spec.subscriptions[0].image.imageSelectionStrategy: expected " in message
    assert "'SemVer'" in message and 'got "Newest"' in message


def test_discovery_limit_bound() -> None:
    text = HEADER + WAREHOUSE.replace("discoveryLimit: 10", "discoveryLimit: 500")
    message = load_error(text)
    line = line_of(text, "discoveryLimit")
    assert message == (
        f'pipeline.yaml:{line}: document 2 (Warehouse "images"): '
        "spec.subscriptions[0].image.discoveryLimit: "
        "expected less than or equal to 100, got 500"
    )


def test_unknown_kind_and_api_version() -> None:
    text = HEADER + "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
    message = load_error(text)
    assert 'pipeline.yaml:6: document 2 (Deployment "web"): unknown kind "Deployment"' in message
    assert '"apps/v1"' in message
    text = HEADER + WAREHOUSE.replace("kargo.akuity.io/v1alpha1", "kargo.akuity.io/v1beta9")
    message = load_error(text)
    assert (
        'pipeline.yaml:6: document 2 (Warehouse "images"): apiVersion: Warehouse needs '
        '"kargo.akuity.io/v1alpha1", got "kargo.akuity.io/v1beta9"' in message
    )


def test_bad_duration() -> None:
    text = HEADER + WAREHOUSE.replace("interval: 1m", "interval: 5 minutes")
    message = load_error(text)
    line = line_of(text, "interval")
    assert f'pipeline.yaml:{line}: document 2 (Warehouse "images"): spec.interval: ' in message
    assert 'invalid duration "5 minutes"' in message


def test_every_problem_is_reported_at_once() -> None:
    text = (
        HEADER
        + WAREHOUSE.replace("discoveryLimit: 10", "discoveryLimit: 0")
        + "---\n"
        + WAREHOUSE.replace("name: images", "name: more").replace("interval: 1m", "interval: x")
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n"
    )
    lines = load_error(text).splitlines()
    assert len(lines) == 3
    assert "document 2" in lines[0] and "greater than or equal to 1" in lines[0]
    assert "document 3" in lines[1] and "spec.interval" in lines[1]
    assert "document 4" in lines[2] and 'unknown kind "Service"' in lines[2]


def test_step_needs_exactly_one_of_uses_and_task() -> None:
    stage = textwrap.dedent(
        """\
        apiVersion: kargo.akuity.io/v1alpha1
        kind: Stage
        metadata:
          name: test
        spec:
          requestedFreight:
          - origin: {kind: Warehouse, name: images}
            sources: {direct: true}
          promotionTemplate:
            spec:
              steps:
              - uses: git-clone
                task: {name: other}
        """
    )
    message = load_error(HEADER + stage)
    line = line_of(HEADER + stage, "- uses: git-clone")
    assert (
        f'pipeline.yaml:{line}: document 2 (Stage "test"): '
        'spec.promotionTemplate.spec.steps[0]: a step needs exactly one of "uses" or "task"'
    ) in message


def test_top_level_must_be_a_mapping() -> None:
    message = load_error("- just\n- a list\n")
    assert message.startswith("pipeline.yaml:1: document 1: expected a mapping")


def test_namespace_comes_from_the_project_or_is_required() -> None:
    resources = load_text(HEADER + WAREHOUSE)
    assert resources[1].namespace == "demo"
    message = load_error(WAREHOUSE)
    assert 'pipeline.yaml:3: document 1 (Warehouse "images"): metadata.namespace' in message
    assert load_text(WAREHOUSE, project="other")[0].namespace == "other"


def test_freight_without_a_name_is_named_by_its_id() -> None:
    text = HEADER + textwrap.dedent(
        """\
        apiVersion: kargo.akuity.io/v1alpha1
        kind: Freight
        origin: {kind: Warehouse, name: images}
        images: [{repoURL: ghcr.io/example/app, tag: 1.0.0, digest: "sha256:00"}]
        """
    )
    freight = load_text(text)[1]
    assert isinstance(freight, Freight)
    assert freight.name == freight.computed_id()
    assert freight.alias == freight_alias(freight.name)


# --- cross references --------------------------------------------------------------------------


def stage_doc(name: str, *, task: str = "promote", upstream: str | None = None) -> str:
    sources = f"stages: [{upstream}]" if upstream else "direct: true"
    return textwrap.dedent(
        f"""\
        apiVersion: kargo.akuity.io/v1alpha1
        kind: Stage
        metadata:
          name: {name}
        spec:
          requestedFreight:
          - origin: {{kind: Warehouse, name: images}}
            sources: {{{sources}}}
          promotionTemplate:
            spec:
              steps:
              - task:
                  name: {task}
        """
    )


TASK = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: promote
spec:
  steps:
  - uses: git-clone
"""


def group_error(text: str) -> str:
    resources = load_text(text, source="pipeline.yaml")
    with pytest.raises(ConfigError) as caught:
        group_by_project(resources)
    return str(caught.value)


def test_dangling_task_reference() -> None:
    text = HEADER + WAREHOUSE + "---\n" + TASK + "---\n" + stage_doc("test", task="promot")
    message = group_error(text)
    line = text.splitlines().index("          name: promot") + 1
    assert message == (
        f'pipeline.yaml:{line}: document 4 (Stage "test"): '
        "spec.promotionTemplate.spec.steps[0].task.name: unknown PromotionTask "
        '"promot" in project "demo" (known: promote)'
    )


def test_dangling_warehouse_upstream_and_analysis_template() -> None:
    stage = (
        stage_doc("uat", upstream="tst").replace("name: images", "name: imgs")
        + "  verification:\n    analysisTemplates:\n    - name: smoke\n"
    )
    text = HEADER + WAREHOUSE + "---\n" + TASK + "---\n" + stage
    lines = group_error(text).splitlines()
    assert any(
        "document 4" in m and "spec.requestedFreight[0].origin.name: unknown Warehouse" in m
        for m in lines
    )
    assert any(
        "spec.requestedFreight[0].sources.stages[0]: unknown upstream Stage" in m for m in lines
    )
    assert any(
        "spec.verification.analysisTemplates[0].name: unknown AnalysisTemplate" in m for m in lines
    )


def test_duplicate_names_and_cycles() -> None:
    text = (
        HEADER
        + WAREHOUSE
        + "---\n"
        + TASK
        + "---\n"
        + stage_doc("a", upstream="b")
        + "---\n"
        + stage_doc("b", upstream="a")
        + "---\n"
        + TASK
    )
    message = group_error(text)
    assert 'document 6 (PromotionTask "promote"): metadata.name: duplicate PromotionTask' in message
    assert "in a cycle" in message


def test_group_by_project_keeps_projects_apart() -> None:
    text = (
        HEADER
        + WAREHOUSE
        + "---\n"
        + WAREHOUSE.replace("name: images", "name: x").replace(
            "metadata:\n", "metadata:\n  namespace: other\n"
        )
    )
    projects = group_by_project(load_text(text))
    assert sorted(projects) == ["demo", "other"]
    assert isinstance(projects["other"], ProjectResources)
    assert list(projects["other"].warehouses) == ["x"]


# --- durations, env, credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m0s", 300), ("1h", 3600), ("30s", 30), ("1.5h", 5400), ("250ms", 0.25), ("0", 0),
     ("1h2m3s", 3723)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1d", "-1s", "1h 2m", "5m0"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_a_warehouse_interval_of_yaml_zero_means_only_on_refresh() -> None:
    document = textwrap.dedent(
        """\
        apiVersion: kargo.akuity.io/v1alpha1
        kind: Warehouse
        metadata: {name: w, namespace: p}
        spec:
          interval: INTERVAL
          subscriptions:
          - image: {repoURL: ghcr.io/acme/app}
        """
    )
    (warehouse,) = load_text(document.replace("INTERVAL", "0"), source="w.yaml")
    assert isinstance(warehouse, Warehouse) and warehouse.spec.interval == "0"
    with pytest.raises(ConfigError, match=r"spec\.interval"):  # any other bare number has no unit
        load_text(document.replace("INTERVAL", "5"), source="w.yaml")


def test_substitute_env() -> None:
    text = "a: ${A}\nb: ${{ vars.x }}\nc: ${UNKNOWN}\nd: $A\ne: ${A}${B}"
    assert substitute_env(text, {"A": "1", "B": "2"}) == (
        "a: 1\nb: ${{ vars.x }}\nc: ${UNKNOWN}\nd: $A\ne: 12"
    )


# --- arbitrary input ---------------------------------------------------------------------------

QUICKSTART_LINES = without_secret(quickstart_text()).splitlines()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_gives_resources_or_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load_text(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(QUICKSTART_LINES), max_size=60),
    st.lists(st.sampled_from(["", "0", "-1", "[]", "{}", "null", "x: y", "&a [*a]", "500"])),
)
def test_mangled_manifests_give_resources_or_config_error(
    lines: list[str], values: list[str]
) -> None:
    mangled = [
        f"{line.split(':')[0]}: {value}" if ":" in line else line
        for line, value in zip(lines, itertools.chain(values, itertools.repeat(None)), strict=False)
        if value is not None
    ] + lines[len(values) :]
    with contextlib.suppress(ConfigError):
        group_by_project(load_text("\n".join(mangled)))


# --- Freight IDs -------------------------------------------------------------------------------

ORIGIN = FreightOrigin(kind="Warehouse", name="kargo-demo")
IMAGE = Image(repo_url="public.ecr.aws/nginx/nginx", tag="1.29.1", digest="sha256:" + "ab" * 32)
COMMIT = GitCommit(
    repo_url="https://github.com/example/kargo-demo.git",
    id="0123456789abcdef0123456789abcdef01234567",
)
CHART = Chart(repo_url="oci://ghcr.io/example/charts/demo", version="1.2.3")


def test_freight_id_known_vector() -> None:
    # Kargo's rule: "<kind>/<name>:" + sorted artifact strings joined by "|", then SHA-1.
    preimage = (
        "Warehouse/kargo-demo:"
        "ghcr.io/example/charts/demo:1.2.3"
        "|https://github.com/example/kargo-demo:0123456789abcdef0123456789abcdef01234567"
        "|public.ecr.aws/nginx/nginx:1.29.1@sha256:" + "ab" * 32
    )
    assert freight_id_preimage(ORIGIN, [IMAGE], [COMMIT], [CHART]) == preimage
    expected = hashlib.sha1(preimage.encode(), usedforsecurity=False).hexdigest()
    assert expected == "61e1b2ba5bc959f5ab6bcd83caabbf989ef76b97"
    assert freight_id(ORIGIN, [IMAGE], [COMMIT], [CHART]) == expected
    freight = Freight(origin=ORIGIN, images=[IMAGE], commits=[COMMIT], charts=[CHART])
    assert freight_id(freight) == expected
    assert freight.with_computed_name().name == expected


def test_freight_id_tagged_commits_and_subscriptions() -> None:
    tagged = COMMIT.model_copy(update={"tag": "v1.0.0"})
    assert freight_id_preimage(ORIGIN, commits=[tagged]) == (
        "Warehouse/kargo-demo:https://github.com/example/kargo-demo:v1.0.0:"
        "0123456789abcdef0123456789abcdef01234567"
    )
    named = IMAGE.model_copy(update={"subscription_name": "app"})
    assert freight_id_preimage(ORIGIN, images=[named]).endswith("@sha256:" + "ab" * 32 + ":app")
    assert freight_id(ORIGIN, commits=[tagged]) != freight_id(ORIGIN, commits=[COMMIT])


def test_freight_id_is_deterministic_and_order_independent() -> None:
    images = [IMAGE, Image(repo_url="ghcr.io/example/b", tag="2", digest="sha256:cd")]
    commits = [COMMIT, GitCommit(repo_url="git@github.com:example/other.git", id="ff")]
    reference = freight_id(ORIGIN, images, commits, [CHART])
    for image_order in itertools.permutations(images):
        for commit_order in itertools.permutations(commits):
            assert freight_id(ORIGIN, image_order, commit_order, [CHART]) == reference
    assert freight_id(FreightOrigin(kind="Warehouse", name="other"), images, commits) != reference
    moved_tag = IMAGE.model_copy(update={"digest": "sha256:" + "cd" * 32})
    assert freight_id(ORIGIN, [moved_tag], commits, [CHART]) != freight_id(
        ORIGIN, [IMAGE], commits, [CHART]
    )
    # equivalent git URLs give the same Freight
    same_repo = COMMIT.model_copy(
        update={"repo_url": "https://user:pw@GitHub.com/example/kargo-demo/"}
    )
    assert freight_id(ORIGIN, commits=[same_repo]) == freight_id(ORIGIN, commits=[COMMIT])


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6), st.randoms())
def test_freight_id_order_independence_property(
    pairs: list[tuple[str, str]], random: Random
) -> None:
    images = [Image(repo_url=r, tag=t, digest="sha256:00") for r, t in pairs]
    shuffled = list(images)
    random.shuffle(shuffled)
    assert freight_id(ORIGIN, images) == freight_id(ORIGIN, shuffled)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://github.com/example/repo", "https://github.com/example/repo"),
        ("https://github.com/example/repo.git/", "https://github.com/example/repo"),
        ("https://foo:bar@localhost:8443/example/repo.git", "https://localhost:8443/example/repo"),
        ("ssh://git@github.com/example/repo.git/", "ssh://git@github.com/example/repo"),
        ("git@github.com:example/repo.git", "ssh://git@github.com/example/repo"),
        ("github.com:example/repo/", "ssh://github.com/example/repo"),
        ("git@git.example.com", "ssh://git@git.example.com"),
        ("http://github.com/example/repo?foo=bar", "http://github.com/example/repo?foo=bar"),
        ("not even remotely a url", "not even remotely a url"),
    ],
)
def test_normalize_git_url(url: str, normalized: str) -> None:
    assert normalize_git_url(url) == normalized


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("oci://ghcr.io/example/charts/demo", "ghcr.io/example/charts/demo"),
        ("OCI://registry-1.docker.io/bitnamicharts/redis", "bitnamicharts/redis"),
        ("oci://docker.io/library/nginx", "nginx"),
        ("https://charts.example.com", "https://charts.example.com"),
    ],
)
def test_normalize_chart_url(url: str, normalized: str) -> None:
    assert normalize_chart_url(url) == normalized


def test_chart_part_follows_go_path_join() -> None:
    chart = Chart(repo_url="https://Charts.example.com/", name="nginx", version="1.0.0")
    # path.Join cleans "//" to "/", which Kargo's IDs inherit
    assert freight_id_preimage(ORIGIN, charts=[chart]) == (
        "Warehouse/kargo-demo:https:/charts.example.com/nginx:1.0.0"
    )


def test_freight_alias() -> None:
    alias = freight_alias("61e1b2ba5bc959f5ab6bcd83caabbf989ef76b97")
    assert alias == freight_alias("61e1b2ba5bc959f5ab6bcd83caabbf989ef76b97")
    adjective, animal = alias.split("-")
    assert adjective.isalpha() and animal.isalpha()
    other = freight_alias("61e1b2ba5bc959f5ab6bcd83caabbf989ef76b97", taken={alias})
    assert other != alias
    aliases = {freight_alias(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(200)}
    assert len(aliases) > 150


def test_models_accept_python_names() -> None:
    step = PromotionStep(uses="git-push", as_="push", if_="${{ success() }}")
    assert step.model_dump(by_alias=True, exclude_none=True) == {
        "uses": "git-push",
        "as": "push",
        "if": "${{ success() }}",
    }
    stage = Stage.model_validate(
        {
            "metadata": {"name": "s", "uid": "kept"},
            "spec": {
                "requestedFreight": [
                    {"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": True}}
                ]
            },
        }
    )
    assert stage.api_version == "kargo.akuity.io/v1alpha1"
    assert (
        Warehouse.model_validate(
            {
                "metadata": {"name": "w"},
                "spec": {"subscriptions": [{"git": {"repoURL": "file:///tmp/r"}}]},
            }
        )
        .spec.subscriptions[0]
        .git
        is not None
    )


def test_check_references_without_sources() -> None:
    """Resources that came through Temporal (no file) are named by kind and name."""
    demo = group_by_project(load_text(without_secret(quickstart_text())))["kargo-demo"]
    travelled = ProjectResources.model_validate_json(demo.model_dump_json(by_alias=True))
    assert travelled == demo
    check_references(travelled)
    broken = travelled.model_copy(update={"promotion_tasks": {}})
    with pytest.raises(ConfigError) as caught:
        check_references(broken)
    assert str(caught.value).splitlines()[0] == (
        'Stage "test": spec.promotionTemplate.spec.steps[0].task.name: '
        'unknown PromotionTask "demo-promo-process" in project "kargo-demo"'
    )


# --- checked once, at apply -----------------------------------------------------------------

CHECKED_STAGE = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: test
  namespace: demo
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: images}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        if: "${{ success() }}"
        config:
          repoURL: "${{ vars.repo }}"
"""


def test_expressions_are_checked_at_apply_not_when_read_back() -> None:
    # apply refuses a bad expression, naming where it is ...
    bad = CHECKED_STAGE.replace("${{ success() }}", "${{ success( }}").replace(
        "${{ vars.repo }}", "${{ vars. }}"
    )
    message = load_error(bad)
    assert f"pipeline.yaml:{line_of(bad, 'if:')}" in message
    assert 'steps[0].if: expression "success("' in message
    assert 'steps[0].config: expression "vars."' in message
    # ... and a Stage read back from a workflow (Temporal's data converter: no validation
    # context) is not parsed again: it was checked when it was applied.
    (stage,) = load_text(CHECKED_STAGE)
    assert isinstance(stage, Stage)
    stored = stage.model_dump_json(by_alias=True, exclude_none=True)
    tampered = stored.replace("success()", "success(").replace("vars.repo", "vars.")
    read_back = Stage.model_validate_json(tampered)
    template = read_back.spec.promotion_template
    assert template is not None and template.spec.steps
    assert template.spec.steps[0].if_ == "${{ success( }}"
    assert Stage.model_validate_json(stored) == stage
    # The checks are the validation context's: with it, the same JSON is refused.
    with pytest.raises(ValueError, match="if"):
        Stage.model_validate_json(tampered, context=APPLY_CHECKS)
