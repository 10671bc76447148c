"""Cloud registry identities behind one interface: a Secret's cloud keys become a registry login.

An ``image`` (or ``helm``) Secret may hold, instead of ``username`` and
``password``, a cloud identity that buys short-lived registry credentials,
with Kargo's keys and for the registries Kargo recognises by URL:

==========================================  ===============================  ====================
registry (``repoURL``)                      Secret keys                      login
==========================================  ===============================  ====================
``<account>.dkr.ecr.<region>.amazonaws.com``  ``awsAccessKeyID``,            ``AWS`` + the token of
(Amazon ECR)                                ``awsSecretAccessKey``,          ECR's
                                            ``awsRegion`` (optional)         ``GetAuthorizationToken``
``<region>-docker.pkg.dev``, ``gcr.io``     ``gcpServiceAccountKey``         ``oauth2accesstoken`` +
(Google Artifact Registry)                  (the JSON key, base64)           an OAuth2 access token
==========================================  ===============================  ====================

:func:`identity_for` picks the :class:`RegistryIdentity`; its ``login()``
returns ``(username, password)`` for the distribution API (Basic, or the
registry's Bearer token flow in ``activities.registry``) and caches it until
five minutes before it expires. ``login()`` does blocking I/O: discovery calls
it in a thread before the registry client needs it.

Where no real server can run here the tests use stand-ins: moto's ECR server
(``AWS_ENDPOINT_URL_ECR``, which boto3 reads itself, points a worker at it), and
a token endpoint that verifies the service account's JWT (a key's
``token_uri`` names the endpoint). Azure Container Registry (workload identity,
Kargo's only ACR form) is not done.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from freightline.errors import CredentialError
from freightline.kargo.credentials import CredentialEntry

__all__ = ["EcrAccessKey", "GarServiceAccount", "RegistryIdentity", "identity_for"]

ECR_URL = re.compile(r"^(?:oci://)?[0-9]{12}\.dkr\.ecr\.(.+)\.amazonaws\.com/")
GAR_URL = re.compile(r"^(?:oci://)?(?:.+-docker\.pkg\.dev/|(?:.+\.)?gcr\.io/)")
GAR_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"  # Kargo's
GAR_USERNAME = "oauth2accesstoken"
REFRESH_MARGIN = 300.0


class RegistryIdentity(Protocol):
    """Something that logs in to a registry: ``(username, password)``, cached while valid."""

    def login(self) -> tuple[str, str]: ...


@dataclass(frozen=True)
class _Login:
    username: str
    password: str
    expires_at: float


class _Cache:
    """Logins by identity, until ``REFRESH_MARGIN`` seconds before they expire."""

    def __init__(self) -> None:
        self._logins: dict[tuple[str, ...], _Login] = {}
        self._lock = threading.Lock()

    def get(
        self, key: tuple[str, ...], clock: Callable[[], float], mint: Callable[[], _Login]
    ) -> tuple[str, str]:
        with self._lock:
            login = self._logins.get(key)
            if login is None or login.expires_at - REFRESH_MARGIN <= clock():
                login = self._logins[key] = mint()
            return login.username, login.password


CACHE = _Cache()
"""The worker process's logins."""


@dataclass(frozen=True, repr=False)
class EcrAccessKey:
    """Amazon ECR with an access key: ``GetAuthorizationToken`` gives ``AWS:<password>``."""

    access_key_id: str
    secret_access_key: str
    region: str
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"EcrAccessKey({self.access_key_id}, {self.region})"

    def login(self) -> tuple[str, str]:
        key = ("ecr", self.access_key_id, self.region)
        return CACHE.get(key, self.clock, self._mint)

    def _mint(self) -> _Login:
        import boto3  # only a worker with ECR credentials pays for importing it
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "ecr",
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
        try:
            answer = client.get_authorization_token()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "error")
            raise CredentialError(
                f"ECR in {self.region} refused access key {self.access_key_id}: {code}"
            ) from None
        except BotoCoreError as err:
            raise CredentialError(f"ECR in {self.region}: {type(err).__name__}") from None
        (data,) = answer["authorizationData"][:1]
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        expires = data.get("expiresAt")
        expires_at = expires.timestamp() if expires is not None else self.clock() + 3600
        return _Login(username, password, expires_at)


@dataclass(frozen=True, repr=False)
class GarServiceAccount:
    """Google Artifact Registry with a service account key: an OAuth2 JWT-bearer grant."""

    key: Mapping[str, Any]
    clock: Callable[[], float] = time.time
    transport: httpx.BaseTransport | None = None

    def __repr__(self) -> str:
        return f"GarServiceAccount({self.key.get('client_email')})"

    def login(self) -> tuple[str, str]:
        key = ("gar", str(self.key.get("client_email")), str(self.key.get("private_key_id")))
        return CACHE.get(key, self.clock, self._mint)

    def _mint(self) -> _Login:
        email = str(self.key.get("client_email") or "")
        token_uri = str(self.key.get("token_uri") or "https://oauth2.googleapis.com/token")
        now = int(self.clock())
        claims = {"iss": email, "scope": GAR_SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600}
        assertion = _rs256(str(self.key.get("private_key") or ""), claims, email)
        with httpx.Client(transport=self.transport, timeout=30) as client:
            answer = client.post(
                token_uri,
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
            )
        if answer.status_code in (400, 401, 403):
            raise CredentialError(
                f"service account {email}: {token_uri} refused it ({answer.status_code})"
            )
        answer.raise_for_status()
        body = answer.json()
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise CredentialError(f"service account {email}: no access_token in the answer")
        lifetime = body.get("expires_in")
        expires_at = self.clock() + (float(lifetime) if isinstance(lifetime, int | float) else 3600)
        return _Login(GAR_USERNAME, token, expires_at)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rs256(pem: str, claims: Mapping[str, Any], who: str) -> str:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CredentialError(f"service account {who}: private_key is not a PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(f"service account {who}: private_key is not an RSA key")
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64url(signature)}"


def identity_for(entry: CredentialEntry, repo_url: str) -> RegistryIdentity | None:
    """The cloud identity a Secret holds for ``repo_url``, or None (plain Basic credentials)."""
    values = entry.values
    ecr = ECR_URL.match(repo_url)
    if ecr and values.get("awsAccessKeyID") and values.get("awsSecretAccessKey"):
        return EcrAccessKey(
            values["awsAccessKeyID"],
            values["awsSecretAccessKey"],
            values.get("awsRegion") or ecr.group(1),
        )
    if GAR_URL.match(repo_url) and values.get("gcpServiceAccountKey"):
        try:
            key = json.loads(base64.b64decode(values["gcpServiceAccountKey"], validate=True))
        except (binascii.Error, ValueError):
            raise CredentialError(
                f"Secret {entry.name}: gcpServiceAccountKey is not a base64-encoded JSON key"
            ) from None
        if not isinstance(key, dict):
            raise CredentialError(f"Secret {entry.name}: gcpServiceAccountKey is not a JSON key")
        return GarServiceAccount(key)
    return None
