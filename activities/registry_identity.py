"""Cloud registry identities behind one interface: a Secret's cloud keys, or the worker's
workload identity, become a registry login.

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

When no Secret matches, the worker's own *workload identity* logs in, as Kargo's
providers do (:func:`workload_identity_for`): :class:`EcrWorkloadIdentity` (IRSA, EKS Pod
Identity; the project's ``kargo-project-<project>`` role), :class:`GarWorkloadIdentity`
(the metadata server; the project's ``kargo-project-<project>`` service account), or before
it :class:`GarKeyFile` (the service account key file ``GOOGLE_APPLICATION_CREDENTIALS``
names, as Google's application default credentials take it), and
Azure Container Registry (``<name>.azurecr.io``), which has no Secret form in Kargo.
:class:`AcrWorkloadIdentity` trades the federated token in ``AZURE_FEDERATED_TOKEN_FILE``
for a Microsoft Entra access token (client-credentials grant with a client assertion, at
``AZURE_AUTHORITY_HOST``/``AZURE_TENANT_ID``, as ``AZURE_CLIENT_ID``, scope
``https://containerregistry.azure.net/.default``), then that at the registry's
``POST /oauth2/exchange`` for an ACR refresh token; the login is
``00000000-0000-0000-0000-000000000000`` with the refresh token, which the registry's
Bearer challenge trades at its ``/oauth2/token`` for an access token of the scope asked
(``activities.registry``), as Kargo and ``docker login`` do.

Where no real server can run here the tests use stand-ins: moto's ECR server
(``AWS_ENDPOINT_URL_ECR``, which boto3 reads itself, points a worker at it), a token
endpoint that verifies the service account's JWT (a key's ``token_uri`` names the
endpoint), and for ACR one server mimicking Entra's token endpoint and ACR's documented
``/oauth2/exchange``, ``/oauth2/token`` and ``/v2/`` endpoints.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from freightline.errors import CredentialError
from freightline.kargo.credential_check import WorkloadCover
from freightline.kargo.credentials import CredentialEntry, CredentialStore

__all__ = [
    "AcrWorkloadIdentity",
    "EcrAccessKey",
    "EcrWorkloadIdentity",
    "GarKeyFile",
    "GarServiceAccount",
    "GarWorkloadIdentity",
    "RegistryIdentity",
    "RegistryLogins",
    "identity_for",
    "registry_login",
    "workload_cover",
    "workload_identity_for",
]

ECR_URL = re.compile(r"^(?:oci://)?[0-9]{12}\.dkr\.ecr\.(.+)\.amazonaws\.com/")
GAR_URL = re.compile(r"^(?:oci://)?(?:.+-docker\.pkg\.dev/|(?:.+\.)?gcr\.io/)")
GAR_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"  # Kargo's
GAR_USERNAME = "oauth2accesstoken"
ACR_URL = re.compile(r"^(?:oci://)?([a-zA-Z0-9-]+\.azurecr\.io)/")
ACR_USERNAME = "00000000-0000-0000-0000-000000000000"  # what ACR takes with a refresh token
ACR_SCOPE = "https://containerregistry.azure.net/.default"  # Kargo's
ACR_REFRESH_LIFETIME = 155 * 60.0
"""ACR refresh tokens live three hours; Kargo keeps one 150 minutes (with the margin, so do we)."""
AZURE_AUTHORITY = "https://login.microsoftonline.com/"
REFRESH_MARGIN = 300.0


class RegistryIdentity(Protocol):
    """Something that logs in to a registry: ``(username, password)``, cached while valid;
    None when the identity may not (anonymous access, as Kargo treats a denied role)."""

    def login(self) -> tuple[str, str] | None: ...


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
        return _ecr_answer(answer, self.clock)


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


@dataclass(frozen=True, repr=False)
class GarKeyFile:
    """Google Artifact Registry with the worker's own service account key, the file
    ``GOOGLE_APPLICATION_CREDENTIALS`` names (Google's application default credentials,
    before the metadata server): the key's JWT-bearer grant, as :class:`GarServiceAccount`.
    The file is read at each login, so a rotated key (a new ``private_key_id``) buys a
    new token; the token is cached per key until it nearly expires."""

    path: str
    clock: Callable[[], float] = time.time
    transport: httpx.BaseTransport | None = None

    def __repr__(self) -> str:
        return f"GarKeyFile({self.path})"

    def key(self) -> dict[str, Any]:
        """The parsed key; a CredentialError naming the file (never its content) when it
        cannot serve: unreadable, not JSON, or not a service account key."""
        where = f"GOOGLE_APPLICATION_CREDENTIALS {self.path}"
        try:
            key = json.loads(Path(self.path).read_text())
        except OSError as err:
            raise CredentialError(f"{where}: cannot read it: {err.strerror}") from None
        except ValueError:
            raise CredentialError(f"{where}: not a JSON key file") from None
        if not isinstance(key, dict):
            raise CredentialError(f"{where}: not a JSON key file")
        if key.get("type") != "service_account":
            # authorized_user and external_account files need other flows, not done here.
            raise CredentialError(
                f"{where}: type {key.get('type')!r} is not supported, only 'service_account'"
            )
        for field_name in ("client_email", "private_key"):
            if not isinstance(key.get(field_name), str) or not key[field_name]:
                raise CredentialError(f"{where}: no {field_name}")
        return key

    def login(self) -> tuple[str, str]:
        return GarServiceAccount(self.key(), clock=self.clock, transport=self.transport).login()


@dataclass(frozen=True, repr=False)
class EcrWorkloadIdentity:
    """Amazon ECR with the worker's own AWS identity (IRSA's web identity, EKS Pod Identity:
    the SDK's default chain), as Kargo's managed identity: the project's role
    ``arn:aws:iam::<account>:role/kargo-project-<project>`` is assumed, then
    ``GetAuthorizationToken`` gives the login. A role the worker may not assume, or that may
    not read ECR, is anonymous access (None), as in Kargo."""

    region: str
    project: str
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"EcrWorkloadIdentity({self.region}, project {self.project})"

    def login(self) -> tuple[str, str] | None:
        key = ("ecr-workload", self.region, self.project)
        try:
            return CACHE.get(key, self.clock, self._mint)
        except _Denied:
            return None

    def _mint(self) -> _Login:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            sts = boto3.client("sts", region_name=self.region)
            account = sts.get_caller_identity()["Account"]
            role = f"arn:aws:iam::{account}:role/kargo-project-{self.project}"
            assumed = sts.assume_role(RoleArn=role, RoleSessionName="freightline")["Credentials"]
            ecr = boto3.client(
                "ecr",
                region_name=self.region,
                aws_access_key_id=assumed["AccessKeyId"],
                aws_secret_access_key=assumed["SecretAccessKey"],
                aws_session_token=assumed["SessionToken"],
            )
            answer = ecr.get_authorization_token()
        except ClientError as err:
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = err.response.get("Error", {}).get("Code", "error")
            if status == 403 or code in ("AccessDenied", "AccessDeniedException"):
                raise _Denied from None
            raise CredentialError(f"ECR in {self.region} for {self!r}: {code}") from None
        except BotoCoreError as err:
            raise CredentialError(f"ECR in {self.region}: {type(err).__name__}") from None
        return _ecr_answer(answer, self.clock)


@dataclass(frozen=True, repr=False)
class GarWorkloadIdentity:
    """Google Artifact Registry with the worker's own Google identity (GKE workload identity,
    a GCE service account), as Kargo's workload identity federation: the metadata server
    gives the GCP project and the worker's token; IAM Credentials' ``generateAccessToken``
    turns it into a token of the project's service account
    ``kargo-project-<project>@<gcp-project>.iam.gserviceaccount.com``; without that account
    (404) the worker's own token is the login, as in Kargo. No metadata server (not on
    Google Cloud), or another refusal, is anonymous access (None)."""

    project: str
    metadata_host: str = "metadata.google.internal"
    iam_url: str = "https://iamcredentials.googleapis.com"
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"GarWorkloadIdentity(project {self.project})"

    def login(self) -> tuple[str, str] | None:
        key = ("gar-workload", self.metadata_host, self.project)
        if _NO_METADATA.get(self.metadata_host, -math.inf) > self.clock():
            return None
        try:
            return CACHE.get(key, self.clock, self._mint)
        except _NoMetadataServer:
            # Not on Google Cloud: ask again in a while, not at every discovery.
            _NO_METADATA[self.metadata_host] = self.clock() + REFRESH_MARGIN
            return None
        except _Denied:
            return None

    def _mint(self) -> _Login:
        metadata = f"http://{self.metadata_host}/computeMetadata/v1"
        flavor = {"Metadata-Flavor": "Google"}
        try:
            with httpx.Client(timeout=5) as client:
                gcp_project = client.get(f"{metadata}/project/project-id", headers=flavor)
                own = client.get(
                    f"{metadata}/instance/service-accounts/default/token", headers=flavor
                )
                if gcp_project.status_code != 200 or own.status_code != 200:
                    raise _Denied
                worker_token = _token_from(own, "access_token", "the metadata server", self)
                account = (
                    f"kargo-project-{self.project}@{gcp_project.text.strip()}"
                    ".iam.gserviceaccount.com"
                )
                answer = client.post(
                    f"{self.iam_url}/v1/projects/-/serviceAccounts/{account}:generateAccessToken",
                    json={"scope": ["https://www.googleapis.com/auth/cloud-platform"]},
                    headers={"Authorization": f"Bearer {worker_token}"},
                    timeout=30,
                )
        except httpx.TransportError:
            raise _NoMetadataServer from None
        if answer.status_code == 404:  # no account for the project: the worker's own token
            lifetime = own.json().get("expires_in")
            expires = self.clock() + (
                float(lifetime) if isinstance(lifetime, int | float) else 3600
            )
            return _Login(GAR_USERNAME, worker_token, expires)
        if answer.status_code != 200:
            raise _Denied
        token = _token_from(answer, "accessToken", "IAM Credentials", self)
        expire_time = answer.json().get("expireTime")
        try:
            expires = datetime.fromisoformat(str(expire_time).replace("Z", "+00:00")).timestamp()
        except ValueError:
            expires = self.clock() + 3600
        return _Login(GAR_USERNAME, token, expires)


class _Denied(Exception):
    """The workload identity may not read the registry: anonymous, not an error."""


class _NoMetadataServer(_Denied):
    """No Google metadata server answers: the worker is not on Google Cloud."""


_NO_METADATA: dict[str, float] = {}
"""Metadata hosts that did not answer, until when they are not asked again."""


@dataclass(frozen=True, repr=False)
class AcrWorkloadIdentity:
    """Azure Container Registry with the worker's Azure workload identity (see the module)."""

    registry: str
    """``<name>.azurecr.io``."""
    client_id: str
    tenant_id: str
    token_file: str
    authority: str = AZURE_AUTHORITY
    registry_url: str = ""
    """Where the registry's ``/oauth2/exchange`` is: ``https://<registry>`` unless given."""
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:
        return f"AcrWorkloadIdentity({self.registry}, client {self.client_id})"

    def login(self) -> tuple[str, str]:
        key = ("acr", self.registry, self.client_id, self.tenant_id)
        return CACHE.get(key, self.clock, self._mint)

    def _mint(self) -> _Login:
        try:
            # Kubernetes rotates the projected token: read it for every trade.
            assertion = Path(self.token_file).read_text().strip()
        except OSError as err:
            raise CredentialError(
                f"Azure workload identity: cannot read AZURE_FEDERATED_TOKEN_FILE "
                f"{self.token_file}: {err.strerror}"
            ) from None
        authority = self.authority.rstrip("/")
        entra = f"{authority}/{self.tenant_id}/oauth2/v2.0/token"
        with httpx.Client(timeout=30) as client:
            answer = client.post(
                entra,
                data={
                    "client_id": self.client_id,
                    "scope": ACR_SCOPE,
                    "grant_type": "client_credentials",
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    ),
                    "client_assertion": assertion,
                },
            )
            aad = _token_from(answer, "access_token", f"Microsoft Entra ID ({entra})", self)
            exchange = f"{self.registry_url or f'https://{self.registry}'}/oauth2/exchange"
            answer = client.post(
                exchange,
                data={
                    "grant_type": "access_token",
                    "service": self.registry,
                    "tenant": self.tenant_id,
                    "access_token": aad,
                },
            )
            refresh = _token_from(answer, "refresh_token", f"ACR {self.registry}", self)
        return _Login(ACR_USERNAME, refresh, self.clock() + ACR_REFRESH_LIFETIME)


