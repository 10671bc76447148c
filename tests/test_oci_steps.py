"""``oci-download`` and ``oci-push``, as Kargo's: every example on their Kargo reference pages
(``tests/reference/kargo-steps/oci-download.md``, ``oci-push.md``) runs through the worktree
runner against real local registries (Debian's ``docker-registry``), then the edge cases.

What differs from the pages, and why: registry hosts are the local registries
(``registry.example.com`` is one, ``prod.example.com`` / ``staging-registry.local`` the
other); a downloaded layer holds YAML so that ``yaml-parse`` can read it back out of the
work tree; the ``push-to-stage`` example reads the pushed digest with ``compose-output``
instead of ``kustomize-set-image`` (which needs a checkout; the output expression is the
page's). The pages' ``imageFrom(...).digest``, ``.tag``, ``chartFrom(...).version`` and
``commitFrom(...).id`` are written ``Digest``, ``Tag``, ``Version``, ``ID`` here: Kargo's
functions return Go structs and expr-lang reads their fields by Go name, so the
lower-case spelling is nil in Kargo too. ``oci-download``'s last example (with
``helm-template``) runs in ``tests/test_helm_steps.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities import oci_steps
from activities.oci_steps import OCIDownloadConfig, oci_download
from freightline.errors import ConfigError, RegistryError
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from tests.registry_fixture import (
    OCI_INDEX,
    OCI_MANIFEST,
    Pusher,
    Registry,
    TokenIssuer,
    TokenServer,
    digest_of,
    start_basic_registry,
    start_registry,
)
from tests.step_runs import (
    HELM_CHART,
    context,
    outcome_of,
    push_artifact,
    refused,
    run,
)

pytestmark = pytest.mark.integration

EXAMPLE_CONFIG = "application/vnd.example.config.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("oci-registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("oci-other")) as reg:
        yield reg


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_basic_registry(tmp_path_factory.mktemp("oci-guarded"), "robot", "s3cret") as reg:
        yield reg


def freight(
    images: list[dict[str, str]] | None = None,
    charts: list[dict[str, str]] | None = None,
    commits: list[dict[str, str]] | None = None,
) -> Freight:
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
    }
    for key, value in (("images", images), ("charts", charts), ("commits", commits)):
        if value:
            body[key] = value
    name = freight_id(Freight.model_validate(body))
    body["metadata"]["name"] = name
    body["alias"] = freight_alias(name)
    return Freight.model_validate(body)


def read_back(path: str) -> dict[str, Any]:
    """yaml-parse reads a downloaded layer (YAML text) back: its ``layer`` key."""
    return {
        "uses": "yaml-parse",
        "as": "read",
        "config": {"path": path, "outputs": [{"name": "layer", "fromExpression": "layer"}]},
    }


def manifest_at(registry: Registry, repo: str, reference: str) -> tuple[str, dict[str, Any]]:
    response = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}", **registry.headers},
    )
    response.raise_for_status()
    return digest_of(response.content), response.json()


# --- oci-download: the reference examples ------------------------------------------------------


def test_download_a_chart_by_tag(tmp_path: Path, registry: Registry) -> None:
    push_artifact(registry, "charts/my-app", "1.0.0", [(HELM_CHART, b"layer: my-app 1.0.0\n")])
    for prefix in ("", "oci://"):  # the page's first and second examples
        step = {
            "uses": "oci-download",
            "config": {
                "imageRef": f"{prefix}{registry.host}/charts/my-app:1.0.0",
                "outPath": "./charts/my-app-1.0.0.tgz",
            },
        }
        downloaded, parsed = run(tmp_path, [step, read_back("./charts/my-app-1.0.0.tgz")])
        assert downloaded.outputs == {}
        assert parsed.outputs == {"layer": "my-app 1.0.0"}


def test_download_by_digest(tmp_path: Path, registry: Registry) -> None:
    digest = push_artifact(
        registry, "configs/app-config", "v1", [(EXAMPLE_CONFIG, b"layer: config\n")]
    )
    data = push_artifact(registry, "example/artifacts", "v9", [(HELM_CHART, b"layer: data\n")])
    for ref, out, expected in (
        (f"{registry.host}/configs/app-config@{digest}", "./config/app-config.yaml", "config"),
        (f"{registry.host}/example/artifacts@{data}", "./artifacts/data.tar.gz", "data"),
    ):
        step = {"uses": "oci-download", "config": {"imageRef": ref, "outPath": out}}
        _, parsed = run(tmp_path, [step, read_back(out)])
        assert parsed.outputs == {"layer": expected}


def test_download_the_layer_of_a_media_type(tmp_path: Path, registry: Registry) -> None:
    layers = [(HELM_CHART, b"layer: first\n"), (EXAMPLE_CONFIG, b"layer: wanted\n")]
    push_artifact(registry, "artifacts/my-app", "v1.2.3", layers)
    step = {
        "uses": "oci-download",
        "config": {
            "imageRef": f"{registry.host}/artifacts/my-app:v1.2.3",
            "outPath": "./artifacts/config.json",
            "mediaType": EXAMPLE_CONFIG,
        },
    }
    _, parsed = run(tmp_path, [step, read_back("./artifacts/config.json")])
    assert parsed.outputs == {"layer": "wanted"}


def test_download_with_insecure_skip_tls_verify(tmp_path: Path, registry: Registry) -> None:
    push_artifact(registry, "artifacts/data", "latest", [(HELM_CHART, b"layer: latest\n")])
    step = {
        "uses": "oci-download",
        "config": {
            "imageRef": f"{registry.host}/artifacts/data:latest",
            "outPath": "./data/artifact.tar.gz",
            "insecureSkipTLSVerify": True,
        },
    }
    _, parsed = run(tmp_path, [step, read_back("./data/artifact.tar.gz")])
    assert parsed.outputs == {"layer": "latest"}


# --- oci-download: edge cases ------------------------------------------------------------------


def test_download_from_an_index_takes_linux_amd64(tmp_path: Path, registry: Registry) -> None:
    pusher = Pusher(registry)
    _, children = pusher.index("multi", "v1", {"linux/arm64": "2024-01-01T00:00:00Z",
                                               "linux/amd64": "2024-01-01T00:00:00Z"})  # fmt: skip
    pusher.close()
    ctx = context(tmp_path)
    oci_download(ctx, OCIDownloadConfig(image_ref=f"{registry.host}/multi:v1", out_path="l"))
    # The sandbox pusher's layer is its salt: the tag and platform.
    assert (ctx.workspace.root / "l").read_bytes() == b"v1-linux/amd64"
    assert children["linux/amd64"].digest


def test_download_refusals(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_artifact(registry, "small", "1", [(HELM_CHART, b"0123456789")])
    ctx = context(tmp_path)
    (ctx.workspace.root / "exists").write_text("keep")
    (ctx.workspace.root / "out").symlink_to(tmp_path)

    def download(ref: str, out: str, **fields: Any) -> None:
        oci_download(ctx, OCIDownloadConfig(image_ref=ref, out_path=out, **fields))

    with pytest.raises(ConfigError, match="overwrite is not allowed"):
        download(f"{registry.host}/small:1", "exists")
    for escape in ("../x", "out/x"):
        with pytest.raises(ConfigError, match="leaves the work tree"):
            download(f"{registry.host}/small:1", escape)
    with pytest.raises(RegistryError, match="not found"):
        download(f"{registry.host}/small:2", "a")
    with pytest.raises(RegistryError, match='no layer found with media type "x/y"'):
        download(f"{registry.host}/small:1", "a", media_type="x/y")
    monkeypatch.setattr(oci_steps, "MAX_LAYER_BYTES", 5)
    with pytest.raises(RegistryError, match="layer size 10 exceeds maximum allowed size of 5"):
        download(f"{registry.host}/small:1", "a")
    assert sorted(p.name for p in ctx.workspace.root.iterdir()) == ["exists", "out"]


def test_download_with_the_workers_credentials(tmp_path: Path, guarded: Registry) -> None:
    push_artifact(guarded, "private/chart", "1.0.0", [(HELM_CHART, b"layer: private\n")])
    asked: list[tuple[str, str]] = []

    def credentials(cred_type: str, repo_url: str) -> tuple[str, str] | None:
        asked.append((cred_type, repo_url))
        return ("robot", "s3cret") if repo_url == f"oci://{guarded.host}/private/chart" else None

    step = {
        "uses": "oci-download",
        "config": {"imageRef": f"oci://{guarded.host}/private/chart:1.0.0", "outPath": "c.yaml"},
    }
    _, parsed = run(tmp_path, [step, read_back("c.yaml")], credentials=credentials)
    assert parsed.outputs == {"layer": "private"}
    assert asked[0] == ("helm", f"oci://{guarded.host}/private/chart")
    err = refused(tmp_path, [step])  # no credentials on the worker
    assert err.type == "AuthenticationError" and outcome_of(err) == "Errored"
    assert "s3cret" not in str(err)


# --- oci-push: the reference examples ----------------------------------------------------------


def image_freight(registry: Registry, repo: str, tag: str) -> tuple[Freight, str]:
    pusher = Pusher(registry)
    pushed = pusher.image(repo, tag, oci=True)
    pusher.close()
    images = [{"repoURL": f"{registry.host}/{repo}", "tag": tag, "digest": pushed.digest}]
    return freight(images=images), pushed.digest


def test_push_retags_in_place(tmp_path: Path, registry: Registry) -> None:
    source, digest = image_freight(registry, "myapp", "1.2.3-rc")
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f'{registry.host}/myapp@${{{{ imageFrom("{registry.host}/myapp").Digest }}}}',
            "destRef": f"{registry.host}/myapp:v1.2.3",
        },
    }
    (outcome,) = run(tmp_path, [step], freight=source)
    assert outcome.outputs == {
        "image": f"{registry.host}/myapp:v1.2.3",
        "digest": digest,
        "tag": "v1.2.3",
    }
    assert manifest_at(registry, "myapp", "v1.2.3")[0] == digest


def test_push_to_another_registry(tmp_path: Path, registry: Registry, other: Registry) -> None:
    source, digest = image_freight(registry, "sandbox/myapp", "2.0.0")
    image = f'imageFrom("{registry.host}/sandbox/myapp")'
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f"{registry.host}/sandbox/myapp@${{{{ {image}.Digest }}}}",
            "destRef": f"{other.host}/myapp:${{{{ {image}.Tag }}}}",
        },
    }
    (outcome,) = run(tmp_path, [step], freight=source)
    assert outcome.outputs == {
        "image": f"{other.host}/myapp:2.0.0",
        "digest": digest,
        "tag": "2.0.0",
    }
    pushed_digest, body = manifest_at(other, "myapp", "2.0.0")
    assert pushed_digest == digest
    for blob in [body["config"], *body["layers"]]:  # every blob streamed across
        blob_response = httpx.get(f"{other.url}/v2/myapp/blobs/{blob['digest']}")
        assert digest_of(blob_response.content) == blob["digest"]
    (again,) = run(tmp_path, [step], freight=source)  # a retry changes nothing
    assert again.outputs == outcome.outputs


def test_push_to_a_stage_repository(tmp_path: Path, registry: Registry) -> None:
    source, digest = image_freight(registry, "widget-service", "1.0.0")
    image = f'imageFrom("{registry.host}/widget-service")'
    steps = [
        {
            "uses": "oci-push",
            "as": "push-to-stage",
            "config": {
                "srcRef": f"{registry.host}/widget-service@${{{{ {image}.Digest }}}}",
                "destRef": f"{registry.host}/widget-service/${{{{ ctx.stage }}}}:"
                f"${{{{ {image}.Tag }}}}",
            },
        },
        {
            "uses": "compose-output",
            "as": "set-image",
            "config": {
                "newName": f"{registry.host}/widget-service/${{{{ ctx.stage }}}}",
                "digest": '${{ outputs["push-to-stage"].digest }}',
            },
        },
    ]
    _, composed = run(tmp_path, steps, freight=source)
    assert composed.outputs == {"newName": f"{registry.host}/widget-service/test", "digest": digest}
    # Within one registry the blobs are mounted, not copied.
    mounts = [r for r in registry.settle_requests() if "mount=" in r[1]]
    assert mounts and all(status == 201 for _, _, status in mounts)


def test_push_a_chart(tmp_path: Path, registry: Registry, other: Registry) -> None:
    digest = push_artifact(registry, "charts/my-app", "0.3.0", [(HELM_CHART, b"chart")])
    source = freight(
        charts=[{"repoURL": f"oci://{registry.host}/charts/my-app", "version": "0.3.0"}]
    )
    chart = f'chartFrom("oci://{registry.host}/charts/my-app")'
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f"oci://{registry.host}/charts/my-app:${{{{ {chart}.Version }}}}",
            "destRef": f"oci://{other.host}/charts/my-app:${{{{ {chart}.Version }}}}",
        },
    }
    (outcome,) = run(tmp_path, [step], freight=source)
    assert outcome.outputs == {
        "image": f"{other.host}/charts/my-app:0.3.0",
        "digest": digest,
        "tag": "0.3.0",
    }


def test_push_with_annotations(tmp_path: Path, registry: Registry) -> None:
    source, digest = image_freight(registry, "annotated", "1.0.0")
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f'{registry.host}/annotated@${{{{ imageFrom("{registry.host}/annotated").Digest }}}}',
            "destRef": f"{registry.host}/annotated:v1.2.3",
            "annotations": {
                "org.opencontainers.image.source": "https://github.com/example/myapp",
                "io.kargo.promotion": "${{ ctx.promotion }}",
            },
        },
    }
    (outcome,) = run(tmp_path, [step], freight=source)
    pushed_digest, body = manifest_at(registry, "annotated", "v1.2.3")
    assert outcome.outputs["digest"] == pushed_digest != digest
    assert body["annotations"] == {
        "org.opencontainers.image.source": "https://github.com/example/myapp",
        "io.kargo.promotion": "p:x",
    }


def test_push_an_index_with_scoped_annotations(tmp_path: Path, registry: Registry) -> None:
    pusher = Pusher(registry)
    index, _ = pusher.index("indexed", "1.0.0", {"linux/amd64": "2024-01-01T00:00:00Z",
                                                  "linux/arm64": "2024-01-01T00:00:00Z"})  # fmt: skip
    pusher.close()
    source = freight(
        images=[{"repoURL": f"{registry.host}/indexed", "tag": "1.0.0", "digest": index.digest}],
        commits=[{"repoURL": "https://github.com/example/myapp", "id": "abc123"}],
    )
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f'{registry.host}/indexed@${{{{ imageFrom("{registry.host}/indexed").Digest }}}}',
            "destRef": f"{registry.host}/indexed:v1.2.3",
            "annotations": {
                "org.opencontainers.image.source": "https://github.com/example/myapp",
                "index:org.opencontainers.image.revision": (
                    '${{ commitFrom("https://github.com/example/myapp").ID }}'
                ),
                "manifest:org.opencontainers.image.description": "my app image",
            },
        },
    }
    (outcome,) = run(tmp_path, [step], freight=source)
    pushed_digest, body = manifest_at(registry, "indexed", "v1.2.3")
    assert outcome.outputs["digest"] == pushed_digest
    assert body["annotations"] == {"org.opencontainers.image.revision": "abc123"}
    for entry in body["manifests"]:
        child_digest, child = manifest_at(registry, "indexed", entry["digest"])
        assert child_digest == entry["digest"]
        assert child["annotations"] == {
            "org.opencontainers.image.source": "https://github.com/example/myapp",
            "org.opencontainers.image.description": "my app image",
        }


def test_push_latest_with_insecure_skip_tls_verify(
    tmp_path: Path, registry: Registry, other: Registry
) -> None:
    _, digest = image_freight(registry, "internal/myapp", "latest")
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f"{registry.host}/internal/myapp:latest",
            "destRef": f"{other.host}/staging/myapp:latest",
            "insecureSkipTLSVerify": True,
        },
    }
    (outcome,) = run(tmp_path, [step])
    assert outcome.outputs["digest"] == digest == manifest_at(other, "staging/myapp", "latest")[0]


# --- oci-push: edge cases ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry with Bearer tokens (``auth: token``): the push needs a push-scoped token."""
    issuer = TokenIssuer(tmp_path_factory.mktemp("oci-token-issuer"))
    tokens = TokenServer(issuer=issuer, service="oci-steps", users={"robot": "t0ken"})
    with tokens.running():
        reg = start_registry(
            issuer.key_path.parent / "registry",
            auth={
                "token": {
                    "realm": tokens.realm,
                    "service": tokens.service,
                    "issuer": issuer.name,
                    "rootcertbundle": str(issuer.cert_path),
                }
            },
        )
        token = tokens.issue(["repository:src:pull,push"], subject="seed")
        reg.headers = {"Authorization": f"Bearer {token}"}
        try:
            yield reg
        finally:
            reg.stop()


