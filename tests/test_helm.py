"""Chart subscriptions: an index.yaml served over HTTP, and OCI charts in a real registry."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from activities.helm import discover_charts
from activities.registry import RegistryClient
from freightline.contracts.warehouse import DiscoveryError
from freightline.errors import ConfigError, RegistryError
from freightline.kargo.resources import APPLY_CHECKS, ChartSubscription
from tests.registry_fixture import OCI_MANIFEST, Pusher, Registry, start_registry

pytestmark = pytest.mark.integration

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

INDEX = """\
apiVersion: v1
entries:
  app:
    - name: app
      version: 1.0.0
      created: "2024-01-01T00:00:00Z"
      digest: aaa
      urls: [charts/app-1.0.0.tgz]
    - name: app
      version: 1.2.0
      created: "2024-02-01T00:00:00Z"
      digest: bbb
      urls: [https://cdn.example.com/app-1.2.0.tgz]
    - name: app
      version: 2.0.0-rc.1
      urls: [app-2.0.0-rc.1.tgz]
    - name: app
      version: 1.10.1
      urls: [charts/app-1.10.1.tgz]
  other:
    - name: other
      version: 9.9.9
      urls: [other-9.9.9.tgz]
generated: "2024-02-01T00:00:00Z"
"""


def serve_directory(root: Path) -> contextlib.AbstractContextManager[str]:
    """A stdlib HTTP server over ``root`` on loopback; yields its base URL."""

    @contextlib.contextmanager
    def running() -> Iterator[str]:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    return running()


@pytest.fixture
def chart_repo(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "index.yaml").write_text(INDEX)
    with serve_directory(tmp_path) as base:
        yield f"{base}/repo"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("helm-registry")) as registry:
        yield registry


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def push_chart(pusher: Pusher, repo: str, version: str) -> None:
    """Push a (tiny) Helm chart the way `helm push` stores it: `+` becomes `_`."""
    config = json.dumps({"name": repo.rsplit("/", 1)[-1], "version": version}).encode()
    content = f"chart {version}".encode()
    config_digest = pusher.blob(repo, config)
    layer_digest = pusher.blob(repo, content)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": HELM_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": HELM_CHART, "digest": layer_digest, "size": len(content)}],
    }
    pusher.manifest(repo, version.replace("+", "_"), body, OCI_MANIFEST)


def chart(**fields: Any) -> ChartSubscription:
    return ChartSubscription.model_validate(fields, context=APPLY_CHECKS)  # as apply reads it


async def test_http_index_semver_and_limit(chart_repo: str, http: httpx.AsyncClient) -> None:
    found = await discover_charts(chart(repoURL=chart_repo, name="app"), http=http)
    assert [c.version for c in found] == ["2.0.0-rc.1", "1.10.1", "1.2.0", "1.0.0"]
    # Relative URLs are resolved against the repository; absolute ones are kept.
    by_version = {c.version: c.url for c in found}
    assert by_version["1.0.0"] == f"{chart_repo}/charts/app-1.0.0.tgz"
    assert by_version["1.2.0"] == "https://cdn.example.com/app-1.2.0.tgz"
    limited = await discover_charts(
        chart(repoURL=chart_repo + "/", name="app", semverConstraint="^1.0", discoveryLimit=2),
        http=http,
    )
    assert [c.version for c in limited] == ["1.10.1", "1.2.0"]


async def test_http_index_errors(chart_repo: str, http: httpx.AsyncClient) -> None:
    with pytest.raises(DiscoveryError, match='no chart "missing"'):
        await discover_charts(chart(repoURL=chart_repo, name="missing"), http=http)
    with pytest.raises(DiscoveryError, match="answered 404"):
        await discover_charts(chart(repoURL=chart_repo + "/nope", name="app"), http=http)
    with pytest.raises(ConfigError, match="needs a chart name"):
        await discover_charts(chart(repoURL=chart_repo), http=http)
    # A bad constraint never reaches discovery: the subscription itself refuses it (at apply).
    with pytest.raises(ValidationError, match="invalid semver constraint"):
        chart(repoURL=chart_repo, name="app", semverConstraint="~>>1")


async def test_oci_charts_in_a_real_registry(registry: Registry, http: httpx.AsyncClient) -> None:
    pusher = Pusher(registry)
    try:
        for version in ["0.1.0", "0.2.0+build.7", "0.10.0", "1.0.0-beta.1", "latest"]:
            push_chart(pusher, "charts/app", version)
    finally:
        pusher.close()
    client = RegistryClient(http)
    found = await discover_charts(
        chart(repoURL=f"oci://{registry.host}/charts/app"), http=http, registry=client
    )
    assert [c.version for c in found] == ["1.0.0-beta.1", "0.10.0", "0.2.0+build.7", "0.1.0"]
    constrained = await discover_charts(
        chart(repoURL=f"oci://{registry.host}/charts", name="app", semverConstraint="<0.10"),
        http=http,
        registry=client,
    )
    assert [c.version for c in constrained] == ["0.2.0+build.7", "0.1.0"]
    with pytest.raises(RegistryError, match="not found"):
        await discover_charts(
            chart(repoURL=f"oci://{registry.host}/charts/missing"), http=http, registry=client
        )
