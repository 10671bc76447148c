"""Kargo's webhook receivers: each provider's documented payload, its check, and what it refreshes.

The payloads are the providers' own examples (``tests/reference/webhooks/``),
posted over HTTP to a real receiver server at Kargo's receiver paths. Two
layers of tests:

- every documented payload against a project whose Warehouses subscribe to
  the repositories those payloads name (github.com, quay.io, ...). Those
  Warehouses cannot discover anything here (no network), so they are
  Warehouse workflows on a task queue no worker polls: Temporal records the
  ``refresh`` signals, and the test reads them from each workflow's history.
  The project's configuration comes from the same documents (``Configs``),
  since the Project workflow would start those Warehouses on a real worker;
- end to end with the real worker: a GitHub-shaped push for a local git
  repository and a Docker Hub-shaped push for the local registry make new
  Freight through Kargo's receiver paths.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from freightline.app.client import apply_project
from freightline.app.webhooks import DeliveryLog, Refresher, WebhookServer
from freightline.contracts.names import FREIGHT_QUERY, warehouse_workflow_id
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, group_cluster, load_text
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.resources import ClusterConfig, Freight, ProjectResources, WebhookReceiver
from freightline.kargo.webhooks import (
    SECRET_KEYS,
    bind_cluster_receivers,
    hmac_sha256,
    read_event,
    receiver_path,
)
from sandbox.registry import Pusher, start_registry
from tests.conftest import recorded_text, wait_for
from tests.hostile_http import large_body
from tests.pipelines import dump
from tests.test_git_discovery import Upstream

FIXTURES = Path(__file__).parent / "reference" / "webhooks"
HEADERS: dict[str, dict[str, Any]] = json.loads((FIXTURES / "headers.json").read_text())

SECRET_VALUES = {
    "github": "github-secret-1",
    "gitlab": "gitlab-token-1",
    "bitbucket": "bitbucket-secret-1",
    "dockerhub": "dockerhub-url-secret-1",
    "quay": "quay-url-secret-1",
    "harbor": "Basic aGFyYm9yOnNlY3JldA==",
    "artifactory": "artifactory-token-1",
    "azure": "azure-url-secret-1",
    "gitea": "gitea-secret-1",
    "generic": "generic-url-secret-1",
}

# What each documented payload asks for: the repository a push names (the Warehouse
# subscribed to it must be refreshed, and no other), or another kind of event.
EXPECTED: dict[str, tuple[str, dict[str, str] | None]] = {
    "github-push.json": ("refresh", {"git": "https://github.com/binkkatal/sample_app.git"}),
    "github-ping.json": ("ping", None),
    "github-pull-request.json": ("ignored", None),  # "opened": only a closed PR matters
    "gitlab-push.json": ("refresh", {"git": "git@example.com:mike/diaspora.git"}),
    "gitlab-tag-push.json": ("refresh", {"git": "http://example.com/jsmith/example.git"}),
    "gitlab-merge-request.json": ("ignored", None),  # "open"
    "bitbucket-repo-push.json": (
        "refresh",
        {"git": "https://api.bitbucket.org/bitbucket/bitbucket"},
    ),
    "bitbucket-pullrequest-fulfilled.json": ("pull-request", None),
    "bitbucket-server-refs-changed.json": (
        "refresh",
        {"git": "https://server.bitbucket.local/scm/~gopher/webhook-test.git"},
    ),
    "bitbucket-server-pr-merged.json": ("pull-request", None),
    "gitea-push.json": ("refresh", {"git": "http://localhost:3000/example/example.git"}),
    "gitea-pull-request.json": ("ignored", None),  # "opened"
    "azure-devops-git-push.json": (
        "refresh",
        {
            "git": "https://dev.azure.com/fabrikam-fiber-inc/DefaultCollection/_git/Fabrikam-Fiber-Git"
        },
    ),
    "azure-devops-pr-merged.json": ("ignored", None),  # the example has no _links.web
    "azure-acr-push.json": ("refresh", {"image": "myregistry.azurecr.io/hello-world"}),
    "dockerhub-push.json": ("refresh", {"image": "docker.io/svendowideit/testhook"}),
    "quay-repo-push.json": ("refresh", {"image": "quay.io/mynamespace/repository"}),
    "harbor-push-artifact.json": ("refresh", {"image": "localhost/harbor/alpine"}),
    "artifactory-docker-pushed.json": (
        "refresh",
        {"image": "example.jfrog.io/docker-remote-cache/library/ubuntu"},
    ),
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def warehouse_name(fixture_name: str) -> str:
    return "w-" + fixture_name.removesuffix(".json").replace(".", "-")


def signed(
    receiver_type: str, body: bytes, headers: Mapping[str, str], secret: str
) -> dict[str, str]:
    """``headers`` plus the signature or token the provider would send with ``body``."""
    headers = dict(headers)
    if receiver_type in ("github", "gitea"):
        headers["X-Hub-Signature-256"] = "sha256=" + hmac_sha256(secret, body)
    elif receiver_type == "bitbucket":
        headers["X-Hub-Signature"] = "sha256=" + hmac_sha256(secret, body)
    elif receiver_type == "gitlab":
        headers["X-Gitlab-Token"] = secret
    elif receiver_type == "harbor":
        headers["Authorization"] = secret
    elif receiver_type == "artifactory":
        headers["X-Jfrog-Event-Auth"] = hmac_sha256(secret, body)
    return headers


def documents(name: str, *, warehouses: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    receivers: list[dict[str, Any]] = [
        {"name": f"{kind}-receiver", kind: {"secretRef": {"name": f"{kind}-secret"}}}
        for kind in SECRET_VALUES
        if kind not in ("artifactory", "generic")
    ]
    receivers.append(
        {
            "name": "artifactory-receiver",
            "artifactory": {"secretRef": {"name": "artifactory-secret"}},
        }
    )
    receivers.append(
        {
            "name": "generic-receiver",
            "generic": {
                "secretRef": {"name": "generic-secret"},
                "actions": [
                    {
                        "action": "Refresh",
                        "whenExpression": "request.header('X-Event') == 'build'",
                        "targetSelectionCriteria": [
                            {
                                "kind": "Warehouse",
                                "indexSelector": {
                                    "matchIndices": [
                                        {
                                            "key": "subscribedURLs",
                                            "operator": "Equals",
                                            "value": "${{ normalizeGit(request.body.repo) }}",
                                        }
                                    ]
                                },
                            }
                        ],
                    }
                ],
            },
        }
    )
    docs: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "ProjectConfig",
            "metadata": {"name": name, "namespace": name},
            "spec": {"webhookReceivers": receivers},
        },
    ]
    for warehouse, subscription in warehouses.items():
        (kind, url), *_ = subscription.items()
        docs.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Warehouse",
                "metadata": {"name": warehouse, "namespace": name},
                "spec": {"interval": "1h", "subscriptions": [{kind: {"repoURL": url}}]},
            }
        )
    return docs


def receiver_of(kind: str) -> WebhookReceiver:
    config = resources_of(documents("p", warehouses={})).project_config
    assert config is not None
    (receiver,) = [r for r in config.spec.webhook_receivers or () if r.receiver_type == kind]
    return receiver


def resources_of(docs: list[dict[str, Any]]) -> ProjectResources:
    (resources,) = group_by_project(load_text(dump(docs))).values()
    return resources


def credentials_file(path: Path, project: str | None) -> Path:
    secrets = []
    for kind, value in SECRET_VALUES.items():
        metadata: dict[str, Any] = {"name": f"{kind}-secret"}
        if project:
            metadata["namespace"] = project
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "stringData": {SECRET_KEYS[kind]: value},
            }
        )
    path.write_text(dump(secrets))
    return path


def path_of(project: str, kind: str) -> str:
    return receiver_path(project, kind, f"{kind}-receiver", SECRET_VALUES[kind])


class Configs(Refresher):
    """The projects' configurations from their documents; signals go to real Temporal."""

    def __init__(self, client: Client, projects: dict[str, ProjectResources]) -> None:
        super().__init__(client)
        self.configs = projects

    async def projects(self) -> list[str]:
        return sorted(self.configs)

    async def resources(self, project: str) -> ProjectResources | None:
        return self.configs.get(project)


