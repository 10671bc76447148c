"""One Freight per origin (Kargo's FreightCollection): a Stage fed by two Warehouses keeps
the Freight of each, its steps and verification see both, and Stages downstream take each.

The pure rules first (origin choice in ``imageFrom``, the collection a promotion records,
auto-promotion per origin, state kept before collections), then real promotions on the
dev server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project, promote_in_stage, stage_states
from freightline.app.listings import freight_summary
from freightline.app.status_view import pipeline_table
from freightline.contracts.project import stage_configs
from freightline.contracts.promotion import (
    PromotionRequest,
    PromotionResult,
    StepScope,
    plan_promotion,
)
from freightline.contracts.stage import (
    AvailableFreight,
    PromotionTicket,
    StageState,
    auto_promotion_candidates,
    previous_of_origin,
    record_promoted,
)
from freightline.contracts.verification import verification_request
from freightline.errors import ExpressionError
from freightline.kargo import expressions
from freightline.kargo.config import ProjectResources, group_by_project, load_text
from freightline.kargo.freight import artifact_functions, requested_origins
from freightline.kargo.resources import Freight
from sandbox.gitops import git, show_file
from tests.conftest import wait_for
from tests.metric_server import ErrorRateServer
from tests.pipelines import IMAGE, dump, freight_for, with_freight

PROJECT = "origins"
FRONT = IMAGE
BACK = "ghcr.io/example/back"
NOW = datetime(2026, 12, 1, tzinfo=UTC)

SEEN = {
    "uses": "compose-output",
    "as": "seen",
    "config": {
        # The origin named, and not: only Warehouse "back" subscribes to BACK.
        "front": '${{ imageFrom("' + FRONT + '", warehouse("front"))?.Tag ?? "none" }}',
        "back": '${{ imageFrom("' + BACK + '")?.Tag ?? "none" }}',
        "target": "${{ ctx.targetFreight.origin.name }}",
    },
}


def steps(repo: Path) -> list[dict[str, Any]]:
    """The quickstart's steps, but kustomize-set-image without ``images``: every image of
    the Freight collection (Kargo's default), then what the expressions see."""
    return [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": repo.as_uri(),
                "checkout": [
                    {"branch": "main", "path": "./src"},
                    {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
                ],
            },
        },
        {"uses": "git-clear", "config": {"path": "./out"}},
        {"uses": "kustomize-set-image", "as": "update", "config": {"path": "./src/base"}},
        {
            "uses": "kustomize-build",
            "config": {"path": "./src/stages/${{ ctx.stage }}", "outPath": "./out"},
        },
        {
            "uses": "git-commit",
            "config": {"path": "./out", "message": "${{ outputs.update.commitMessage }}"},
        },
        {"uses": "git-push", "config": {"path": "./out"}},
        SEEN,
    ]


