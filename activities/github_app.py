"""GitHub App credentials: a JWT signed with the App's key buys an installation token.

A ``git`` Secret with ``githubAppID`` (or ``githubAppClientID``),
``githubAppInstallationID`` and ``githubAppPrivateKey`` (Kargo's keys) is a
:class:`~freightline.kargo.credentials.GitHubApp`. Before git runs,
:func:`resolve` trades it for an installation access token, as GitHub documents:

1. a JWT, RS256-signed with the App's private key: ``iss`` the App (or client)
   ID, ``iat`` a minute in the past (clock drift), ``exp`` nine minutes ahead
   (GitHub's limit is ten);
2. ``POST {api}/app/installations/{id}/access_tokens`` with ``Authorization:
   Bearer <JWT>`` answers ``{"token": ..., "expires_at": ...}`` (an hour);
3. git authenticates over HTTPS as ``x-access-token`` with the token.

Tokens are cached per App installation and API until five minutes before they
expire (one per worker process, shared by every activity), so a busy worker
asks GitHub about once an hour per installation. The key, the JWT and the token
stay in this process: never a log line, an error message or a workflow value.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from freightline.errors import CredentialError
from freightline.kargo.credentials import GitCredentials, GitHubApp
from freightline.logging import get_logger

__all__ = ["InstallationTokens", "app_jwt", "resolve"]

TOKEN_USERNAME = "x-access-token"  # noqa: S105 - the user name GitHub documents
REFRESH_MARGIN = 300.0
"""Seconds before its expiry that a cached token is replaced."""

log = get_logger("activities.github_app")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app: GitHubApp, now: float) -> str:
    """The App's JWT (RS256) at ``now``; raises CredentialError for an unusable key."""
    try:
        key = serialization.load_pem_private_key(app.private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(
            f"GitHub App {app.app_id}: githubAppPrivateKey is not a PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(f"GitHub App {app.app_id}: githubAppPrivateKey is not an RSA key")
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": app.app_id}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class InstallationTokens:
    """Installation tokens by App installation, minted on demand and cached until near expiry."""

    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._timeout = timeout
        self._tokens: dict[tuple[str, str, int], _Token] = {}
        self._lock = threading.Lock()
        self.minted = 0
        """Tokens asked of GitHub by this cache (for tests and metrics)."""

    def token(self, app: GitHubApp) -> str:
        key = (app.api_url, app.app_id, app.installation_id)
        # One lock for all: minting is rare (hourly), and two activities that miss at once
        # must not both ask GitHub.
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - REFRESH_MARGIN > self._clock():
                return cached.value
            token = self._mint(app)
            self._tokens[key] = token
            return token.value

    def _mint(self, app: GitHubApp) -> _Token:
        url = f"{app.api_url.rstrip('/')}/app/installations/{app.installation_id}/access_tokens"
        headers = {
            "Authorization": f"Bearer {app_jwt(app, self._clock())}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        where = f"GitHub App {app.app_id} installation {app.installation_id} ({app.api_url})"
        with httpx.Client(transport=self._transport, timeout=self._timeout) as client:
            response = client.post(url, headers=headers)
        if response.status_code in (401, 403, 404):
            message = _message(response)
            raise CredentialError(
                f"{where}: GitHub refused the App: {response.status_code} {message}"
            )
        response.raise_for_status()  # 5xx and the like: the activity's retry asks again
        body = response.json()
        token, expires = body.get("token"), body.get("expires_at")
        if not isinstance(token, str) or not token:
            raise CredentialError(f"{where}: the answer holds no token")
        expires_at = self._clock() + 3600.0
        if isinstance(expires, str):
            expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        self.minted += 1
        log.info("github app token minted", app=app.app_id, installation=app.installation_id)
        return _Token(token, expires_at)


def _message(response: httpx.Response) -> str:
    try:
        text = response.json().get("message", "")
    except (ValueError, AttributeError):
        text = ""
    return str(text)[:200]


TOKENS = InstallationTokens()
"""The worker process's cache."""


def resolve(
    credentials: GitCredentials, tokens: InstallationTokens | None = None
) -> GitCredentials:
    """``credentials`` as git takes them: a GitHub App's become its installation token."""
    if credentials.github_app is None:
        return credentials
    token = (tokens or TOKENS).token(credentials.github_app)
    return GitCredentials(TOKEN_USERNAME, token)
