"""Registry test fixtures: the sandbox registry and pusher, plus a Bearer token server.

The token server signs RS256 JWTs with a throwaway key made by the ``openssl``
CLI, so a registry started with ``auth: token`` exercises the Bearer flow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from sandbox.registry import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    REGISTRY_BINARY,
    Pushed,
    Pusher,
    Registry,
    digest_of,
    free_port,
    htpasswd_line,
    start_registry,
)

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "REGISTRY_BINARY",
    "Pushed",
    "Pusher",
    "Registry",
    "TokenIssuer",
    "TokenServer",
    "digest_of",
    "free_port",
    "htpasswd_line",
    "start_basic_registry",
    "start_registry",
]


def start_basic_registry(workdir: Path, user: str, password: str) -> Registry:
    """A registry behind Basic authentication (an htpasswd file of one user); its pusher
    sends that user's credentials."""
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(htpasswd_line(user, password))
    registry = start_registry(workdir, auth={"htpasswd": {"realm": "test", "path": str(htpasswd)}})
    registry.headers = {"Authorization": httpx.BasicAuth(user, password)._auth_header}
    return registry


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """An RS256 key and self-signed certificate, made with the ``openssl`` CLI."""

    def __init__(self, workdir: Path, name: str = "freightline-test-issuer") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.key_path = workdir / "token.key"
        self.cert_path = workdir / "token.crt"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", str(self.key_path), "-out", str(self.cert_path),
                "-days", "1", "-subj", f"/CN={name}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert_path), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.cert_der_b64 = base64.b64encode(der).decode()

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_path)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return signing_input + "." + _b64url(signature)


@dataclass
class TokenServer:
    """A stdlib HTTP token endpoint on loopback, as a registry's ``auth: token`` realm."""

    issuer: TokenIssuer
    service: str
    users: dict[str, str]  # username -> password; empty means anonymous pull too
    token_key: str = "token"  # or "access_token"
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/token"

    def issue(self, scopes: list[str], subject: str = "") -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer.name,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        return self.issuer.sign(claims)

    @contextlib.contextmanager
    def running(self) -> Iterator[TokenServer]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                user = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if owner.users.get(user) != password:
                        self._answer(401, {"details": "bad credentials"})
                        return
                elif owner.users:
                    self._answer(401, {"details": "credentials required"})
                    return
                scopes = query.get("scope", [])
                owner.requests.append({"user": user, "scopes": scopes, "query": query})
                token = owner.issue(scopes, subject=user)
                self._answer(200, {owner.token_key: token, "expires_in": 300})

            def _answer(self, status: int, body: Mapping[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join()
