"""set-freight-alias and set-metadata, as Kargo's, through real promotions on the dev server;
and freightMetadata() / stageMetadata() reading what they wrote.

Every example configuration on the two steps' Kargo reference pages (copied verbatim into
``tests/reference/kargo-steps/``) runs as a Stage's steps, read from the page itself. The
Freight the ``set-metadata`` example names, ``my-app-freight``, is a Freight aliased so (Kargo
would need its ID; Freightline takes the ID or the alias, as everywhere).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.project import ProjectActivities
from freightline.app.client import (
    apply_project,
    project_freight,
    promote_in_stage,
    stage_states,
)
from freightline.app.listings import freight_listing, stage_listing
from freightline.contracts.metadata import (
    SET_FREIGHT_ALIAS_UPDATE,
    FreightAliasChange,
    FreightAliasRequest,
    MetadataRequest,
    MetadataUpdate,
)
from freightline.contracts.names import (
    PROMOTION_WORKFLOW,
    project_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.project import warehouse_configs
from freightline.contracts.promotion import (
    PromotionPhase,
    PromotionRequest,
    PromotionResult,
    StepStatus,
)
from freightline.contracts.warehouse import WarehouseInput, WarehouseState
from freightline.kargo.config import ProjectResources, group_by_project, load_text
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from tests.conftest import wait_for
from tests.pipelines import IMAGE, dump, with_freight

pytestmark = pytest.mark.integration

PAGES = Path(__file__).parent / "reference" / "kargo-steps"


def examples(step: str) -> list[list[dict[str, Any]]]:
    """The ``steps:`` of every YAML example on the step's Kargo reference page."""
    text = (PAGES / f"{step}.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [YAML(typ="safe").load(block)["steps"] for block in blocks]


def freight(*, tag: str, alias: str | None = None, commit: str | None = None) -> Freight:
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
        "images": [{"repoURL": "some/repo", "tag": tag}],
    }
    if commit:
        body["commits"] = [{"repoURL": "https://example.com/repo.git", "id": commit}]
    body["metadata"]["name"] = freight_id(Freight.model_validate(body))
    body["alias"] = alias or freight_alias(body["metadata"]["name"])
    return Freight.model_validate(body)


def stage(name: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name, "namespace": "p"},
        "spec": {
            "requestedFreight": [
                {"origin": {"kind": "Warehouse", "name": "kargo-demo"}, "sources": {"direct": True}}
            ],
            "promotionTemplate": {"spec": {"steps": steps}},
        },
    }


def project(steps: list[dict[str, Any]]) -> ProjectResources:
    """Project ``p``: Stage ``test`` runs ``steps``; Stages ``production`` and ``staging``
    (the ones the examples name) only exist."""
    idle = [{"uses": "compose-output", "config": {"idle": True}}]
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "kargo-demo", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}], "interval": "0s"},
        },
        stage("test", steps),
        stage("production", idle),
        stage("staging", idle),
    ]
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    return resources


async def promote(client: Client, task_queue: str, freight: str) -> PromotionResult:
    """A Promotion of Freight (ID or alias) into ``test``, started as a person would with the
    ``temporal`` CLI; its result, whether it succeeded or not."""
    handle = await client.start_workflow(
        PROMOTION_WORKFLOW,
        PromotionRequest(project="p", stage="test", freight=freight),
        id=f"promotion:p:test:{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=PromotionResult,
    )
    try:
        result: PromotionResult = await handle.result()
    except WorkflowFailureError as failure:
        cause = failure.cause
        assert isinstance(cause, ApplicationError)
        (details,) = cause.details
        return PromotionResult.model_validate(details)
    return result


async def listed(client: Client, freight_id: str) -> dict[str, Any]:
    """What ``freightline get freight -o json`` prints for one Freight."""
    for found in await project_freight(client, "p"):
        if found.metadata.name == freight_id:
            return freight_listing(found)
    raise AssertionError(f"{freight_id} not listed")


async def stage_listed(client: Client, name: str) -> dict[str, Any]:
    """What ``freightline get stages -o json`` prints for one Stage."""
    resources = project([{"uses": "compose-output", "config": {"idle": True}}])
    (state,) = [s for s in await stage_states(client, "p") if s.name == name]
    return stage_listing(resources.stages[name], state)


# --- set-freight-alias ------------------------------------------------------------------------


