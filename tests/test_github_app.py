"""GitHub App credentials: JWT -> installation token, cached until it nears expiry, used by git.

GitHub itself cannot be reached from here, so a stand-in on loopback speaks
the one endpoint GitHub documents for this (``POST /app/installations/{id}/
access_tokens``), verifying each JWT's RS256 signature with the App's public
key as GitHub does. The same server plays the git host: it challenges git
for Basic credentials and records what git sends.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from activities.git import GitRunner, git_environment
from activities.github_app import InstallationTokens, app_jwt, resolve
from freightline.errors import CredentialError, GitCommandError
from freightline.kargo.credentials import (
    CRED_TYPE_LABEL,
    CredentialStore,
    GitCredentials,
    GitHubApp,
)
from tests.pipelines import dump


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GitHubStandIn:
    """The access-token endpoint and a git host that wants Basic credentials, on loopback."""

    def __init__(self, app_id: str, installation_id: int, key: rsa.RSAPrivateKey) -> None:
        self.app_id = app_id
        self.installation_id = installation_id
        self.public_key = key.public_key()
        self.expires_at = "2099-01-01T00:00:00Z"
        self.minted: list[dict[str, Any]] = []
        self.git_auth: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                path = f"/api/v3/app/installations/{stand_in.installation_id}/access_tokens"
                if self.path != path:
                    self._answer(404, {"message": "Not Found"})
                    return
                claims = stand_in.verify(self.headers.get("Authorization", ""))
                if claims is None:
                    self._answer(401, {"message": "A JSON web token could not be decoded"})
                    return
                token = f"ghs_{uuid.uuid4().hex}"
                stand_in.minted.append({"claims": claims, "token": token})
                self._answer(201, {"token": token, "expires_at": stand_in.expires_at})

            def do_GET(self) -> None:  # git's smart-HTTP discovery
                auth = self.headers.get("Authorization")
                if auth is None:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                stand_in.git_auth.append(auth)
                self._answer(403, {"message": "recorded"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def verify(self, authorization: str) -> dict[str, Any] | None:
        """The JWT's claims when its RS256 signature is the App's and its issuer the App."""
        jwt = authorization.removeprefix("Bearer ")
        try:
            header, payload, signature = jwt.split(".")
            self.public_key.verify(
                _unb64(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return None
        if json.loads(_unb64(header)) != {"alg": "RS256", "typ": "JWT"}:
            return None
        claims: dict[str, Any] = json.loads(_unb64(payload))
        return claims if claims.get("iss") == self.app_id else None

    @property
    def repo_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/example/gitops.git"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def github(app_key: rsa.RSAPrivateKey) -> Iterator[GitHubStandIn]:
    stand_in = GitHubStandIn(f"Iv1.{uuid.uuid4().hex[:16]}", 4242, app_key)
    yield stand_in
    stand_in.stop()


def app_of(github: GitHubStandIn, key: rsa.RSAPrivateKey) -> GitHubApp:
    return GitHubApp(
        app_id=github.app_id,
        installation_id=github.installation_id,
        private_key=_pem(key),
        api_url=f"http://127.0.0.1:{github.port}/api/v3",
    )


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_verified_jwt_buys_a_token_cached_until_near_expiry(
    github: GitHubStandIn, app_key: rsa.RSAPrivateKey
) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    github.expires_at = "2030-01-01T00:00:00Z"
    clock = Clock(expires - 3600)
    tokens = InstallationTokens(clock=clock)
    app = app_of(github, app_key)
    first = tokens.token(app)
    (minted,) = github.minted
    assert first == minted["token"]
    claims = minted["claims"]
    assert claims["iss"] == github.app_id
    assert claims["iat"] == int(clock.now) - 60 and claims["exp"] - claims["iat"] == 600
    clock.now = expires - 301  # still more than five minutes left: the cached token
    assert tokens.token(app) == first and tokens.minted == 1
    clock.now = expires - 299  # within five minutes of expiry: a new one
    second = tokens.token(app)
    assert second != first and tokens.minted == 2 and len(github.minted) == 2


def test_git_authenticates_as_the_installation(
    github: GitHubStandIn, app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "github-app", "labels": {CRED_TYPE_LABEL: "git"}},
                    "stringData": {
                        "repoURL": github.repo_url,
                        "githubAppClientID": github.app_id,
                        "githubAppInstallationID": str(github.installation_id),
                        # Kargo takes the key base64-encoded too.
                        "githubAppPrivateKey": base64.b64encode(_pem(app_key).encode()).decode(),
                    },
                }
            ]
        )
    )
    credentials = CredentialStore(creds).git(github.repo_url)
    assert credentials is not None and credentials.github_app is not None
    assert credentials.github_app.api_url == f"http://127.0.0.1:{github.port}/api/v3"
    assert "PRIVATE KEY" not in repr(credentials)
    with git_environment(credentials) as env, pytest.raises(GitCommandError) as raised:
        GitRunner(tmp_path, env, credentials.secrets)("ls-remote", github.repo_url)
    (token,) = [m["token"] for m in github.minted]
    (auth,) = set(github.git_auth)
    assert base64.b64decode(auth.removeprefix("Basic ")).decode() == f"x-access-token:{token}"
    assert token not in str(raised.value) and "PRIVATE KEY" not in str(raised.value)


def test_a_refused_app_is_a_credential_error_without_the_key(
    github: GitHubStandIn, app_key: rsa.RSAPrivateKey
) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = app_of(github, impostor)
    with pytest.raises(CredentialError) as raised:
        resolve(GitCredentials(github_app=app), InstallationTokens())
    message = str(raised.value)
    assert "GitHub refused the App: 401 A JSON web token could not be decoded" in message
    assert github.app_id in message and "PRIVATE KEY" not in message
    with pytest.raises(CredentialError, match="not a PEM private key"):
        InstallationTokens().token(
            GitHubApp(app.app_id, app.installation_id, "not a key", app.api_url)
        )


def test_openssl_agrees_with_the_jwt_signature(
    github: GitHubStandIn, app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    # An independent check of the RS256 signature: openssl verifies it with the public key.
    jwt = app_jwt(app_of(github, app_key), 1_900_000_000)
    header, payload, signature = jwt.split(".")
    (tmp_path / "data").write_bytes(f"{header}.{payload}".encode())
    (tmp_path / "sig").write_bytes(_unb64(signature))
    (tmp_path / "pub.pem").write_bytes(
        app_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = subprocess.run(
        [
            "openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
            "-signature", str(tmp_path / "sig"), str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0 and "Verified OK" in result.stdout