def _ecr_answer(answer: Mapping[str, Any], clock: Callable[[], float]) -> _Login:
    """The login in ECR's ``GetAuthorizationToken`` answer: ``AWS:<password>``, base64."""
    (data,) = answer["authorizationData"][:1]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    expires = data.get("expiresAt")
    expires_at = expires.timestamp() if expires is not None else clock() + 3600
    return _Login(username, password, expires_at)


def _token_from(answer: httpx.Response, field: str, who: str, identity: object) -> str:
    """``field`` of a token endpoint's JSON answer; a refusal is a CredentialError quoting the
    endpoint's error code (never a token)."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.status_code >= 400 or not isinstance(body, dict):
        code = body.get("error") if isinstance(body, dict) else None
        detail = f": {code}" if isinstance(code, str) else ""
        raise CredentialError(f"{who} refused {identity!r} ({answer.status_code}{detail})")
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise CredentialError(f"{who}: no {field} in the answer for {identity!r}")
    return value


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


def workload_identity_for(
    repo_url: str, environ: Mapping[str, str], project: str = ""
) -> RegistryIdentity | None:
    """The worker's own cloud identity for ``repo_url`` when no Secret serves it, as Kargo's
    workload-identity providers: ACR with Azure workload identity (``AZURE_CLIENT_ID``,
    ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``, optional ``AZURE_AUTHORITY_HOST``,
    the variables the Azure workload identity webhook injects); ECR with IRSA
    (``AWS_ROLE_ARN`` and ``AWS_WEB_IDENTITY_TOKEN_FILE``) or EKS Pod Identity
    (``AWS_CONTAINER_CREDENTIALS_FULL_URI``), for a known ``project``; GAR with the key
    file ``GOOGLE_APPLICATION_CREDENTIALS`` names, else through the metadata server for a
    known ``project``. None otherwise."""
    ecr = ECR_URL.match(repo_url)
    aws = environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or (
        environ.get("AWS_ROLE_ARN") and environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    )
    if ecr and aws and project:
        return EcrWorkloadIdentity(ecr.group(1), project)
    if GAR_URL.match(repo_url) and environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        # Application default credentials: the key file first, then the metadata server.
        return GarKeyFile(environ["GOOGLE_APPLICATION_CREDENTIALS"])
    if GAR_URL.match(repo_url) and project:
        # Google's libraries take GCE_METADATA_HOST too; on Google Cloud it is not needed.
        host = environ.get("GCE_METADATA_HOST") or "metadata.google.internal"
        return GarWorkloadIdentity(project, host)
    acr = ACR_URL.match(repo_url)
    client, tenant = environ.get("AZURE_CLIENT_ID"), environ.get("AZURE_TENANT_ID")
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if acr and client and tenant and token_file:
        return AcrWorkloadIdentity(
            acr.group(1),
            client,
            tenant,
            token_file,
            authority=environ.get("AZURE_AUTHORITY_HOST") or AZURE_AUTHORITY,
        )
    return None


def workload_cover(repo_url: str, environ: Mapping[str, str], project: str) -> WorkloadCover | None:
    """What ``freightline credentials check`` says of the workload identity
    :func:`workload_identity_for` picks: read from the same variables, without asking any
    cloud endpoint and without a secret (a key file is read for its account's email)."""
    identity = workload_identity_for(repo_url, environ, project)
    if isinstance(identity, AcrWorkloadIdentity):
        return WorkloadCover(
            "ok",
            f"by workload identity Azure (AZURE_CLIENT_ID {identity.client_id}, "
            f"tenant {identity.tenant_id})",
        )
    if isinstance(identity, EcrWorkloadIdentity):
        how = (
            "EKS Pod Identity"
            if environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            else f"IRSA (AWS_ROLE_ARN {environ.get('AWS_ROLE_ARN')})"
        )
        return WorkloadCover(
            "ok", f"by workload identity {how}, assuming role kargo-project-{project}"
        )
    if isinstance(identity, GarKeyFile):
        try:
            email = identity.key()["client_email"]
        except CredentialError as err:
            return WorkloadCover("missing", str(err))
        return WorkloadCover(
            "ok", f"by workload identity GOOGLE_APPLICATION_CREDENTIALS (service account {email})"
        )
    if isinstance(identity, GarWorkloadIdentity):
        account = f"service account kargo-project-{project}@<gcp-project>, else the worker's own"
        if environ.get("GCE_METADATA_HOST"):
            return WorkloadCover(
                "ok",
                f"by workload identity Google metadata server {identity.metadata_host} ({account})",
            )
        # Only the metadata server can tell whether the worker runs on Google Cloud.
        return WorkloadCover(
            "anonymous",
            f"no Secret matches: workload identity Google metadata server if the worker "
            f"runs on Google Cloud ({account}), else anonymous access",
        )
    return None


def registry_login(
    store: CredentialStore,
    cred_type: str,
    repo_url: str,
    environ: Mapping[str, str],
    project: str = "",
) -> tuple[str, str] | None:
    """A registry login for ``repo_url`` (an image or an OCI chart): a Secret's username and
    password, the login its cloud identity buys, or the worker's workload identity's (ECR's
    needs the ``project``); None for anonymous. May do blocking I/O (a login's first
    purchase, then hourly or less)."""
    entry = store.find(cred_type, repo_url)
    if entry is None:
        identity = workload_identity_for(repo_url, environ, project)
        return identity.login() if identity is not None else None
    identity = identity_for(entry, repo_url)
    if identity is not None:
        return identity.login()
    return (entry.username, entry.password)


@dataclass(frozen=True)
class RegistryLogins:
    """:func:`registry_login` as the steps' credential lookup (``(cred_type, url)``), bound to
    the project whose steps run (:meth:`in_project`): a workload identity's login is the
    project's."""

    store: CredentialStore = field(repr=False)
    environ: Mapping[str, str] = field(repr=False)
    project: str = ""

    def __call__(self, cred_type: str, repo_url: str) -> tuple[str, str] | None:
        return registry_login(self.store, cred_type, repo_url, self.environ, self.project)

    def in_project(self, project: str) -> RegistryLogins:
        return replace(self, project=project)