async def test_set_freight_alias_reference_example(
    client: Client, worker: Worker, task_queue: str
) -> None:
    (steps,) = examples("set-freight-alias")
    only_image = freight(tag="v1.2.3")
    await apply_project(client, with_freight(project(steps), only_image))

    result = await promote(client, task_queue, only_image.metadata.name)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    (outcome,) = result.steps
    assert outcome.message == (
        f'updated alias of Freight "{only_image.metadata.name}" '
        f'from "{only_image.alias}" to "v1.2.3"'
    )
    assert result.freight_alias == "v1.2.3"
    listing = await listed(client, only_image.metadata.name)
    assert listing["alias"] == "v1.2.3" and listing["freight"]["alias"] == "v1.2.3"
    # The new alias names the Freight from now on.
    again = await promote(client, task_queue, "v1.2.3")
    assert again.phase is PromotionPhase.SUCCEEDED, again.message
    assert again.freight == only_image.metadata.name


async def test_a_stage_follows_the_new_alias(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """Promoted through its Stage, the Freight's new alias is what the Stage shows, and what a
    person promotes it by next."""
    (steps,) = examples("set-freight-alias")
    only_image = freight(tag="v1.2.3")
    await apply_project(client, with_freight(project(steps), only_image))

    async def test_stage() -> dict[str, Any]:
        status: dict[str, Any] = (await stage_listed(client, "test"))["status"]
        return status

    await wait_for(lambda: _has_available(client, only_image.metadata.name))
    await promote_in_stage(client, "p", "test", only_image.alias or "", "me")
    await wait_for(lambda: _promoted(client, 1))

    status = await test_stage()
    assert status["lastPromotion"]["phase"] == "Succeeded", status["lastPromotion"]
    assert status["currentFreight"]["freightAlias"] == "v1.2.3"
    await promote_in_stage(client, "p", "test", "v1.2.3", "me")
    await wait_for(lambda: _promoted(client, 2))
    assert [entry["freightAlias"] for entry in (await test_stage())["history"]] == ["v1.2.3"] * 2


async def _has_available(client: Client, freight_id: str) -> bool:
    (state,) = [s for s in await stage_states(client, "p") if s.name == "test"]
    return freight_id in state.available


async def _promoted(client: Client, count: int) -> bool:
    (state,) = [s for s in await stage_states(client, "p") if s.name == "test"]
    return len(state.history) >= count or (
        state.last_promotion is not None and state.last_promotion.phase != "Succeeded"
    )


async def test_set_freight_alias_refuses_an_alias_another_freight_holds(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """The page's caution: two Freight with the same image version contend for one alias."""
    (steps,) = examples("set-freight-alias")
    first = freight(tag="v1.2.3")
    second = freight(tag="v1.2.3", commit="a" * 40)
    await apply_project(client, with_freight(project(steps), first, second))
    assert (await promote(client, task_queue, first.metadata.name)).phase is (
        PromotionPhase.SUCCEEDED
    )

    result = await promote(client, task_queue, second.metadata.name)

    assert result.phase is PromotionPhase.FAILED
    assert result.failed_step == "step-0"
    assert result.message == (
        'step "step-0" (set-freight-alias): alias "v1.2.3" already used by another piece of '
        f'Freight in project "p": Freight {first.metadata.name}'
    )
    assert (await listed(client, second.metadata.name))["alias"] == second.alias


async def test_set_freight_alias_of_unknown_freight_fails(
    client: Client, worker: Worker, task_queue: str
) -> None:
    steps = [{"uses": "set-freight-alias", "config": {"name": "no-such-freight", "alias": "x"}}]
    target = freight(tag="v1")
    await apply_project(client, with_freight(project(steps), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.FAILED
    assert result.message == (
        'step "step-0" (set-freight-alias): Freight "no-such-freight" not found in project "p"'
    )


# --- set-metadata -----------------------------------------------------------------------------

# The expressions page's freightMetadata() / stageMetadata() examples, run after the step.
USING_METADATA = {
    "uses": "compose-output",
    "as": "read",
    "config": {
        "baz": "${{ freightMetadata(ctx.targetFreight.name).baz }}",
        "settings": '${{ freightMetadata(ctx.targetFreight.name)["settings"] ?? "default-settings" }}',
        "nested": "${{ freightMetadata(ctx.targetFreight.name)?.config?.settings?.timeoutSeconds"
        " ?? 300 }}",
        "foo": "${{ stageMetadata('production')['foo'] }}",
        "tier": '${{ stageMetadata("production")["tier"] ?? "default-tier" }}',
        "qux": "${{ freightMetadata(ctx.targetFreight.name).qux }}",
        "unknown": "${{ freightMetadata('no-such-freight') }}",
    },
}


# The recorded history (tests/histories/promotion-metadata.json): both steps, then a reader.
METADATA_SCENARIO = [
    *examples("set-metadata")[0],
    *examples("set-freight-alias")[0],
    USING_METADATA,
]


async def test_the_recorded_metadata_scenario_succeeds(
    client: Client, worker: Worker, task_queue: str
) -> None:
    target = freight(tag="v1.2.3", alias="my-app-freight")
    await apply_project(client, with_freight(project(METADATA_SCENARIO), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert result.freight_alias == "v1.2.3"
    assert result.outputs["read"]["baz"] is True


async def test_set_metadata_common_usage_example_and_reading_it_back(
    client: Client, worker: Worker, task_queue: str
) -> None:
    common, _ = examples("set-metadata")
    target = freight(tag="v1", alias="my-app-freight")
    await apply_project(client, with_freight(project([*common, USING_METADATA]), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    assert [s.status for s in result.steps] == [StepStatus.SUCCEEDED] * 2
    # Later steps of the same promotion read what it wrote.
    assert result.outputs["read"] == {
        "baz": True,
        "settings": "default-settings",
        "nested": 300,
        "foo": "hello",
        "tier": "default-tier",
        "qux": ["a", "b", "c"],
        "unknown": None,
    }
    # Where a person looks: get freight and get stages.
    freight_view = await listed(client, target.metadata.name)
    assert freight_view["metadata"] == {"baz": True, "qux": ["a", "b", "c"]}
    assert freight_view["freight"]["status"] == {"metadata": {"baz": True, "qux": ["a", "b", "c"]}}
    assert (await stage_listed(client, "production"))["status"]["metadata"] == {
        "foo": "hello",
        "bar": 42,
    }
    assert (await stage_listed(client, "test"))["status"]["metadata"] == {}


async def test_set_metadata_complex_example_upserts_and_a_later_promotion_reads_it(
    client: Client, worker: Worker, task_queue: str
) -> None:
    _, complex_example = examples("set-metadata")
    more = {
        "uses": "set-metadata",
        "config": {"updates": [{"kind": "Stage", "name": "staging", "values": {"tier": 2}}]},
    }
    target = freight(tag="v1")
    await apply_project(client, with_freight(project([*complex_example, more]), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    expected = {
        "foo": {
            "nested": "value",
            "numbers": [1, 2, 3],
            "items": [{"name": "item1", "value": "abc"}, {"name": "item2", "value": "xyz"}],
        },
        "bar": {"alpha": "one", "beta": "two"},
        "tier": 2,  # upserted: the keys written before are kept
    }
    assert (await stage_listed(client, "staging"))["status"]["metadata"] == expected

    # A later promotion reads the Stage's metadata when its plan is resolved.
    reader = {
        "uses": "compose-output",
        "as": "read",
        "config": {
            "items": "${{ stageMetadata('staging').foo.items[1].value }}",
            "tier": "${{ stageMetadata('staging').tier }}",
        },
    }
    await apply_project(client, with_freight(project([reader]), target))
    second = await promote(client, task_queue, target.metadata.name)
    assert second.phase is PromotionPhase.SUCCEEDED, second.message
    assert second.outputs["read"] == {"items": "xyz", "tier": 2}


async def test_set_metadata_of_an_unknown_stage_is_errored(
    client: Client, worker: Worker, task_queue: str
) -> None:
    steps = [
        {
            "uses": "set-metadata",
            "config": {"updates": [{"kind": "Stage", "name": "nowhere", "values": {"a": 1}}]},
        }
    ]
    target = freight(tag="v1")
    await apply_project(client, with_freight(project(steps), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.ERRORED
    assert result.message == (
        'step "step-0" (set-metadata): Stage "nowhere" not found in project "p"'
    )


async def test_set_metadata_config_is_checked_as_kargo_s_schema(
    client: Client, worker: Worker, task_queue: str
) -> None:
    steps = [
        {
            "uses": "set-metadata",
            "config": {"updates": [{"kind": "Warehouse", "name": "kargo-demo", "values": {}}]},
        }
    ]
    target = freight(tag="v1")
    await apply_project(client, with_freight(project(steps), target))

    result = await promote(client, task_queue, target.metadata.name)

    assert result.phase is PromotionPhase.ERRORED
    assert "config.updates.0.kind: Input should be 'Stage' or 'Freight'" in result.message
    assert "config.updates.0.values: Dictionary should have at least 1 item" in result.message


# --- Freight a Warehouse holds ----------------------------------------------------------------


async def test_both_steps_change_freight_its_warehouse_holds(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """Discovered Freight lives in its Warehouse workflow: the steps change it there."""
    steps = [
        *examples("set-freight-alias")[0],
        {
            "uses": "set-metadata",
            "config": {
                "updates": [
                    {
                        "kind": "Freight",
                        "name": "${{ ctx.targetFreight.name }}",
                        "values": {"tested": True},
                    }
                ]
            },
        },
    ]
    resources = project(steps)
    discovered = freight(tag="v9.9.9")
    # The Warehouse workflow, holding Freight as if it had discovered it; apply finds it running.
    await client.start_workflow(
        "Warehouse",
        WarehouseInput(
            project="p",
            config=warehouse_configs(resources)["kargo-demo"],
            state=WarehouseState(freight=(discovered,)),
            refresh=False,
        ),
        id=warehouse_workflow_id("p", "kargo-demo"),
        task_queue=task_queue,
    )
    await apply_project(client, resources)

    result = await promote(client, task_queue, discovered.alias or "")

    assert result.phase is PromotionPhase.SUCCEEDED, result.message
    held = await client.get_workflow_handle(warehouse_workflow_id("p", "kargo-demo")).query(
        "freight", result_type=list[Freight]
    )
    (renamed,) = held
    assert renamed.alias == "v9.9.9"
    assert renamed.status is not None and renamed.status.metadata == {"tested": True}
    assert (await listed(client, discovered.metadata.name))["metadata"] == {"tested": True}


async def test_a_retried_activity_converges_on_the_same_state(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """The activities run again (a retry after a crash, on any worker) change nothing more."""
    target = freight(tag="v3")
    await apply_project(
        client, with_freight(project([{"uses": "compose-output", "config": {"a": 1}}]), target)
    )
    activities = ProjectActivities(client)
    environment = ActivityEnvironment()
    rename = FreightAliasRequest(project="p", freight=target.alias or "", alias="three")
    annotate = MetadataRequest(
        project="p",
        updates=(
            MetadataUpdate(kind="Freight", name=target.metadata.name, values={"n": 1}),
            MetadataUpdate(kind="Stage", name="staging", values={"n": 2}),
        ),
    )
    first = await environment.run(activities.set_freight_alias, rename)
    again = await environment.run(
        activities.set_freight_alias, rename.model_copy(update={"freight": "three"})
    )
    assert (first.previous, first.alias, again.alias) == (target.alias, "three", "three")
    written = [await environment.run(activities.set_metadata, annotate) for _ in range(2)]
    assert written[0] == written[1]
    assert [a.metadata for a in written[1].applied] == [{"n": 1}, {"n": 2}]
    listing = await listed(client, target.metadata.name)
    assert (listing["alias"], listing["metadata"]) == ("three", {"n": 1})
    assert (await stage_listed(client, "staging"))["status"]["metadata"] == {"n": 2}


async def test_a_holder_s_validator_refuses_a_taken_alias_before_recording_it(
    client: Client, worker: Worker, task_queue: str
) -> None:
    """The update a step's activity sends: refused by the holding workflow's validator (a
    named, non-retryable type), so a duplicate alias is never recorded even in a race."""
    first, second = freight(tag="v1"), freight(tag="v2")
    await apply_project(client, with_freight(project([{"uses": "fail"}]), first, second))
    handle = client.get_workflow_handle(project_workflow_id("p"))
    change = FreightAliasChange(freight=second.metadata.name, alias=first.alias or "")

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(SET_FREIGHT_ALIAS_UPDATE, change, result_type=Freight)

    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RequestRefused"
    assert cause.non_retryable
    assert cause.message == (
        f'alias "{first.alias}" already used by another piece of Freight in project "p": '
        f"Freight {first.metadata.name}"
    )
    assert (await listed(client, second.metadata.name))["alias"] == second.alias
