"""A tiny auth-checking proxy in front of a real Prometheus: what a managed Prometheus does
with OAuth2 (an issuer's client-credentials endpoint, ``/token``, and a resource server that
takes its Bearer token) and with SigV4 (Amazon Managed Prometheus checks each request's AWS
signature). A request that passes is forwarded to ``upstream`` unchanged; one that does not
is answered 401/403 as those services do. Serving from construction until ``stop()``."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.metric_server import LoopbackServer

_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>\w+)"
)


class AuthProxy(LoopbackServer):
    """OAuth2 (``client_id``/``client_secret`` issue ``token``) or SigV4 (``aws_secret`` gives
    the secret key of an access key ID; service ``aps``) in front of ``upstream``."""

    def __init__(
        self,
        upstream: str,
        *,
        scheme: str,
        client_id: str = "",
        client_secret: str = "",
        token: str = "",
        aws_secret: Callable[[str], str | None] = lambda key: None,
    ) -> None:
        self.upstream = upstream
        self.scheme = scheme
        self.client_id, self.client_secret, self.token = client_id, client_secret, token
        self.aws_secret = aws_secret
        self.token_forms: list[dict[str, str]] = []
        self.signers: list[str] = []
        """The access key IDs of the requests whose signature was right."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if self.path == "/token":
                    outer._issue(self, body)
                else:
                    outer._forward(self, body.encode())

            def do_GET(self) -> None:
                outer._forward(self, b"")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def _issue(self, handler: BaseHTTPRequestHandler, body: str) -> None:
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.token_forms.append(form)
        basic = handler.headers.get("Authorization", "").removeprefix("Basic ")
        try:
            client_id, _, secret = base64.b64decode(basic).decode().partition(":")
        except ValueError:
            client_id, secret = "", ""
        if form.get("grant_type") != "client_credentials":
            return _answer(handler, 400, {"error": "unsupported_grant_type"})
        if (unquote(client_id), unquote(secret)) != (self.client_id, self.client_secret):
            return _answer(handler, 401, {"error": "invalid_client"})
        _answer(
            handler, 200, {"access_token": self.token, "token_type": "Bearer", "expires_in": 60}
        )

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        allowed = (
            handler.headers.get("Authorization") == f"Bearer {self.token}"
            if self.scheme == "oauth2"
            else self._signed(handler, body)
        )
        if not allowed:
            return _answer(handler, 401 if self.scheme == "oauth2" else 403, {"error": "denied"})
        answer = httpx.request(
            handler.command, self.upstream + handler.path, content=body or None, timeout=30
        )
        _answer(handler, answer.status_code, answer.json())

    def _signed(self, handler: BaseHTTPRequestHandler, body: bytes) -> bool:
        match = _SIGV4.fullmatch(handler.headers.get("Authorization", ""))
        secret = self.aws_secret(match["key"]) if match else None
        if match is None or secret is None or match["service"] != "aps":
            return False
        names = match["signed"].split(";")
        request = AWSRequest(
            method=handler.command,
            url=f"http://{handler.headers['Host']}{handler.path}",
            data=body or None,
            headers={name: handler.headers[name] for name in names},
        )
        request.context["timestamp"] = handler.headers["X-Amz-Date"]
        token = handler.headers.get("X-Amz-Security-Token")
        auth = SigV4Auth(Credentials(match["key"], secret, token), "aps", match["region"])
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        if expected != match["sig"]:
            return False
        self.signers.append(match["key"])
        return True


def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