async def signals(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(
        1 for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    )


# --- the rules alone --------------------------------------------------------------------------


def test_receiver_paths_are_kargos() -> None:
    # Kargo: "/" + type + "/" + hex(sha256(project + receiver name + secret values)).
    digest = hashlib.sha256(b"kargo-demo" + b"my-receiver" + b"s3cret").hexdigest()
    assert receiver_path("kargo-demo", "github", "my-receiver", "s3cret") == f"/github/{digest}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_documented_payload_is_read_as_kargo_reads_it(name: str) -> None:
    kind = HEADERS[name]["type"]
    receiver = receiver_of(kind)
    body = fixture(name)
    headers = {
        k.lower(): v
        for k, v in signed(kind, body, HEADERS[name]["headers"], SECRET_VALUES[kind]).items()
    }
    event = read_event(receiver, SECRET_VALUES[kind], headers, body)
    expected_kind, _ = EXPECTED[name]
    assert event.kind == expected_kind, event.reason
    if kind in ("github", "gitea", "gitlab", "bitbucket"):
        assert event.delivery  # each sends a delivery ID, used against replays


@pytest.mark.parametrize(
    "kind", ["github", "gitea", "bitbucket", "gitlab", "harbor", "artifactory"]
)
def test_a_wrong_signature_or_token_is_refused(kind: str) -> None:
    name = next(n for n, h in HEADERS.items() if h["type"] == kind)
    receiver = receiver_of(kind)
    body = fixture(name)
    forged = {
        k.lower(): v
        for k, v in signed(kind, body, HEADERS[name]["headers"], "not-the-secret").items()
    }
    event = read_event(receiver, SECRET_VALUES[kind], forged, body)
    assert (event.kind, event.status) == ("refused", 401)
    tampered_body = body.replace(b"{", b"{ ", 1)
    honest = {
        k.lower(): v
        for k, v in signed(kind, body, HEADERS[name]["headers"], SECRET_VALUES[kind]).items()
    }
    if kind not in ("gitlab", "harbor"):  # a token does not sign the body
        assert read_event(receiver, SECRET_VALUES[kind], honest, tampered_body).status == 401


def test_delivery_log_refuses_replays_within_bounded_memory() -> None:
    log = DeliveryLog(capacity=3)
    assert log.claim("p/r", "a") and not log.claim("p/r", "a")
    assert log.claim("p/other", "a")  # IDs are per receiver
    for delivery in "bcdef":
        assert log.claim("p/r", delivery)
    assert len(log) == 3  # the oldest are forgotten, memory stays bounded
    log.release("p/r", "f")
    assert log.claim("p/r", "f")  # a delivery whose handling failed is taken again


# --- every documented payload over HTTP -------------------------------------------------------


@pytest.fixture
async def fixture_project(
    client: Client, tmp_path: Path
) -> AsyncIterator[tuple[str, WebhookServer, dict[str, WorkflowHandle[Any, Any]]]]:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    warehouses = {
        warehouse_name(f): subscription
        for f, (_, subscription) in EXPECTED.items()
        if subscription is not None
    }
    warehouses["bystander"] = {"git": "https://github.com/example/unrelated.git"}
    resources = resources_of(documents(name, warehouses=warehouses))
    queue = f"nobody-polls-{uuid.uuid4().hex[:8]}"
    handles = {}
    for warehouse in warehouses:
        handles[warehouse] = await client.start_workflow(
            "Warehouse", id=warehouse_workflow_id(name, warehouse), task_queue=queue
        )
    credentials = CredentialStore(credentials_file(tmp_path / "creds.yaml", name))
    server = WebhookServer(
        client,
        credentials=credentials,
        refresher=Configs(client, {name: resources}),
        host="127.0.0.1",
    )
    try:
        async with server:
            yield name, server, handles
    finally:
        for handle in handles.values():
            await handle.terminate("test finished")


async def test_documented_payloads_refresh_exactly_the_subscribed_warehouse(
    client: Client,
    fixture_project: tuple[str, WebhookServer, dict[str, WorkflowHandle[Any, Any]]],
) -> None:
    project, server, handles = fixture_project
    expected_signals = dict.fromkeys(handles, 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        for name, (kind, subscription) in EXPECTED.items():
            receiver_type = HEADERS[name]["type"]
            body = fixture(name)
            headers = signed(
                receiver_type, body, HEADERS[name]["headers"], SECRET_VALUES[receiver_type]
            )
            answer = await http.post(path_of(project, receiver_type), content=body, headers=headers)
            assert answer.status_code == 200, (name, answer.text)
            if kind == "refresh":
                assert subscription is not None
                assert answer.json()["refreshed"] == [warehouse_name(name)], name
                expected_signals[warehouse_name(name)] += 1
            else:
                assert answer.json().get("refreshed", []) == [], name
    for warehouse, handle in handles.items():
        assert await signals(handle) == expected_signals[warehouse], warehouse
    assert expected_signals["bystander"] == 0


async def test_refusals_and_ignored_events_change_nothing_and_say_why(
    client: Client,
    fixture_project: tuple[str, WebhookServer, dict[str, WorkflowHandle[Any, Any]]],
) -> None:
    project, server, handles = fixture_project
    push = fixture("github-push.json")
    github_headers = HEADERS["github-push.json"]["headers"]
    good = signed("github", push, github_headers, SECRET_VALUES["github"])
    forged = signed("github", push, github_headers, "not-the-secret")
    github = path_of(project, "github")
    with capture_logs() as logs:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=10
        ) as http:
            bad_signature = await http.post(github, content=push, headers=forged)
            unknown_path = await http.post("/github/" + "0" * 64, content=push, headers=good)
            # Over Kargo's 2 MiB: refused from its Content-Length, before a byte is read.
            oversized = await large_body(server.port, path_of(project, "dockerhub"), 3 << 20)
            unknown_repo = await http.post(
                path_of(project, "quay"),
                json={"docker_url": "quay.io/nobody/nothing", "updated_tags": ["1"]},
            )
            first = await http.post(github, content=push, headers=good)
            replay = await http.post(github, content=push, headers=good)
    assert bad_signature.status_code == 401
    assert unknown_path.status_code == 404
    assert oversized.status == 413
    assert (unknown_repo.status_code, unknown_repo.json()["refreshed"]) == (200, [])
    assert first.json()["refreshed"] == ["w-github-push"]
    assert (replay.status_code, replay.json()["refreshed"]) == (200, [])
    # Only the first good delivery signalled anything.
    for warehouse, handle in handles.items():
        assert await signals(handle) == (1 if warehouse == "w-github-push" else 0), warehouse
    events = [(e["event"], e.get("reason", "")) for e in logs]
    assert ("webhook refused", "missing or wrong X-Hub-Signature-256") in events
    assert ("webhook refused", "no receiver at this path") in events
    assert any(e[0].startswith("webhook names no subscribed repository") for e in events)
    assert any(e[0] == "webhook delivery replayed; ignored" for e in events)
    assert any("over" in e.get("reason", "") and e.get("status") == 413 for e in logs)
    # No secret, and no receiver path (for URL-secret providers it is the secret), is logged.
    text = json.dumps(logs, default=str)
    for value in SECRET_VALUES.values():
        assert value not in text
    for kind in SECRET_VALUES:
        assert path_of(project, kind).split("/")[-1] not in text


async def test_generic_receiver_runs_its_actions(
    client: Client,
    fixture_project: tuple[str, WebhookServer, dict[str, WorkflowHandle[Any, Any]]],
) -> None:
    project, server, handles = fixture_project
    generic = path_of(project, "generic")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        skipped = await http.post(
            generic,
            json={"repo": "http://localhost:3000/example/example"},
            headers={"X-Event": "test"},
        )
        matched = await http.post(
            generic,
            json={"repo": "http://localhost:3000/example/example"},
            headers={"X-Event": "build"},
        )
    assert skipped.json()["results"][0]["result"] == "NotApplicable"
    assert matched.json()["refreshed"] == ["w-gitea-push"]
    assert matched.json()["results"][0]["matched_when_expression"] is True
    assert await signals(handles["w-gitea-push"]) == 1


async def test_a_receiver_whose_secret_is_missing_is_disabled(
    client: Client, tmp_path: Path
) -> None:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    resources = resources_of(documents(name, warehouses={}))
    # Secrets in another project's namespace do not serve this one.
    credentials = CredentialStore(credentials_file(tmp_path / "creds.yaml", "other-project"))
    with capture_logs() as logs:
        async with (
            WebhookServer(
                client,
                credentials=credentials,
                refresher=Configs(client, {name: resources}),
                host="127.0.0.1",
            ) as server,
            httpx.AsyncClient(timeout=10) as http,
        ):
            answer = await http.post(
                f"http://127.0.0.1:{server.port}{path_of(name, 'quay')}", json={}
            )
    assert answer.status_code == 404
    disabled = [e for e in logs if e["event"] == "webhook receiver disabled"]
    assert {e["receiver"] for e in disabled} == {f"{k}-receiver" for k in SECRET_VALUES}
    assert all("is not in the credentials file" in e["reason"] for e in disabled)


# --- end to end, with the real worker ----------------------------------------------------------


@pytest.fixture
def credentials_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = credentials_file(tmp_path / "creds.yaml", None)
    monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(path))
    yield path