def test_push_with_bearer_tokens(tmp_path: Path, token_registry: Registry) -> None:
    digest = push_artifact(token_registry, "src", "1", [(HELM_CHART, b"layer: token\n")])
    step = {
        "uses": "oci-push",
        "config": {
            "srcRef": f"{token_registry.host}/src:1",
            "destRef": f"{token_registry.host}/dst:2",
        },
    }

    def credentials(cred_type: str, repo_url: str) -> tuple[str, str] | None:
        return ("robot", "t0ken") if cred_type == "image" else None

    (outcome,) = run(tmp_path, [step], credentials=credentials)
    assert outcome.outputs["digest"] == digest
    mounts = [r for r in token_registry.settle_requests() if "mount=" in r[1]]
    assert mounts and mounts[-1][2] == 201  # the token allowed pulling from src too


def test_push_refusals(
    tmp_path: Path, registry: Registry, other: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_freight(registry, "limited", "1")
    step = {
        "uses": "oci-push",
        "config": {"srcRef": f"{registry.host}/limited:1", "destRef": f"{other.host}/limited:1"},
    }
    monkeypatch.setattr(oci_steps, "MAX_PUSH_BYTES", 10)
    err = refused(tmp_path, [step])
    assert outcome_of(err) == "Errored" and "exceeds maximum allowed size of 10 bytes" in str(err)
    missing = {"uses": "oci-push", "config": {"srcRef": f"{registry.host}/limited:9",
                                               "destRef": f"{registry.host}/limited:2"}}  # fmt: skip
    err = refused(tmp_path, [missing])
    assert err.type == "RegistryError" and "not found" in str(err)
    digest_dest = {"uses": "oci-push", "config": {"srcRef": f"{registry.host}/limited:1",
                                                   "destRef": f"{registry.host}/x@sha256:ab"}}  # fmt: skip
    err = refused(tmp_path, [digest_dest])
    assert err.type == "ConfigError" and "destRef" in str(err)
    unreachable = {"uses": "oci-push", "config": {"srcRef": "127.0.0.1:1/a:1",
                                                   "destRef": "127.0.0.1:1/a:2"}}  # fmt: skip
    err = refused(tmp_path, [unreachable])
    assert err.type == "RegistryUnavailableError" and not err.non_retryable
