"""Cloud registry identities (ECR access keys, GAR service accounts) behind one interface.

No cloud registry can run here: ECR's ``GetAuthorizationToken`` is moto's
server (real HTTP, real SigV4-signed boto3 requests), and Google's token
endpoint a loopback stand-in that verifies the service account's JWT with the
key's public half, as Google does.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from moto.server import ThreadedMotoServer

from activities.discovery import DiscoveryActivities
from activities.registry_identity import (
    GAR_SCOPE,
    EcrAccessKey,
    GarServiceAccount,
    identity_for,
)
from freightline.errors import CredentialError
from freightline.kargo.credentials import CRED_TYPE_LABEL, CredentialStore
from sandbox.registry import free_port
from tests.pipelines import dump

ECR_REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app"
GAR_REPO = "europe-west1-docker.pkg.dev/example-project/images/app"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def moto_ecr() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class GoogleTokenStandIn:
    """``POST /token`` with a JWT-bearer grant, the assertion verified with the public key."""

    def __init__(self, key: rsa.RSAPrivateKey, email: str) -> None:
        self.public_key = key.public_key()
        self.email = email
        self.granted: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                claims = stand_in.verify(form)
                if claims is None:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                token = f"ya29.{uuid.uuid4().hex}"
                stand_in.granted.append({"claims": claims, "token": token})
                self._answer(
                    200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
                )

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify(self, form: dict[str, list[str]]) -> dict[str, Any] | None:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return None
        try:
            header, payload, signature = form["assertion"][0].split(".")
            self.public_key.verify(
                _unb64(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (KeyError, ValueError, InvalidSignature):
            return None
        claims: dict[str, Any] = json.loads(_unb64(payload))
        ok = claims.get("iss") == self.email and claims.get("aud") == self.url
        return claims if ok else None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service_account() -> Iterator[tuple[dict[str, Any], GoogleTokenStandIn]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"puller-{uuid.uuid4().hex[:6]}@example-project.iam.gserviceaccount.com"
    stand_in = GoogleTokenStandIn(key, email)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "example-project",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": email,
        "token_uri": stand_in.url,
    }
    yield account, stand_in
    stand_in.stop()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_gar_service_account_buys_a_cached_access_token(
    service_account: tuple[dict[str, Any], GoogleTokenStandIn],
) -> None:
    account, google = service_account
    clock = Clock(1_900_000_000)
    identity = GarServiceAccount(account, clock=clock)
    username, token = identity.login()
    (grant,) = google.granted
    assert (username, token) == ("oauth2accesstoken", grant["token"])
    assert grant["claims"]["scope"] == GAR_SCOPE
    clock.now += 3599 - 301  # more than five minutes left: cached
    assert identity.login() == (username, token) and len(google.granted) == 1
    clock.now += 2  # within five minutes of expiry: a new token
    assert identity.login()[1] != token and len(google.granted) == 2
    assert "PRIVATE KEY" not in repr(identity)


def test_ecr_access_key_buys_a_login_from_ecr(
    moto_ecr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 reads AWS_ENDPOINT_URL_ECR itself: how a worker (or this test) points ECR elsewhere.
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto_ecr)
    # moto's tokens expire on 2015-01-01 (real ones in 12 hours): the clock stands before it.
    clock = Clock(datetime(2014, 12, 31, tzinfo=UTC).timestamp())
    identity = EcrAccessKey(
        f"AKIA{uuid.uuid4().hex[:16].upper()}", "ecr-secret-1", "eu-west-1", clock=clock
    )
    username, password = identity.login()
    assert username == "AWS" and password
    # Cached: the same login without asking ECR again, even with ECR gone.
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", f"http://127.0.0.1:{free_port()}")
    assert identity.login() == (username, password)
    # Five minutes before expiry it asks again (and here finds nobody: a CredentialError).
    clock.now = datetime(2015, 1, 1, tzinfo=UTC).timestamp() - 299
    with pytest.raises(CredentialError, match="ECR in eu-west-1: EndpointConnectionError"):
        identity.login()
    assert "ecr-secret-1" not in repr(identity)


def test_a_secret_with_cloud_keys_serves_discovery(
    moto_ecr: str,
    monkeypatch: pytest.MonkeyPatch,
    service_account: tuple[dict[str, Any], GoogleTokenStandIn],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto_ecr)
    account, google = service_account
    creds = tmp_path / "creds.yaml"
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ecr", "labels": {CRED_TYPE_LABEL: "image"}},
            "stringData": {
                "repoURL": ECR_REPO,
                "awsAccessKeyID": f"AKIA{uuid.uuid4().hex[:16].upper()}",
                "awsSecretAccessKey": "ecr-secret-2",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gar", "labels": {CRED_TYPE_LABEL: "image"}},
            "stringData": {
                "repoURL": GAR_REPO,
                "gcpServiceAccountKey": base64.b64encode(json.dumps(account).encode()).decode(),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "plain", "labels": {CRED_TYPE_LABEL: "image"}},
            "stringData": {"repoURL": "ghcr.io/example/app", "username": "u", "password": "p"},
        },
    ]
    creds.write_text(dump(secrets))
    store = CredentialStore(creds)
    discovery = DiscoveryActivities(store)
    ecr = discovery._login("image", ECR_REPO, ECR_REPO.split("/")[0])
    gar = discovery._login("image", GAR_REPO, GAR_REPO.split("/")[0])
    plain = discovery._login("image", "ghcr.io/example/app", "ghcr.io")
    assert ecr is not None and ecr[0] == "AWS"
    assert gar == ("oauth2accesstoken", google.granted[0]["token"])
    assert plain == ("u", "p")
    assert discovery._login("image", "quay.io/other/app", "quay.io") is None
    # The cloud keys stand for no Basic login of their own, and a mismatched URL none at all.
    entry = store.find("image", ECR_REPO)
    assert entry is not None and identity_for(entry, "ghcr.io/example/app") is None


def test_a_bad_service_account_key_is_named_not_shown(tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "gar", "labels": {CRED_TYPE_LABEL: "image"}},
                    "stringData": {"repoURL": GAR_REPO, "gcpServiceAccountKey": "not base64!"},
                }
            ]
        )
    )
    entry = CredentialStore(creds).find("image", GAR_REPO)
    assert entry is not None
    with pytest.raises(CredentialError, match="Secret gar: gcpServiceAccountKey is not"):
        identity_for(entry, GAR_REPO)