async def freight_count(handle: WorkflowHandle[Any, Any]) -> int:
    return len(await handle.query(FREIGHT_QUERY, result_type=list[Freight]))


async def test_kargo_receivers_make_freight_end_to_end(
    client: Client, credentials_env: Path, worker: Worker, tmp_path: Path
) -> None:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    registry = start_registry(tmp_path / "registry")
    pusher = Pusher(registry)
    try:
        docs = documents(
            name,
            warehouses={
                "code": {"git": upstream.url},
                "images": {"image": f"{registry.host}/team/app"},
            },
        )
        await apply_project(client, resources_of(docs))
        code = client.get_workflow_handle(warehouse_workflow_id(name, "code"))
        images = client.get_workflow_handle(warehouse_workflow_id(name, "images"))
        await wait_for(lambda: _at_least(code, 1))
        server = WebhookServer(
            client, credentials=CredentialStore(credentials_env), host="127.0.0.1", index_interval=0
        )
        async with (
            server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http,
        ):
            upstream.commit("b.txt")
            upstream.push()
            # GitHub's documented push, for this repository.
            push = json.loads(fixture("github-push.json"))
            push["repository"]["clone_url"] = upstream.url
            body = json.dumps(push).encode()
            headers = signed(
                "github", body, HEADERS["github-push.json"]["headers"], SECRET_VALUES["github"]
            )

            async def delivered() -> bool:
                # The index sees a new project once Temporal's visibility lists it.
                answer = await http.post(path_of(name, "github"), content=body, headers=headers)
                return answer.status_code == 200

            await wait_for(delivered)
            await wait_for(lambda: _at_least(code, 2))
            # Docker Hub's documented push, for an image in the local registry.
            pusher.image("team/app", "1.0.0")
            hub = json.loads(fixture("dockerhub-push.json"))
            hub["repository"]["repo_name"] = f"{registry.host}/team/app"
            hub["push_data"]["tag"] = "1.0.0"
            answer = await http.post(path_of(name, "dockerhub"), json=hub)
            assert answer.json()["refreshed"] == ["images"]
            await wait_for(lambda: _at_least(images, 1))
        # The receivers' secrets reached no workflow history.
        for handle in (code, images, client.get_workflow_handle(f"project:{name}")):
            history = await recorded_text(handle)
            for value in SECRET_VALUES.values():
                assert value not in history
        # What the project records is the reference: the Secret's name.
        assert "github-secret" in await recorded_text(client.get_workflow_handle(f"project:{name}"))
    finally:
        pusher.close()
        registry.stop()


