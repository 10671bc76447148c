"""Warehouses: Freight rules (pure), the discovery activity, and the ``Warehouse`` workflow
against a real registry, real git repositories and a real chart repository."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.discovery import DiscoveryActivities
from activities.project import with_warehouse_freight
from freightline.app.client import (
    apply_project,
    assemble_freight,
    project_freight,
    refresh_warehouse,
)
from freightline.contracts.names import (
    FREIGHT_QUERY,
    WAREHOUSE_WORKFLOW,
    stage_workflow_id,
    warehouse_workflow_id,
)
from freightline.contracts.warehouse import (
    MAX_FREIGHT_HISTORY,
    DiscoveredChart,
    DiscoveredCommit,
    DiscoveredImageRef,
    DiscoveryRequest,
    DiscoveryResult,
    SubscriptionDiscovery,
    WarehouseConfig,
    WarehouseInput,
    WarehouseState,
    WarehouseStatus,
    continue_as_new_input,
    decide_freight,
    direct_stages,
    record_freight,
    remember_created,
)
from freightline.errors import ExpressionError, FreightlineError, NotFoundError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import (
    APPLY_CHECKS,
    Freight,
    FreightOrigin,
    Image,
    ProjectResources,
    RepoSubscription,
    Warehouse,
)
from tests.conftest import wait_for
from tests.pipelines import dump
from tests.registry_fixture import (
    Pusher,
    Registry,
    free_port,
    start_basic_registry,
    start_registry,
)
from tests.test_git_discovery import Upstream

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def warehouse(subscriptions: list[dict[str, Any]], **spec: Any) -> Warehouse:
    return Warehouse.model_validate(
        {
            "metadata": {"name": "wh", "namespace": "p"},
            "spec": {"subscriptions": subscriptions, **spec},
        }
    )


IMAGE_SUB = {"image": {"repoURL": "registry.example.com/app"}}
GIT_SUB = {"git": {"repoURL": "https://github.com/example/app.git"}}
CHART_SUB = {"chart": {"repoURL": "oci://registry.example.com/charts/app"}}


def discovery(*tags: str, commit: str = "c" * 40, chart: str = "1.0.0") -> DiscoveryResult:
    return DiscoveryResult(
        subscriptions=(
            SubscriptionDiscovery(
                kind="image",
                repo_url="registry.example.com/app",
                images=tuple(
                    DiscoveredImageRef(tag=t, digest=f"sha256:{t}", created_at=NOW) for t in tags
                ),
            ),
            SubscriptionDiscovery(
                kind="git",
                repo_url="https://github.com/example/app.git",
                commits=(DiscoveredCommit(id=commit, branch="main", subject="fix"),),
            ),
            SubscriptionDiscovery(
                kind="chart",
                repo_url="oci://registry.example.com/charts/app",
                charts=(DiscoveredChart(version=chart),),
            ),
        )
    )


# --- pure rules ---------------------------------------------------------------------------


def test_newest_artifact_of_each_subscription_makes_one_freight() -> None:
    spec = warehouse([IMAGE_SUB, GIT_SUB, CHART_SUB])
    decision = decide_freight("p", spec, discovery("2.0.0", "1.0.0"), (), NOW)
    freight = decision.freight
    assert freight is not None
    assert [i.tag for i in freight.images or ()] == ["2.0.0"]
    assert freight.commits and freight.commits[0].id == "c" * 40
    assert freight.charts and freight.charts[0].version == "1.0.0"
    assert freight.origin == FreightOrigin(kind="Warehouse", name="wh")
    # The ID is the one rule's, over exactly these artifacts; the alias derives from it.
    assert freight.metadata.name == freight.computed_id()
    assert freight.alias == freight_alias(freight.metadata.name)
    assert freight.discovered_at == NOW
    assert freight.metadata.namespace == "p"
    # Same artifacts again: nothing new. Different ones: new Freight, alias not reused.
    again = decide_freight("p", spec, discovery("2.0.0"), (freight,), NOW)
    assert again.freight is None and "no new artifacts" in again.message
    taken = freight.model_copy(
        update={"metadata": freight.metadata.model_copy(update={"name": "x"})}
    )
    other = decide_freight("p", spec, discovery("2.0.0"), (taken,), NOW).freight
    assert other is not None and other.alias != freight.alias


def test_manual_policy_empty_subscription_and_criteria() -> None:
    manual = warehouse([IMAGE_SUB], freightCreationPolicy="Manual")
    assert decide_freight("p", manual, discovery("1.0.0"), (), NOW).freight is None
    empty = warehouse([IMAGE_SUB, GIT_SUB, CHART_SUB])
    decision = decide_freight("p", empty, discovery(), (), NOW)
    assert decision.freight is None
    assert "subscription 1 (image registry.example.com/app) discovered nothing" in decision.message

    def criteria(expression: str) -> Warehouse:
        return warehouse(
            [IMAGE_SUB, GIT_SUB, CHART_SUB], freightCreationCriteria={"expression": expression}
        )

    matching = "imageFrom('registry.example.com/app').Tag == chartFrom('oci://registry.example.com/charts/app').Version"
    assert decide_freight("p", criteria(matching), discovery("1.0.0"), (), NOW).freight
    refused = decide_freight("p", criteria(matching), discovery("2.0.0"), (), NOW)
    assert refused.freight is None and "freightCreationCriteria not met" in refused.message
    by_commit = "commitFrom('https://github.com/example/app.git').ID startsWith 'ccc'"
    assert decide_freight("p", criteria(by_commit), discovery("1.0.0"), (), NOW).freight
    with pytest.raises(ExpressionError, match="must be true or false"):
        decide_freight(
            "p", criteria("imageFrom('registry.example.com/app').Tag"), discovery("1"), (), NOW
        )
    with pytest.raises(ExpressionError, match="freightCreationCriteria"):
        decide_freight("p", criteria("nosuch(1)"), discovery("1"), (), NOW)

    # Kargo's criteria fields: Subject (and CreatorDate, from discovery); a misspelt field
    # is an error, never a silently false criterion; now() is the discovery's time.
    repo = "https://github.com/example/app.git"
    by_subject = f"commitFrom('{repo}').Subject == 'fix'"
    assert decide_freight("p", criteria(by_subject), discovery("1.0.0"), (), NOW).freight
    with pytest.raises(ExpressionError, match='has no field "Subjekt"'):
        decide_freight(
            "p", criteria(f"commitFrom('{repo}').Subjekt == 'fix'"), discovery("1"), (), NOW
        )
    found = discovery("1.0.0")
    dated = found.model_copy(
        update={
            "subscriptions": tuple(
                s.model_copy(
                    update={
                        "commits": tuple(
                            c.model_copy(update={"creator_date": NOW - timedelta(hours=2)})
                            for c in s.commits
                        )
                    }
                )
                for s in found.subscriptions
            )
        }
    )
    old_enough = f"now() - commitFrom('{repo}').CreatorDate > duration('1h')"
    assert decide_freight("p", criteria(old_enough), dated, (), NOW).freight
    too_new = f"now() - commitFrom('{repo}').CreatorDate > duration('3h')"
    assert decide_freight("p", criteria(too_new), dated, (), NOW).freight is None


def test_history_is_bounded_newest_first() -> None:
    spec = warehouse([IMAGE_SUB, GIT_SUB, CHART_SUB])
    history: tuple[Freight, ...] = ()
    for n in range(MAX_FREIGHT_HISTORY + 5):
        made = decide_freight("p", spec, discovery(f"1.0.{n}"), history, NOW).freight
        assert made is not None
        history = record_freight(history, made)
    assert len(history) == MAX_FREIGHT_HISTORY
    assert history[0].images and history[0].images[0].tag == f"1.0.{MAX_FREIGHT_HISTORY + 4}"
    assert history[-1].images and history[-1].images[0].tag == "1.0.5"  # the 5 oldest dropped
    assert len({f.alias for f in history}) == len(history)


def test_build_date_cache_is_bounded() -> None:
    known = remember_created({"sha256:old": NOW.isoformat()}, discovery("a", "b"), limit=2)
    assert list(known) == ["sha256:a", "sha256:b"]


def test_continue_as_new_carries_everything() -> None:
    spec = warehouse([IMAGE_SUB, GIT_SUB, CHART_SUB])
    made = decide_freight("p", spec, discovery("1.0.0"), (), NOW).freight
    assert made is not None
    state = WarehouseState(
        freight=(made,),
        known_created={"sha256:1.0.0": NOW.isoformat()},
        last_discovery=NOW,
        last_error="boom",
        message="m",
        discovered=discovery("1.0.0"),
        discoveries=7,
        failures=1,
    )
    config = WarehouseConfig(warehouse=spec, stages=("test",))
    carried = continue_as_new_input("p", config, state)
    # Through JSON, as Temporal carries it.
    again = WarehouseInput.model_validate_json(carried.model_dump_json())
    assert again == WarehouseInput(project="p", config=config, state=state, refresh=False)


def test_direct_stages() -> None:
    text = dump(
        [
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Project",
                "metadata": {"name": "p"},
            },
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": "wh", "namespace": "p"},
                "spec": {"subscriptions": [IMAGE_SUB]},
            },
            stage_doc("p", "b", "wh"),
            stage_doc("p", "a", "wh"),
            stage_doc("p", "c", "wh", upstream="a"),
        ]
    )
    (resources,) = group_by_project(load_text(text)).values()
    assert direct_stages(resources, "wh") == ("a", "b")


def stage_doc(
    project: str, name: str, warehouse: str, upstream: str | None = None
) -> dict[str, Any]:
    sources: dict[str, Any] = {"stages": [upstream]} if upstream else {"direct": True}
    return {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name, "namespace": project},
        "spec": {
            "requestedFreight": [
                {"origin": {"kind": "Warehouse", "name": warehouse}, "sources": sources}
            ],
            "promotionTemplate": {
                "spec": {"steps": [{"uses": "git-clear", "config": {"path": "./out"}}]}
            },
        },
    }


# --- the discovery activity -------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("warehouse-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("warehouse-basic-registry")
    with start_basic_registry(workdir, "robot", "s3cret-pw") as reg:
        yield reg


def push(registry: Registry, repo: str, *tags: str) -> dict[str, str]:
    pusher = Pusher(registry)
    try:
        return {tag: pusher.image(repo, tag, salt=f"{repo}-{tag}").digest for tag in tags}
    finally:
        pusher.close()


def subs(*documents: dict[str, Any]) -> tuple[RepoSubscription, ...]:
    # As apply reads them: constraints and regexes are checked.
    return tuple(RepoSubscription.model_validate(d, context=APPLY_CHECKS) for d in documents)


async def test_discovery_activity_all_kinds_with_worker_credentials(
    basic_registry: Registry, tmp_path: Path
) -> None:
    digests = push(basic_registry, "app", "1.0.0", "1.1.0")
    upstream = Upstream(tmp_path / "git")
    sha = upstream.commit("a.txt")
    upstream.push()
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "reg",
                        "labels": {"kargo.akuity.io/cred-type": "image"},
                    },
                    "stringData": {
                        "repoURL": f"{basic_registry.host}/app",
                        "username": "robot",
                        "password": "s3cret-pw",
                    },
                }
            ]
        )
    )
    activities = DiscoveryActivities(CredentialStore(creds), allow_local_repositories=True)
    try:
        result = await activities.discover_warehouse(
            DiscoveryRequest(
                project="p",
                warehouse="wh",
                subscriptions=subs(
                    {"image": {"repoURL": f"{basic_registry.host}/app"}},
                    {"git": {"repoURL": upstream.url}},
                ),
            )
        )
    finally:
        await activities.aclose()
    image, git = result.subscriptions
    assert [(i.tag, i.digest) for i in image.images] == [
        ("1.1.0", digests["1.1.0"]),
        ("1.0.0", digests["1.0.0"]),
    ]
    assert git.commits[0].id == sha
    assert "s3cret-pw" not in result.model_dump_json()


async def test_discovery_activity_errors_name_the_subscription(registry: Registry) -> None:
    activities = DiscoveryActivities(CredentialStore(None), http_timeout=timedelta(seconds=0.5))

    async def error(document: dict[str, Any]) -> ApplicationError:
        with pytest.raises(ApplicationError) as caught:
            await activities.discover_warehouse(
                DiscoveryRequest(project="p", warehouse="wh", subscriptions=subs(document))
            )
        return caught.value

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers: a registry that times out
    try:
        # A bad constraint or regex never reaches discovery: the subscription is refused.
        with pytest.raises(ValueError, match="invalid semver constraint"):
            subs({"image": {"repoURL": f"{registry.host}/app", "constraint": "^^1"}})
        with pytest.raises(ValueError, match="invalid regular expression"):
            subs({"image": {"repoURL": f"{registry.host}/app", "allowTagsRegexes": ["("]}})
        missing = await error({"image": {"repoURL": f"{registry.host}/does-not-exist"}})
        assert missing.type == "RegistryError" and "not found" in missing.message
        unknown = await error({"image": {"repoURL": f"127.0.0.1:{free_port()}/app"}})
        assert unknown.type == "RegistryUnavailableError" and not unknown.non_retryable
        timeout = await error({"image": {"repoURL": f"127.0.0.1:{silent.getsockname()[1]}/app"}})
        assert "timed out" in timeout.message and not timeout.non_retryable
    finally:
        silent.close()
        await activities.aclose()


# --- the workflow -----------------------------------------------------------------------------


def project_text(
    project: str, image_repo: str, constraint: str | None = None, policy: str = "Automatic"
) -> str:
    image: dict[str, Any] = {"repoURL": image_repo}
    if constraint:
        image["constraint"] = constraint
    return dump(
        [
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Project",
                "metadata": {"name": project},
            },
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": "images", "namespace": project},
                "spec": {
                    "subscriptions": [{"image": image}],
                    "interval": "1h",
                    "freightCreationPolicy": policy,
                },
            },
            stage_doc(project, "test", "images"),
        ]
    )


def resources_of(text: str) -> ProjectResources:
    (resources,) = group_by_project(load_text(text)).values()
    return resources


async def freight_of(handle: WorkflowHandle[Any, Any]) -> list[Freight]:
    freight: list[Freight] = await handle.query(FREIGHT_QUERY, result_type=list[Freight])
    return freight


async def status_of(handle: WorkflowHandle[Any, Any]) -> WarehouseStatus:
    status: WarehouseStatus = await handle.query("status", result_type=WarehouseStatus)
    return status


async def test_apply_discovers_refresh_and_bad_constraint(
    client: Client, worker: Worker, registry: Registry
) -> None:
    project = f"wh-{uuid.uuid4().hex[:8]}"
    repo = f"{registry.host}/{project}"
    digests = push(registry, project, "1.0.0", "1.1.0")
    await apply_project(client, resources_of(project_text(project, repo)))
    handle = client.get_workflow_handle(warehouse_workflow_id(project, "images"))

    await wait_for(lambda: _count(handle, 1))
    (first,) = await freight_of(handle)
    expected_id = freight_id(
        FreightOrigin(kind="Warehouse", name="images"),
        images=[Image(repo_url=repo, tag="1.1.0", digest=digests["1.1.0"])],
    )
    assert first.metadata.name == expected_id
    assert first.alias == freight_alias(expected_id)
    assert first.discovered_at is not None

    # The Stage that takes this Warehouse's Freight directly was told.
    stage = client.get_workflow_handle(stage_workflow_id(project, "test"))

    async def stage_knows(freight_id_: str) -> bool:
        state = await stage.query("status")
        return freight_id_ in state["available"]

    await wait_for(lambda: stage_knows(expected_id))

    # Re-applying the same file leaves the Warehouse alone.
    before = len((await handle.fetch_history()).events)
    await apply_project(client, resources_of(project_text(project, repo)))
    assert len((await handle.fetch_history()).events) == before

    # A new tag and a refresh: new Freight at once (the interval is an hour).
    digests |= push(registry, project, "1.2.0")
    await refresh_warehouse(client, project, "images")
    await wait_for(lambda: _count(handle, 2))
    newest, older = await freight_of(handle)
    assert newest.images and newest.images[0].tag == "1.2.0"
    assert older.metadata.name == expected_id
    await wait_for(lambda: stage_knows(newest.metadata.name))

    # Freight a Warehouse holds is found for promotions and listings.
    listed = await project_freight(client, project)
    assert [f.metadata.name for f in listed] == [newest.metadata.name, expected_id]
    resources = await with_warehouse_freight(
        client, resources_of(project_text(project, repo)), newest.alias or ""
    )
    assert newest.metadata.name in resources.freight

    # A bad constraint is refused by apply, naming the field; the Warehouse keeps going.
    with pytest.raises(FreightlineError, match=r"image\.constraint: invalid semver constraint"):
        resources_of(project_text(project, repo, constraint="^^1"))
    assert len(await freight_of(handle)) == 2

    # A new constraint: the newest matching image is old Freight, so nothing new.
    await apply_project(client, resources_of(project_text(project, repo, constraint="<1.2")))
    await wait_for(lambda: _says(handle, "no new artifacts"))
    assert len(await freight_of(handle)) == 2
    assert (await status_of(handle)).last_error is None


async def test_failures_keep_the_loop_and_unknown_stages_are_skipped(
    client: Client, worker: Worker, task_queue: str, registry: Registry
) -> None:
    project = f"wh-{uuid.uuid4().hex[:8]}"
    push(registry, project, "1.0.0")
    good = warehouse([{"image": {"repoURL": f"{registry.host}/{project}"}}], interval="1h")
    handle = await client.start_workflow(
        WAREHOUSE_WORKFLOW,
        WarehouseInput(project=project, config=WarehouseConfig(warehouse=good, stages=("ghost",))),
        id=warehouse_workflow_id(project, "wh"),
        task_queue=task_queue,
    )
    # The Stage "ghost" has no workflow: the signal fails, the Freight is still recorded.
    await wait_for(lambda: _count(handle, 1))
    status = await status_of(handle)
    assert status.last_error is None and status.stages == ("ghost",)

    # A registry nobody listens on (retried a few times), then a repository that does not exist.
    for repo, error in [
        (f"127.0.0.1:{free_port()}/app", "unreachable"),
        (f"{registry.host}/missing-{project}", "not found"),
    ]:
        broken = warehouse([{"image": {"repoURL": repo}}], interval="1h")
        await handle.execute_update("update_spec", WarehouseConfig(warehouse=broken))
        await wait_for(lambda error=error: _has_error(handle, error), timeout=60)
        assert len(await freight_of(handle)) == 1

    # Continued as new with its state: Freight kept, no discovery until it is due.
    carried = continue_as_new_input(
        project,
        WarehouseConfig(warehouse=good),
        WarehouseState(freight=tuple(await freight_of(handle))),
    )
    resumed = await client.start_workflow(
        WAREHOUSE_WORKFLOW, carried, id=f"{handle.id}-resumed", task_queue=task_queue
    )
    assert [f.metadata.name for f in await freight_of(resumed)] == [
        f.metadata.name for f in await freight_of(handle)
    ]
    assert (await status_of(resumed)).discoveries == 0


async def _count(handle: WorkflowHandle[Any, Any], n: int) -> bool:
    return len(await freight_of(handle)) >= n


async def _has_error(handle: WorkflowHandle[Any, Any], text: str) -> bool:
    error = (await status_of(handle)).last_error
    return error is not None and text in error


async def _says(handle: WorkflowHandle[Any, Any], text: str) -> bool:
    return text in (await status_of(handle)).message


async def test_cli_get_freight_warehouses_and_refresh(
    client: Client, worker: Worker, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from freightline.app.cli import app

    project = f"wh-{uuid.uuid4().hex[:8]}"
    repo = f"{registry.host}/{project}"
    push(registry, project, "1.0.0")
    await apply_project(client, resources_of(project_text(project, repo)))
    handle = client.get_workflow_handle(warehouse_workflow_id(project, "images"))
    await wait_for(lambda: _count(handle, 1))
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    # The CLI runs its own event loop: call it from a thread.
    push(registry, project, "1.1.0")
    assert "refresh requested" in await asyncio.to_thread(
        cli, "refresh", "warehouse", "images", "-p", project
    )
    await wait_for(lambda: _count(handle, 2))
    rows = json.loads(await asyncio.to_thread(cli, "get", "freight", "-p", project, "-o", "json"))
    # The scriptable contract: what the Warehouse workflow holds, whole (IDs, digests, times).
    held = await freight_of(handle)
    assert [r["id"] for r in rows] == [f.metadata.name for f in held]
    for row, freight in zip(rows, held, strict=True):
        assert len(row["id"]) == 40 and row["alias"] == freight.alias
        assert row["origin"] == {"kind": "Warehouse", "name": "images"}
        (image,) = row["images"]
        (expected,) = freight.images or []
        assert image == {"repoURL": repo, "tag": expected.tag, "digest": expected.digest}
        assert image["digest"].startswith("sha256:") and len(image["digest"]) == 71
        assert datetime.fromisoformat(row["discoveredAt"]) == freight.discovered_at
        assert (row["commits"], row["charts"]) == ([], [])
        assert Freight.model_validate(row["freight"]) == freight  # Kargo's own shape, whole
    assert [r["images"][0]["tag"] for r in rows] == ["1.1.0", "1.0.0"]
    (row,) = json.loads(
        await asyncio.to_thread(cli, "get", "warehouses", "-p", project, "-o", "json")
    )
    status = row["status"]
    assert row["name"] == "images" and row["spec"]["subscriptions"][0]["image"]["repoURL"] == repo
    assert status["freightCount"] == 2 and status["lastError"] is None
    assert datetime.fromisoformat(status["lastDiscovery"]).tzinfo is not None
    missing = await asyncio.to_thread(
        runner.invoke, app, ["refresh", "warehouse", "nope", "-p", project]
    )
    assert missing.exit_code == 1 and 'no running Warehouse "nope"' in missing.output


async def test_manual_warehouse_freight_is_assembled_from_what_it_discovered(
    client: Client, worker: Worker, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from freightline.app.cli import app

    project = f"man-{uuid.uuid4().hex[:8]}"
    repo = f"{registry.host}/{project}"
    digests = push(registry, project, "1.0.0", "1.1.0")
    await apply_project(client, resources_of(project_text(project, repo, policy="Manual")))
    handle = client.get_workflow_handle(warehouse_workflow_id(project, "images"))

    async def discovered() -> bool:
        return (await status_of(handle)).discoveries >= 1

    await wait_for(discovered)
    assert await freight_of(handle) == []  # Manual: discovery alone makes none

    # Bad picks are refused with what there is to pick, and record nothing.
    with pytest.raises(
        FreightlineError, match=re.escape('discovered no "9.9.9" (newest first: 1.1.0, 1.0.0')
    ):
        await assemble_freight(client, project, "images", {repo: "9.9.9"}, "alice")
    with pytest.raises(
        FreightlineError, match=re.escape("has no subscription to example.com/other")
    ):
        await assemble_freight(client, project, "images", {"example.com/other": "1"}, "alice")
    with pytest.raises(NotFoundError, match='no running Warehouse "nope"'):
        await assemble_freight(client, project, "nope", {}, "alice")
    assert await freight_of(handle) == []

    newest = await assemble_freight(client, project, "images", {}, "alice")
    assert newest.images and (newest.images[0].tag, newest.images[0].digest) == (
        "1.1.0",
        digests["1.1.0"],
    )
    older = await assemble_freight(client, project, "images", {repo: "1.0.0"}, "alice")
    # The same artifacts picked by digest are the same Freight, not a second one.
    again = await assemble_freight(client, project, "images", {repo: digests["1.0.0"]}, "bob")
    assert again.metadata.name == older.metadata.name
    assert [f.metadata.name for f in await freight_of(handle)] == [
        older.metadata.name,
        newest.metadata.name,
    ]
    assert "alice assembled Freight" in (await status_of(handle)).message

    stage = client.get_workflow_handle(stage_workflow_id(project, "test"))

    async def stage_knows_both() -> bool:
        state = await stage.query("status")
        return {newest.metadata.name, older.metadata.name} <= set(state["available"])

    await wait_for(stage_knows_both)

    # The CLI: the same Freight for the same pick, as JSON; a malformed pick is one line.
    monkeypatch.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
    runner = CliRunner()
    done = await asyncio.to_thread(
        runner.invoke,
        app,
        ["assemble", "images", "-p", project, "--pick", f"{repo}=1.0.0", "-o", "json"],
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["metadata"]["name"] == older.metadata.name
    bad = await asyncio.to_thread(
        runner.invoke, app, ["assemble", "images", "-p", project, "--pick", "1.0.0"]
    )
    assert bad.exit_code == 1 and "expected REPO_URL=VERSION" in bad.output
