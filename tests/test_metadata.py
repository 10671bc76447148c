"""The rules of set-freight-alias and set-metadata and of freightMetadata() / stageMetadata():
pure code, as Kargo's (``api/v1alpha1`` UpsertMetadata, ``pkg/expressions/function``)."""

from __future__ import annotations

from typing import Any

import pytest

from freightline.app.status_view import metadata_cell
from freightline.contracts.metadata import (
    FreightAliasChange,
    FreightMetadataChange,
    SetFreightAliasConfig,
    SetMetadataConfig,
    names_metadata_functions,
    with_alias,
    with_metadata,
)
from freightline.contracts.steps import parse_config
from freightline.contracts.verification import verification_request
from freightline.errors import ConfigError, ExpressionError, NotFoundError, RequestRefused
from freightline.kargo import expressions
from freightline.kargo.metadata import metadata_functions, upsert_metadata
from freightline.kargo.resources import AnalysisTemplate, Stage
from tests.pipelines import freight_for


def test_upsert_keeps_the_keys_it_does_not_name() -> None:
    before = {"a": 1, "b": {"c": [1, 2]}}
    after = upsert_metadata(before, {"b": None, "d": [True, 1.5, "x"]})
    assert after == {"a": 1, "b": None, "d": [True, 1.5, "x"]}
    assert before == {"a": 1, "b": {"c": [1, 2]}}  # not changed in place


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"": 1}, "metadata key must not be empty"),
        ({"k": float("nan")}, 'metadata value of "k" is not JSON'),
        ({"k": object()}, 'metadata value of "k" is not JSON'),
    ],
)
def test_upsert_refuses_what_kargo_cannot_store(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        upsert_metadata({}, values)


def render(expression: str) -> Any:
    env = metadata_functions({"f1": {"k": {"n": [1]}}}, {"uat": {"region": "eu"}, "empty": {}})
    return expressions.render("${{ " + expression + " }}", env)


def test_the_functions_return_the_whole_map_or_nil() -> None:
    assert render("freightMetadata('f1')") == {"k": {"n": [1]}}
    assert render("freightMetadata('f1').k.n[0]") == 1
    assert render("stageMetadata('uat')['region']") == "eu"
    assert render("freightMetadata('f2')") is None  # unknown: nil, as Kargo's NotFound
    assert render("stageMetadata('empty')") is None  # none set: nil
    assert render("stageMetadata('prod')?.region ?? 'us'") == "us"


def test_a_value_the_expression_changes_is_a_copy() -> None:
    functions = metadata_functions({"f1": {"k": [1]}}, {})
    functions["freightMetadata"]("f1")["k"].append(2)
    assert functions["freightMetadata"]("f1") == {"k": [1]}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("freightMetadata()", "expected 1 argument, got 0"),
        ("freightMetadata('a', 'b')", "expected 1 argument, got 2"),
        ("freightMetadata(1)", "first argument must be string, got int"),
        ("freightMetadata('')", "freight ref name must not be empty"),
        ("stageMetadata(true)", "argument must be string, got bool"),
        ("stageMetadata('')", "stage name must not be empty"),
    ],
)
def test_the_functions_check_their_arguments_as_kargo(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        render(expression)


def test_an_alias_another_freight_holds_is_refused_naming_it() -> None:
    first, second = freight_for("1.0.0"), freight_for("2.0.0")
    held = (first, second)
    with pytest.raises(RequestRefused) as refused:
        with_alias(held, FreightAliasChange(freight=second.metadata.name, alias=first.alias), "p")
    assert str(refused.value) == (
        f'alias "{first.alias}" already used by another piece of Freight in project "p": '
        f"Freight {first.metadata.name}"
    )
    renamed_held, renamed = with_alias(
        held, FreightAliasChange(freight=second.metadata.name, alias="v2"), "p"
    )
    assert renamed.alias == "v2" and renamed_held == (first, renamed)
    # Setting the alias it already has changes nothing: a retried step converges.
    assert with_alias(renamed_held, FreightAliasChange(freight=renamed.id, alias="v2"), "p")[0] == (
        first,
        renamed,
    )


def test_metadata_of_freight_not_held_is_not_found() -> None:
    with pytest.raises(NotFoundError, match='Freight "nope" not found in project "p"'):
        with_metadata(
            (freight_for("1.0.0"),), FreightMetadataChange(freight="nope", values={}), "p"
        )


def test_freight_metadata_is_upserted_in_its_status() -> None:
    target = freight_for("1.0.0")
    change = FreightMetadataChange(freight=target.metadata.name, values={"a": 1})
    held, annotated = with_metadata((target,), change, "p")
    assert annotated.status is not None and annotated.status.metadata == {"a": 1}
    again = FreightMetadataChange(freight=target.metadata.name, values={"b": 2})
    status = with_metadata(held, again, "p")[1].status
    assert status is not None and status.metadata == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"name": "f"}, "config.alias: Field required"),
        ({"name": "", "alias": "a"}, "config.name: String should have at least 1 character"),
        ({"name": "f", "alias": "a", "extra": 1}, "config.extra: Extra inputs are not permitted"),
        ({"name": "f", "alias": "-a"}, 'config.alias: "-a" is not a valid alias'),
        ({"name": "f", "alias": "a" * 64}, "is not a valid alias"),
    ],
)
def test_set_freight_alias_config_is_kargo_s_schema(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(SetFreightAliasConfig, config)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"updates": []}, "config.updates: Tuple should have at least 1 item"),
        ({"updates": [{"kind": "Stage", "name": "s"}]}, "config.updates.0.values: Field required"),
        (
            {"updates": [{"kind": "Stage", "name": "s", "values": {"a": 1}, "x": 1}]},
            "config.updates.0.x: Extra inputs are not permitted",
        ),
    ],
)
def test_set_metadata_config_is_kargo_s_schema(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(SetMetadataConfig, config)


def test_a_plan_snapshots_only_the_metadata_its_steps_can_read() -> None:
    assert names_metadata_functions([{"a": "${{ vars.x }}"}, None]) == frozenset()
    assert names_metadata_functions(
        [{"a": "${{ stageMetadata(ctx.stage).x }}"}, "freightMetadata('f') != nil"]
    ) == frozenset({"freightMetadata", "stageMetadata"})


def test_verification_args_read_the_freight_s_and_the_stage_s_metadata() -> None:
    """Kargo evaluates verification args with the same functions (FreightOperations,
    DataOperations): here over the Stage's copies of the Freight and its own metadata."""
    check = AnalysisTemplate.model_validate(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "check", "namespace": "p"},
            "spec": {
                "args": [{"name": "threshold"}, {"name": "region"}],
                "metrics": [
                    {
                        "name": "m",
                        "successCondition": "result < {{ args.threshold }}",
                        "provider": {"web": {"url": "http://{{ args.region }}.example/"}},
                    }
                ],
            },
        }
    )
    stage = Stage.model_validate(
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "uat", "namespace": "p"},
            "spec": {
                "requestedFreight": [
                    {"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": True}}
                ],
                "verification": {
                    "analysisTemplates": [{"name": "check"}],
                    "args": [
                        {
                            "name": "threshold",
                            "value": "${{ freightMetadata(ctx.targetFreight.name).threshold }}",
                        },
                        {"name": "region", "value": "${{ stageMetadata(ctx.stage).region }}"},
                    ],
                },
            },
        }
    )
    target = with_metadata(
        (freight_for("1.0.0"),),
        FreightMetadataChange(freight=freight_for("1.0.0").metadata.name, values={"threshold": 5}),
        "p",
    )[1]
    request = verification_request("p", stage, target, {"check": check}, [], {"region": "eu"})
    assert request is not None
    (metric,) = request.metrics
    assert metric.success_condition == "result < 5"
    assert metric.provider.web is not None and metric.provider.web.url == "http://eu.example/"


def test_the_status_view_shows_a_stage_s_metadata() -> None:
    assert metadata_cell({}) == ""
    assert metadata_cell({"region": "eu", "tier": 2, "x": {"a": [1]}}) == (
        'region="eu", tier=2, x={"a":[1]}'
    )
    assert len(metadata_cell({"long": "y" * 200})) == 60  # cut to the table's message width