async def _at_least(handle: WorkflowHandle[Any, Any], n: int) -> bool:
    return await freight_count(handle) >= n


async def test_a_broken_credentials_file_disables_receivers_with_one_clear_line(
    client: Client, tmp_path: Path
) -> None:
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    resources = resources_of(documents(name, warehouses={}))
    creds = tmp_path / "creds.yaml"
    creds.write_text(dump([{"kind": "Secret", "metadata": {"name": "x"}, "data": {"k": "%%"}}]))
    with capture_logs() as logs:
        async with (
            WebhookServer(
                client,
                credentials=CredentialStore(creds),
                refresher=Configs(client, {name: resources}),
                host="127.0.0.1",
            ) as server,
            httpx.AsyncClient(timeout=10) as http,
        ):
            url = f"http://127.0.0.1:{server.port}{path_of(name, 'quay')}"
            answers = [await http.post(url, json={}) for _ in range(3)]
    assert [a.status_code for a in answers] == [404, 404, 404]
    errors = [e for e in logs if e["event"] == "webhook receivers: cannot read credentials"]
    assert len(errors) == 1  # rebuilt at most once a second, not per request
    assert "Secret x" in errors[0]["error"] and "data.k is not base64" in errors[0]["error"]


# --- ClusterConfig: receivers for every project ----------------------------------------------