def tags_template(url: str) -> dict[str, Any]:
    """An AnalysisTemplate asking ``url/rate/<front tag>-<back tag>`` for an error rate."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "tags", "namespace": PROJECT},
        "spec": {
            "args": [{"name": "front"}, {"name": "back"}],
            "metrics": [
                {
                    "name": "tags",
                    "successCondition": "result < 0.05",
                    "provider": {
                        "web": {
                            "url": url + "/rate/{{args.front}}-{{args.back}}",
                            "jsonPath": "{$.errorRate}",
                        }
                    },
                }
            ],
        },
    }


def two_warehouse_project(
    repo: Path, *, auto: bool = False, verification: str | None = None, rollback: bool = False
) -> ProjectResources:
    """Warehouses front (FRONT) and back (BACK); Stage test takes both directly, uat takes
    both once verified in test; with ``verification`` (a metric server's URL), test
    verifies the tags of both origins, and with ``rollback`` rolls back a failure."""
    meta = {"namespace": PROJECT}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": PROJECT}}
    ]
    for name, image in (("front", FRONT), ("back", BACK)):
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": name, **meta},
                "spec": {"interval": "1h", "subscriptions": [{"image": {"repoURL": image}}]},
            }
        )
    for stage, sources in (("test", {"direct": True}), ("uat", {"stages": ["test"]})):
        spec: dict[str, Any] = {
            "requestedFreight": [
                {"origin": {"kind": "Warehouse", "name": origin}, "sources": sources}
                for origin in ("front", "back")
            ],
            "promotionTemplate": {"spec": {"steps": steps(repo)}},
        }
        if verification and stage == "test":
            spec["verification"] = {
                "analysisTemplates": [{"name": "tags"}],
                "args": [
                    {"name": "front", "value": '${{ imageFrom("' + FRONT + '").Tag }}'},
                    {"name": "back", "value": '${{ imageFrom("' + BACK + '")?.Tag ?? "" }}'},
                ],
            }
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": stage, **meta},
                "spec": spec,
            }
        )
    if verification:
        documents.append(tags_template(verification))
    if auto or rollback:
        policy: dict[str, Any] = {"stageSelector": {"name": "glob:*"}, "autoPromotionEnabled": auto}
        if rollback:
            policy["autoRollback"] = {"onVerification": ["Failed"]}
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "ProjectConfig",
                "metadata": {"name": PROJECT, **meta},
                "spec": {"promotionPolicies": [policy]},
            }
        )
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    return resources


def front(tag: str) -> Freight:
    return _ours(freight_for(tag, FRONT, "front"))


def back(tag: str) -> Freight:
    return _ours(freight_for(tag, BACK, "back"))


def _ours(freight: Freight) -> Freight:
    return freight.model_copy(
        update={"metadata": freight.metadata.model_copy(update={"namespace": PROJECT})}
    )


# --- the pure rules -------------------------------------------------------------------------


def test_image_from_picks_the_origin_by_kargos_rule(tmp_path: Path) -> None:
    resources = two_warehouse_project(tmp_path)
    subscriptions = requested_origins(resources, resources.stages["test"])
    assert subscriptions == {"front": (f"image:{FRONT}",), "back": (f"image:{BACK}",)}
    f1, b1 = front("1.29.1"), back("2.0.0")
    env = artifact_functions([f1, b1], subscriptions=subscriptions)
    assert expressions.evaluate(f'imageFrom("{BACK}").Tag', env) == "2.0.0"
    assert expressions.evaluate(f'imageFrom("{FRONT}").Tag', env) == "1.29.1"
    # Only front's Freight so far: back's image is nil, not an error.
    alone = artifact_functions([f1], subscriptions=subscriptions)
    assert expressions.evaluate(f'imageFrom("{BACK}")', alone) is None
    # Both Warehouses subscribe to one repository: ambiguous even with one Freight held
    # (Kargo decides on the subscriptions); the origin argument settles it.
    both = {"front": (f"image:{FRONT}",), "back": (f"image:{FRONT}",)}
    picked = artifact_functions([f1], subscriptions=both)
    with pytest.raises(ExpressionError, match=r"\(back, front\): name the origin"):
        expressions.evaluate(f'imageFrom("{FRONT}")', picked)
    assert expressions.evaluate(f'imageFrom("{FRONT}", warehouse("front")).Tag', picked) == (
        "1.29.1"
    )
    assert expressions.evaluate(f'imageFrom("{FRONT}", warehouse("back"))', picked) is None


def _state(resources: ProjectResources, *freight: Freight, auto: bool = False) -> StageState:
    config = stage_configs(resources)["test"].model_copy(update={"auto_promotion": auto})
    state = StageState(config=config)
    for index, item in enumerate(freight):
        state.available[item.metadata.name] = AvailableFreight(
            freight=item, direct=True, first_seen=NOW + timedelta(seconds=index)
        )
    return state


def _promoted(state: StageState, freight: Freight, when: datetime) -> None:
    ticket = PromotionTicket(
        promotion=f"promotion:{freight.alias}",
        freight=freight.metadata.name,
        freight_alias=freight.alias,
        requested_by="alice",
        requested_at=when,
    )
    record_promoted(state, ticket, when)


def test_a_promotion_replaces_its_origins_freight_and_keeps_the_others(tmp_path: Path) -> None:
    f1, f2, b1 = front("1.29.1"), front("1.29.2"), back("2.0.0")
    state = _state(two_warehouse_project(tmp_path), f1, f2, b1)
    _promoted(state, f1, NOW)
    _promoted(state, b1, NOW + timedelta(minutes=1))
    assert {o: r.freight for o, r in state.current_collection.items()} == {
        "back": b1.metadata.name,
        "front": f1.metadata.name,
    }
    state.history[0].verified = True
    _promoted(state, f2, NOW + timedelta(minutes=2))
    assert {o: r.freight for o, r in state.current_collection.items()} == {
        "back": b1.metadata.name,
        "front": f2.metadata.name,
    }
    assert state.current is not None and state.current.origin == "front"
    # A rollback of f2 goes back to front's Freight of the last verified collection.
    assert previous_of_origin(state, f2.metadata.name, "front") == f1.metadata.name
    assert previous_of_origin(state, b1.metadata.name, "back") is None


def test_auto_promotion_chooses_per_origin(tmp_path: Path) -> None:
    f1, b1 = front("1.29.1"), back("2.0.0")
    state = _state(two_warehouse_project(tmp_path), f1, b1, auto=True)
    chosen = auto_promotion_candidates(state, NOW + timedelta(minutes=1))
    assert [c.freight.metadata.name for c in chosen] == [f1.metadata.name, b1.metadata.name]
    _promoted(state, f1, NOW + timedelta(minutes=1))
    _promoted(state, b1, NOW + timedelta(minutes=2))
    # Both origins' newest are here: nothing to do (the last promoted alone said "front").
    assert auto_promotion_candidates(state, NOW + timedelta(minutes=3)) == []
    old_rule = auto_promotion_candidates(state, NOW + timedelta(minutes=3), per_origin=False)
    assert [c.freight.metadata.name for c in old_rule] == [f1.metadata.name]


def test_state_kept_before_collections_carries_its_one_freight(tmp_path: Path) -> None:
    f1 = front("1.29.1")
    state = _state(two_warehouse_project(tmp_path), f1)
    old = state.model_dump(mode="json", by_alias=True)
    old["history"] = [
        {
            "freight": f1.metadata.name,
            "freightAlias": f1.alias,
            "promotion": "promotion:x",
            "promotedAt": NOW.isoformat(),
            "verified": True,
            "versions": ["nginx:1.29.1"],
        }
    ]
    loaded = StageState.model_validate(old)
    (ref,) = loaded.current_collection.values()
    assert list(loaded.current_collection) == ["front"]
    assert (ref.freight, ref.versions) == (f1.metadata.name, ("nginx:1.29.1",))
    assert freight_summary(loaded) == "1/2 Fulfilled"


def test_plan_and_verification_see_the_whole_collection(tmp_path: Path) -> None:
    f1, f0, b1 = front("1.29.1"), front("1.0.0"), back("2.0.0")
    resources = with_freight(
        two_warehouse_project(tmp_path, verification="http://127.0.0.1:1"), f1, f0, b1
    )
    plan = plan_promotion(resources, "test", b1.metadata.name, "p:x", collection=[f1.metadata.name])
    assert [f.origin.name for f in plan.freight_collection] == ["back", "front"]
    step = next(s for s in plan.steps if s.alias == "seen")
    assert StepScope(plan, []).render_config(step) == {
        "front": "1.29.1",
        "back": "2.0.0",
        "target": "back",
    }
    assert plan.alias_set(f1.metadata.name, "renamed").collection[0].alias == "renamed"
    # The promoted Freight's own origin is replaced, not kept.
    replaced = plan_promotion(
        resources, "test", f1.metadata.name, "p:x", collection=[f0.metadata.name]
    )
    assert replaced.freight_collection == (f1,)

    request = verification_request(
        PROJECT,
        resources.stages["test"],
        b1,
        dict(resources.analysis_templates),
        collection=[f1, b1],
        subscriptions=requested_origins(resources, resources.stages["test"]),
    )
    assert request is not None
    web = request.metrics[0].provider.web
    assert web is not None and web.url.endswith("/rate/1.29.1-2.0.0")


def test_the_status_table_shows_a_line_per_origin(tmp_path: Path) -> None:
    f1, b1 = front("1.29.1"), back("2.0.0")
    state = _state(two_warehouse_project(tmp_path), f1, b1)
    _promoted(state, f1, NOW)
    _promoted(state, b1, NOW)
    table = pipeline_table(PROJECT, [state])
    assert list(table.columns[1].cells) == [f"back: {b1.alias}\nfront: {f1.alias}"]
    assert list(table.columns[2].cells) == ["back:2.0.0\nnginx:1.29.1"]
    assert freight_summary(state) == "2/2 Fulfilled"


# --- real promotions ------------------------------------------------------------------------


async def _states(client: Client) -> dict[str, StageState]:
    return {s.name: s for s in await stage_states(client, PROJECT)}


async def _collection(client: Client, stage: str) -> dict[str, str]:
    state = (await _states(client)).get(stage)
    if state is None:
        return {}
    return {origin: ref.freight for origin, ref in state.current_collection.items()}


async def _seen(client: Client, promotion: str) -> dict[str, Any]:
    handle = client.get_workflow_handle(promotion, result_type=PromotionResult)
    result = await handle.result()
    return dict(result.outputs["seen"])


@pytest.mark.integration
async def test_a_stage_fed_by_two_warehouses_keeps_both_and_passes_both_downstream(
    client: Client, worker: Worker, task_queue: str, gitops_repo: Path
) -> None:
    f1, f2, b1 = front("1.29.1"), front("1.29.2"), back("2.0.0")
    await apply_project(client, with_freight(two_warehouse_project(gitops_repo), f1, f2, b1))

    async def promoted(stage: str, freight: Freight, collection: dict[str, Freight]) -> None:
        await promote_in_stage(client, PROJECT, stage, freight.alias or "", "alice")
        want = {origin: f.metadata.name for origin, f in collection.items()}

        async def there() -> bool:
            state = (await _states(client))[stage]
            return await _collection(client, stage) == want and state.running is None

        await wait_for(there, timeout=60)

    await promoted("test", f1, {"front": f1})
    await promoted("test", b1, {"front": f1, "back": b1})
    await promoted("test", f2, {"front": f2, "back": b1})
    test = (await _states(client))["test"]
    assert [h.origin for h in test.history] == ["front", "back", "front"]
    assert all(h.verified for h in test.history)
    # Each promotion's steps saw the whole collection: back's Freight while front moved.
    seen = [await _seen(client, h.promotion) for h in reversed(test.history)]
    assert seen == [
        {"front": "1.29.1", "back": "none", "target": "front"},
        {"front": "1.29.1", "back": "2.0.0", "target": "back"},
        {"front": "1.29.2", "back": "2.0.0", "target": "front"},
    ]
    # kustomize-set-image without images set every image of the collection.
    message = git("log", "-1", "--format=%B", "refs/heads/stage/test", cwd=gitops_repo)
    assert f"{FRONT}:1.29.2" in message and f"{BACK}:2.0.0" in message
    rendered = show_file(gitops_repo, "stage/test", "deployment-kargo-demo.yaml")
    assert f"{FRONT}:1.29.2" in rendered

    # uat requests both origins from test: each Freight test verified is available there.
    await promoted("uat", b1, {"back": b1})
    await promoted("uat", f2, {"front": f2, "back": b1})
    uat = (await _states(client))["uat"]
    assert {o: r.freight_alias for o, r in uat.current_collection.items()} == {
        "back": b1.alias,
        "front": f2.alias,
    }
    assert uat.available[f1.metadata.name].verified_in.keys() == {"test"}

    # A promotion started by hand (no collection in its input) reads the Stage's.
    handle = await client.start_workflow(
        "Promotion",
        PromotionRequest(project=PROJECT, stage="test", freight=f1.metadata.name),
        id=f"promotion:{PROJECT}:test:by-hand",
        task_queue=task_queue,
        result_type=PromotionResult,
    )
    result = await handle.result()
    assert result.outputs["seen"] == {"front": "1.29.1", "back": "2.0.0", "target": "front"}


@pytest.mark.integration
async def test_auto_promotion_per_origin_flows_both_downstream(
    client: Client, worker: Worker, gitops_repo: Path
) -> None:
    f1, b1 = front("1.29.1"), back("2.0.0")
    resources = two_warehouse_project(gitops_repo, auto=True)
    await apply_project(client, with_freight(resources, f1, b1))
    both = {"front": f1.metadata.name, "back": b1.metadata.name}

    async def everywhere(want: dict[str, str]) -> bool:
        return all([await _collection(client, s) == want for s in ("test", "uat")])

    await wait_for(lambda: everywhere(both), timeout=90)

    # New Freight of one origin: only that origin moves, in test and then in uat.
    f2 = front("1.29.2")
    await apply_project(client, with_freight(resources, f1, b1, f2))
    await wait_for(lambda: everywhere({**both, "front": f2.metadata.name}), timeout=90)
    by_stage = await _states(client)
    for stage in ("test", "uat"):
        origins = [h.origin for h in by_stage[stage].history]
        assert sorted(origins) == ["back", "front", "front"], stage
        assert by_stage[stage].queue == [] and by_stage[stage].running is None


@pytest.mark.integration
async def test_verification_verifies_the_collection_and_rollback_keeps_the_other_origin(
    client: Client, worker: Worker, gitops_repo: Path, error_rates: ErrorRateServer
) -> None:
    f1, f2, b1 = front("1.29.1"), front("1.29.2"), back("2.0.0")
    error_rates.rates["1.29.2-2.0.0"] = 0.5  # f2 fails only next to b1: the collection does
    resources = two_warehouse_project(gitops_repo, verification=error_rates.url, rollback=True)
    await apply_project(client, with_freight(resources, f1, f2, b1))
    for freight in (f1, b1):
        await promote_in_stage(client, PROJECT, "test", freight.alias or "", "alice")
    both = {"front": f1.metadata.name, "back": b1.metadata.name}

    async def verified(count: int) -> bool:
        test = (await _states(client))["test"]
        done = [v for v in test.verifications if v.phase != "Running"]
        return len(done) >= count and test.running is None and test.verifying is None

    await wait_for(lambda: verified(2), timeout=60)
    await promote_in_stage(client, PROJECT, "test", f2.alias or "", "alice")
    await wait_for(lambda: verified(4), timeout=90)  # f2's Failed, then the rollback's

    test = (await _states(client))["test"]
    assert [(v.freight, v.phase) for v in reversed(test.verifications)] == [
        (f1.metadata.name, "Successful"),
        (b1.metadata.name, "Successful"),
        (f2.metadata.name, "Failed"),
        (f1.metadata.name, "Successful"),
    ]
    # Rolled back: front's Freight only; back's stayed through it all.
    assert await _collection(client, "test") == both
    assert test.queue == [] and [h.origin for h in test.history] == ["front"] * 2 + [
        "back",
        "front",
    ]
    assert test.history[1].collection["front"].freight == f2.metadata.name
    assert not test.history[1].verified
    # Each Freight of a verified collection is available downstream; f2 never was verified.
    uat = (await _states(client))["uat"]
    assert {f1.metadata.name, b1.metadata.name} <= uat.available.keys()
    assert f2.metadata.name not in uat.available
