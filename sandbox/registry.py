"""A real local OCI registry (Debian's docker-registry), and a tiny image pusher.

Used by the demo and the tests.

Starts Debian's ``docker-registry`` (CNCF distribution 2.8) on a free
loopback port with its storage in a temporary directory; optionally behind
htpasswd (Basic) or token (Bearer) auth (the tests' token server lives in
``tests/registry_fixture.py``).

Images are pushed with plain HTTP (no docker): a config blob with
``created``/``os``/``architecture``, one tiny layer, and a Docker v2 or OCI
manifest; indexes reference per-platform manifests.

The registry's access log (one line per request on its stdout) lets a test
count the requests a client really made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox.services import LocalService, stop_process

REGISTRY_BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# "GET /v2/app/tags/list HTTP/1.1" in the combined access log.
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def quiet_port() -> int:
    """A free port below the ephemeral range, so no outgoing connection takes it meanwhile
    (for a server that stops and must start again on the same port)."""
    while True:
        port = random.randint(20000, 30000)  # noqa: S311 - a port, not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry(LocalService):
    """A running registry process (``start_registry`` starts it); ``with`` stops it."""

    name = "docker-registry"

    host: str  # "127.0.0.1:PORT", as an image reference names it
    process: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)  # what the pusher sends

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self) -> list[tuple[str, str, int]]:
        """Every request the registry has logged: (method, uri, status)."""
        text = self.log_path.read_text(errors="replace")
        return [(m["method"], m["uri"], int(m["status"])) for m in _ACCESS_LINE.finditer(text)]

    def settle_requests(self, timeout: float = 5.0) -> list[tuple[str, str, int]]:
        """The logged requests once the log has stopped growing."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            size = self.log_path.stat().st_size
            if size == last:
                break
            last = size
            time.sleep(0.1)
        return self.requests()

    def start(self) -> None:
        """Nothing: ``start_registry`` returns it serving."""

    def stop(self) -> None:
        stop_process(self.process, timeout=10)


def start_registry(
    workdir: Path,
    auth: Mapping[str, Any] | None = None,
    notifications: Mapping[str, Any] | None = None,
) -> Registry:
    """Start ``docker-registry serve`` on a free loopback port; wait for ``/v2/``.

    ``notifications`` is the registry's ``notifications:`` section (webhook endpoints).
    """
    if not Path(REGISTRY_BINARY).exists():
        raise RuntimeError("docker-registry is not installed: apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = dict(auth)
    if notifications:
        config["notifications"] = dict(notifications)
    config_path = workdir / "config.yml"
    # JSON is YAML: no YAML library needed.
    config_path.write_text(json.dumps(config))
    log_path = workdir / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    registry = Registry(host=f"127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{registry.url}/v2/", timeout=1).status_code in (200, 401):
                return registry
        if time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError(f"docker-registry did not answer: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line, made by ``htpasswd`` (Debian's apache2-utils)."""
    out = subprocess.run(
        ["htpasswd", "-nbB", user, password], check=True, capture_output=True, text=True
    ).stdout
    return out.strip() + "\n"


# --- pushing ------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """What a push produced."""

    tag: str
    digest: str
    media_type: str
    created: str | None = None


class Pusher:
    """Uploads blobs and manifests to one registry over plain HTTP."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.client = httpx.Client(base_url=registry.url, headers=registry.headers, timeout=10)

    def close(self) -> None:
        self.client.close()

    def blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        start = self.client.post(f"/v2/{repo}/blobs/uploads/")
        start.raise_for_status()
        location = start.headers["Location"]
        # The Location carries upload state in its query: extend it, never replace it.
        separator = "&" if "?" in location else "?"
        put = self.client.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        put.raise_for_status()
        return digest

    def manifest(self, repo: str, ref: str, body: Mapping[str, Any], media_type: str) -> str:
        data = json.dumps(body).encode()
        response = self.client.put(
            f"/v2/{repo}/manifests/{ref}", content=data, headers={"Content-Type": media_type}
        )
        response.raise_for_status()
        return digest_of(data)

    def image(
        self,
        repo: str,
        tag: str | None,
        *,
        created: str | None = "2024-01-01T00:00:00Z",
        os: str = "linux",
        architecture: str = "amd64",
        variant: str = "",
        oci: bool = False,
        annotations: Mapping[str, str] | None = None,
        salt: str = "",
    ) -> Pushed:
        """Push one single-platform image; ``tag`` None pushes it by digest only."""
        config: dict[str, Any] = {
            "architecture": architecture,
            "os": os,
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"salt": salt or f"{tag}-{os}-{architecture}"}},
        }
        if variant:
            config["variant"] = variant
        if created is not None:
            config["created"] = created
        config_data = json.dumps(config).encode()
        layer = (salt or f"{tag}-{os}-{architecture}").encode()
        config_digest = self.blob(repo, config_data)
        layer_digest = self.blob(repo, layer)
        media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "size": len(config_data),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER if oci else DOCKER_LAYER,
                    "size": len(layer),
                    "digest": layer_digest,
                }
            ],
        }
        if annotations:
            body["annotations"] = dict(annotations)
        data = json.dumps(body).encode()
        digest = digest_of(data)
        self.manifest(repo, tag or digest, body, media_type)
        return Pushed(tag=tag or "", digest=digest, media_type=media_type, created=created)

    def index(
        self,
        repo: str,
        tag: str,
        platforms: Mapping[str, str],
        *,
        oci: bool = True,
        annotations: Mapping[str, str] | None = None,
    ) -> tuple[Pushed, dict[str, Pushed]]:
        """Push an index over one image per ``os/arch[/variant]`` -> created time."""
        children: dict[str, Pushed] = {}
        entries = []
        for platform, created in platforms.items():
            os, arch, *rest = platform.split("/")
            child = self.image(
                repo,
                None,
                created=created,
                os=os,
                architecture=arch,
                variant=rest[0] if rest else "",
                oci=oci,
                salt=f"{tag}-{platform}",
            )
            children[platform] = child
            platform_body = {"os": os, "architecture": arch}
            if rest:
                platform_body["variant"] = rest[0]
            size = len(self._manifest_bytes(repo, child.digest, child.media_type))
            entries.append(
                {
                    "mediaType": child.media_type,
                    "digest": child.digest,
                    "size": size,
                    "platform": platform_body,
                }
            )
        media_type = OCI_INDEX if oci else DOCKER_LIST
        body: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
        if annotations:
            body["annotations"] = dict(annotations)
        digest = self.manifest(repo, tag, body, media_type)
        return Pushed(tag=tag, digest=digest, media_type=media_type), children

    def _manifest_bytes(self, repo: str, digest: str, media_type: str) -> bytes:
        response = self.client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": media_type})
        response.raise_for_status()
        return response.content


# --- a token server for the Bearer flow ------------------------------------------


def webhook_notifications(url: str, secret: str) -> dict[str, Any]:
    """The registry's ``notifications:`` section calling Freightline's registry webhook.

    ``url`` is ``http://HOST:PORT/webhooks/<project>/registry``; the secret travels
    as the Bearer token the receiver checks.
    """
    return {
        "endpoints": [
            {
                "name": "freightline",
                "url": url,
                "headers": {"Authorization": [f"Bearer {secret}"]},
                "timeout": "2s",
                "threshold": 3,
                "backoff": "1s",
                "ignoredmediatypes": ["application/octet-stream"],
            }
        ]
    }