CLUSTER_CONFIG = """
apiVersion: kargo.akuity.io/v1alpha1
kind: ClusterConfig
metadata: {name: NAME}
spec:
  webhookReceivers:
  - name: shared-github
    github: {secretRef: {name: shared-github-secret}}
"""


def test_a_cluster_config_is_named_cluster_and_its_paths_are_kargos() -> None:
    with pytest.raises(ConfigError, match='a ClusterConfig must be named "cluster"'):
        group_cluster(load_text(CLUSTER_CONFIG.replace("NAME", "other")))
    config = group_cluster(load_text(CLUSTER_CONFIG.replace("NAME", "cluster"))).cluster_config
    (bound,) = bind_cluster_receivers(config, lambda project, name: {"secret": "s3"})
    # Kargo hashes a cluster receiver's name and secret with no project before them.
    digest = hashlib.sha256(b"shared-github" + b"s3").hexdigest()
    assert (bound.project, bound.path) == ("", f"/github/{digest}")


class ClusterConfigs(Configs):
    """Projects from their documents and a ClusterConfig, signals to real Temporal."""

    def __init__(
        self, client: Client, projects: dict[str, ProjectResources], cluster: ClusterConfig | None
    ) -> None:
        super().__init__(client, projects)
        self.cluster = cluster

    async def cluster_config(self) -> ClusterConfig | None:
        return self.cluster


async def test_a_cluster_receiver_refreshes_the_subscribed_warehouses_of_every_project(
    client: Client, tmp_path: Path
) -> None:
    repo = EXPECTED["github-push.json"][1]
    assert repo is not None
    projects = {
        name: resources_of(documents(name, warehouses={"app": repo, "other": OTHER}))
        for name in (f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}")
    }
    queue = f"nobody-polls-{uuid.uuid4().hex[:8]}"
    handles = {
        (project, warehouse): await client.start_workflow(
            "Warehouse", id=warehouse_workflow_id(project, warehouse), task_queue=queue
        )
        for project in projects
        for warehouse in ("app", "other")
    }
    cluster = group_cluster(load_text(CLUSTER_CONFIG.replace("NAME", "cluster"))).cluster_config
    secret = "cluster-wide-github-secret"
    creds = tmp_path / "creds.yaml"
    shared = {"apiVersion": "v1", "kind": "Secret", "stringData": {"secret": secret}}
    creds.write_text(dump([{**shared, "metadata": {"name": "shared-github-secret"}}]))
    server = WebhookServer(
        client,
        credentials=CredentialStore(creds),
        refresher=ClusterConfigs(client, projects, cluster),
        host="127.0.0.1",
    )
    body = fixture("github-push.json")
    headers = signed("github", body, HEADERS["github-push.json"]["headers"], secret)
    path = receiver_path("", "github", "shared-github", secret)
    try:
        async with (
            server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http,
        ):
            answer = await http.post(path, content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["refreshed"] == sorted(f"{p}/app" for p in projects)
            # A Secret of one project does not serve a cluster receiver (Kargo reads those
            # from its cluster Secrets namespace): the receiver is disabled, its path unknown.
            scoped = {"name": "shared-github-secret", "namespace": next(iter(projects))}
            creds.write_text(dump([{**shared, "metadata": scoped}]))
            server.index.max_age = 0.0  # rebuild at the next request, reading the file again
            refused = await http.post(path, content=body, headers=headers)
            assert refused.status_code == 404
        for (_, warehouse), handle in handles.items():
            assert await signals(handle) == (1 if warehouse == "app" else 0)
    finally:
        for handle in handles.values():
            await handle.terminate("test finished")


OTHER = {"git": "https://github.com/example/unrelated.git"}
