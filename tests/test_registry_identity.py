"""Cloud registry identities (ECR access keys, GAR service accounts, ACR workload identity)
behind one interface.

No cloud registry can run here: ECR's ``GetAuthorizationToken`` is moto's
server (real HTTP, real SigV4-signed boto3 requests), and Google's token
endpoint a loopback stand-in that verifies the service account's JWT with the
key's public half, as Google does; Microsoft Entra ID and ACR's token endpoints one
stand-in (``AzureStandIn``) that checks each step's input as they do.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from activities.discovery import DiscoveryActivities
from activities.registry import RegistryClient, parse_repo_url
from activities.registry_identity import (
    GAR_SCOPE,
    AcrWorkloadIdentity,
    EcrAccessKey,
    GarKeyFile,
    GarServiceAccount,
    GarWorkloadIdentity,
    RegistryLogins,
    identity_for,
    registry_login,
    workload_cover,
    workload_identity_for,
)
from activities.worktree import lookup_in_project
from freightline.errors import CredentialError
from freightline.kargo.credentials import CRED_TYPE_LABEL, CredentialStore
from sandbox.registry import free_port
from tests.metric_server import LoopbackServer
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


class GoogleTokenStandIn(LoopbackServer):
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

        super().__init__(Handler)
        self.url += "/token"

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


def test_gar_key_file_of_google_application_credentials_buys_a_cached_token(
    service_account: tuple[dict[str, Any], GoogleTokenStandIn],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    account, google = service_account
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(account))
    environ = {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}
    # The key file comes before the metadata server, as in Google's default credentials, and
    # needs no project: it is the worker's own account.
    identity = workload_identity_for(GAR_REPO, environ, "shop")
    assert identity == GarKeyFile(str(key_file))
    assert workload_identity_for(f"oci://{GAR_REPO}", environ) == identity  # OCI charts too
    assert workload_identity_for("ghcr.io/example/app", environ) is None
    # Through the lookup discovery and the steps use, with no Secret at all: the stand-in
    # verified the JWT's signature with the key's public half before granting.
    login = registry_login(CredentialStore(None), "image", GAR_REPO, environ)
    (grant,) = google.granted
    assert login == ("oauth2accesstoken", grant["token"])
    assert grant["claims"]["scope"] == GAR_SCOPE and grant["claims"]["aud"] == google.url
    # Cached until five minutes before expiry, across lookups that re-read the file (a
    # clock past the first token's expiry, which the lookup bought with the real one).
    clock = Clock(time.time() + 7200)
    timed = dataclasses.replace(identity, clock=clock)
    first = timed.login()
    assert len(google.granted) == 2 and timed.login() == first
    clock.now += 3599 - 299
    assert timed.login() != first and len(google.granted) == 3
    # A rotated key (a new private_key_id) buys its own token at once.
    key_file.write_text(json.dumps({**account, "private_key_id": uuid.uuid4().hex}))
    assert timed.login()[1] not in {first[1], google.granted[2]["token"]}
    # Neither the key nor a token is in the identity's repr, its cover or the output.
    cover = workload_cover(GAR_REPO, environ, "shop")
    assert cover is not None and cover.status == "ok" and account["client_email"] in cover.detail
    shown = repr(identity) + cover.detail + "".join(capsys.readouterr())
    assert "PRIVATE KEY" not in shown and all(g["token"] not in shown for g in google.granted)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it: No such file or directory"),
        ("{not json", "not a JSON key file"),
        ('{"type": "external_account"}', "type 'external_account' is not supported"),
        ('{"type": "service_account", "client_email": "a@b"}', "no private_key"),
    ],
)
def test_a_key_file_that_cannot_serve_is_named_not_shown(
    tmp_path: Path, content: str | None, message: str
) -> None:
    key_file = tmp_path / "key.json"
    if content is not None:
        key_file.write_text(content)
    identity = GarKeyFile(str(key_file))
    with pytest.raises(CredentialError, match=message) as raised:
        identity.login()
    assert f"GOOGLE_APPLICATION_CREDENTIALS {key_file}" in str(raised.value)
    cover = workload_cover(GAR_REPO, {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}, "")
    assert cover is not None and cover.status == "missing" and message in cover.detail


def test_a_wrong_key_is_refused_by_the_token_endpoint_by_name(
    service_account: tuple[dict[str, Any], GoogleTokenStandIn], tmp_path: Path
) -> None:
    account, google = service_account
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({**account, "private_key": pem}))
    with pytest.raises(CredentialError, match=r"refused it \(400\)") as raised:
        GarKeyFile(str(key_file)).login()
    assert "PRIVATE KEY" not in str(raised.value) and google.granted == []


def test_workload_cover_names_the_identity_without_asking_anyone() -> None:
    irsa = {"AWS_ROLE_ARN": "arn:aws:iam::1:role/w", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t"}
    cover = workload_cover(ECR_REPO, irsa, "shop")
    assert cover is not None and cover.status == "ok" and "IRSA" in cover.detail
    pod = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials"}
    cover = workload_cover(ECR_REPO, pod, "shop")
    assert cover is not None and "EKS Pod Identity" in cover.detail
    assert "kargo-project-shop" in cover.detail
    assert workload_cover(ECR_REPO, {}, "shop") is None
    # GAR without a key file: the metadata server, asked only by the worker.
    cover = workload_cover(GAR_REPO, {}, "shop")
    assert (
        cover is not None and cover.status == "anonymous" and "runs on Google Cloud" in cover.detail
    )
    cover = workload_cover(GAR_REPO, {"GCE_METADATA_HOST": "127.0.0.1:9"}, "shop")
    assert cover is not None and cover.status == "ok" and "127.0.0.1:9" in cover.detail
    assert workload_cover("ghcr.io/example/app", irsa, "shop") is None


# --- Azure Container Registry with a workload identity ----------------------------------------

ACR = "kargoexample.azurecr.io"
FEDERATED = "federated-token-from-the-kubelet"


class AzureStandIn(LoopbackServer):
    """Microsoft Entra ID's token endpoint and ACR's documented token and registry endpoints
    (``POST /oauth2/exchange``, ``GET /oauth2/token`` with Basic, ``/v2/`` with a Bearer
    challenge), on one loopback server, checking each step's input as those services do."""

    def __init__(self, tenant: str, client_id: str) -> None:
        self.tenant, self.client_id = tenant, client_id
        self.aad, self.refresh, self.access = (f"{n}-{uuid.uuid4().hex}" for n in "ara")
        self.forms: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                outer.forms.append((self.path, form))
                status, body = outer.post(self.path, form)
                self._answer(status, body)

            def do_GET(self) -> None:
                status, body, headers = outer.get(self.path, self.headers.get("Authorization", ""))
                self._answer(status, body, headers)

            def _answer(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)

    def post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path == f"/{self.tenant}/oauth2/v2.0/token":
            expected = {
                "client_id": self.client_id,
                "scope": "https://containerregistry.azure.net/.default",
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": FEDERATED,
            }
            if form != expected:
                return 401, {"error": "invalid_client", "error_description": "AADSTS700213"}
            return 200, {"token_type": "Bearer", "expires_in": 3599, "access_token": self.aad}
        if path == "/oauth2/exchange":
            if form != {
                "grant_type": "access_token",
                "service": ACR,
                "tenant": self.tenant,
                "access_token": self.aad,
            }:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}
            return 200, {"refresh_token": self.refresh}
        return 404, {}

    def get(self, path: str, authorization: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path.startswith("/oauth2/token?"):
            basic = base64.b64encode(
                f"00000000-0000-0000-0000-000000000000:{self.refresh}".encode()
            )
            query = parse_qs(path.partition("?")[2])
            if authorization != f"Basic {basic.decode()}" or query.get("service") != [ACR]:
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}, {}
            return 200, {"access_token": self.access}, {}
        if path == "/v2/app/tags/list":
            if authorization != f"Bearer {self.access}":
                challenge = (
                    f'Bearer realm="{self.url}/oauth2/token",service="{ACR}",'
                    'scope="repository:app:pull"'
                )
                return 401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge}
            return 200, {"name": "app", "tags": ["1.0.0", "1.1.0"]}, {}
        return 404, {}, {}


@pytest.fixture
def azure(tmp_path: Path) -> Iterator[tuple[AzureStandIn, dict[str, str]]]:
    """The stand-in, and the variables Azure's workload identity webhook gives a pod."""
    tenant, client_id = str(uuid.uuid4()), str(uuid.uuid4())
    stand_in = AzureStandIn(tenant, client_id)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(FEDERATED + "\n")
    yield (
        stand_in,
        {
            "AZURE_CLIENT_ID": client_id,
            "AZURE_TENANT_ID": tenant,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": stand_in.url + "/",
        },
    )
    stand_in.stop()


async def test_acr_workload_identity_logs_in_and_the_registry_trades_it_for_a_token(
    azure: tuple[AzureStandIn, dict[str, str]],
) -> None:
    stand_in, environ = azure
    identity = workload_identity_for(f"{ACR}/app", environ)
    assert isinstance(identity, AcrWorkloadIdentity) and identity.registry == ACR
    assert identity.authority == stand_in.url + "/"
    # ACR's exchange lives at https://<registry>; here the stand-in answers for it.
    identity = dataclasses.replace(identity, registry_url=stand_in.url)
    login = identity.login()
    assert login == ("00000000-0000-0000-0000-000000000000", stand_in.refresh)
    assert identity.login() == login and len(stand_in.forms) == 2  # cached
    assert FEDERATED not in repr(identity)

    mirrors = {ACR: stand_in.host}
    async with httpx.AsyncClient(timeout=10) as http:
        client = RegistryClient(http, lambda host: login if host == ACR else None, mirrors=mirrors)
        tags = await client.list_tags(parse_repo_url(f"{ACR}/app", mirrors))
    assert sorted(tags) == ["1.0.0", "1.1.0"]


def test_a_wrong_federated_token_is_refused_by_name(
    azure: tuple[AzureStandIn, dict[str, str]], tmp_path: Path
) -> None:
    stand_in, environ = azure
    wrong = tmp_path / "wrong-token"
    wrong.write_text("someone-elses-token")
    identity = workload_identity_for(
        f"oci://{ACR}/charts/app", {**environ, "AZURE_FEDERATED_TOKEN_FILE": str(wrong)}
    )
    assert isinstance(identity, AcrWorkloadIdentity)
    with pytest.raises(CredentialError, match=r"refused AcrWorkloadIdentity\(.*\(401: invalid_cl"):
        dataclasses.replace(identity, registry_url=stand_in.url).login()
    gone = workload_identity_for(f"{ACR}/app", {**environ, "AZURE_FEDERATED_TOKEN_FILE": "/nope"})
    assert gone is not None
    with pytest.raises(CredentialError, match="cannot read AZURE_FEDERATED_TOKEN_FILE /nope"):
        gone.login()
    # No identity without the variables, or for another registry.
    assert workload_identity_for(f"{ACR}/app", {}) is None
    assert workload_identity_for("ghcr.io/example/app", environ) is None


def test_helm_oci_charts_take_the_cloud_logins_images_do(
    moto_ecr: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    azure: tuple[AzureStandIn, dict[str, str]],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto_ecr)
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "ecr-charts", "labels": {CRED_TYPE_LABEL: "helm"}},
                    "stringData": {
                        "repoURL": f"oci://{ECR_REPO.rsplit('/', 2)[0]}/charts/app",
                        "awsAccessKeyID": f"AKIA{uuid.uuid4().hex[:16].upper()}",
                        "awsSecretAccessKey": "ecr-secret-3",
                    },
                }
            ]
        )
    )
    store = CredentialStore(creds)
    _, environ = azure
    chart = f"oci://{ECR_REPO.rsplit('/', 2)[0]}/charts/app"
    login = registry_login(store, "helm", chart, environ)
    assert login is not None and login[0] == "AWS" and login[1]
    # A step's chart lookup (the worker's basic_credentials) is the same function.
    assert registry_login(store, "helm", "https://charts.example.com/", environ) is None


# --- ECR with the worker's own identity (IRSA) ------------------------------------------------


def test_ecr_workload_identity_assumes_the_projects_role(
    moto_ecr: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "eks-token"
    token_file.write_text("a-projected-service-account-token")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    irsa = {
        # What EKS injects into a pod whose service account is annotated with a role.
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/freightline-worker",
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_STS": moto_ecr,
        "AWS_ENDPOINT_URL_ECR": moto_ecr,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    for name, value in irsa.items():
        monkeypatch.setenv(name, value)
    store = CredentialStore(None)
    project = f"shop-{uuid.uuid4().hex[:6]}"
    login = registry_login(store, "image", ECR_REPO, irsa, project)
    assert login is not None and login[0] == "AWS" and login[1]
    roles = sts_backends["123456789012"]["global"].assumed_roles
    assert roles[-1].role_arn == f"arn:aws:iam::123456789012:role/kargo-project-{project}"
    # The steps' lookup (the worker's, bound to the project whose steps run) is the same.
    steps = lookup_in_project(RegistryLogins(store, irsa), f"{project}-b")
    assert steps("helm", f"oci://{ECR_REPO}") is not None
    assert roles[-1].role_arn.endswith(f"role/kargo-project-{project}-b")
    assert project not in repr(RegistryLogins(store, irsa))  # no environment in a repr
    # Without a project (nothing to assume) or without IRSA's variables: no identity.
    assert workload_identity_for(ECR_REPO, irsa) is None
    assert workload_identity_for(ECR_REPO, {}, project) is None


# --- GAR with the worker's own Google identity (metadata server) ------------------------------


class GoogleMetadataStandIn(LoopbackServer):
    """A GCE/GKE metadata server (project ID, the worker's token) and IAM Credentials'
    ``generateAccessToken``, on one loopback server, checking the headers Google checks."""

    def __init__(self, accounts: set[str]) -> None:
        self.accounts = accounts
        self.worker_token = f"worker-{uuid.uuid4().hex}"
        self.generated: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._answer(403, "missing Metadata-Flavor")
                if self.path == "/computeMetadata/v1/project/project-id":
                    return self._answer(200, "gcp-example")
                if self.path == "/computeMetadata/v1/instance/service-accounts/default/token":
                    token = {"access_token": outer.worker_token, "expires_in": 3599}
                    return self._answer(200, json.dumps(token))
                self._answer(404, "not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                prefix, suffix = "/v1/projects/-/serviceAccounts/", ":generateAccessToken"
                account = self.path.removeprefix(prefix).removesuffix(suffix)
                if self.headers.get("Authorization") != f"Bearer {outer.worker_token}":
                    return self._answer(401, "{}")
                if account not in outer.accounts:
                    return self._answer(404, json.dumps({"error": {"code": 404}}))
                assert body == {"scope": ["https://www.googleapis.com/auth/cloud-platform"]}
                outer.generated.append(account)
                token = {"accessToken": f"sa-{account}", "expireTime": "2099-01-01T00:00:00Z"}
                self._answer(200, json.dumps(token))

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)


def test_gar_workload_identity_uses_the_projects_service_account_else_the_workers() -> None:
    shop = f"shop-{uuid.uuid4().hex[:6]}"
    account = f"kargo-project-{shop}@gcp-example.iam.gserviceaccount.com"
    google = GoogleMetadataStandIn({account})
    try:
        environ = {"GCE_METADATA_HOST": google.host}
        identity = workload_identity_for(GAR_REPO, environ, shop)
        assert isinstance(identity, GarWorkloadIdentity)
        identity = dataclasses.replace(identity, iam_url=f"http://{google.host}")
        assert identity.login() == ("oauth2accesstoken", f"sa-{account}")
        assert google.generated == [account]
        # A project without its own account: the worker's token, as Kargo falls back to it.
        other = dataclasses.replace(identity, project=f"other-{uuid.uuid4().hex[:6]}")
        assert other.login() == ("oauth2accesstoken", google.worker_token)
    finally:
        google.stop()
    # Off Google Cloud (no metadata server answers): anonymous, and not asked at once again.
    gone = dataclasses.replace(identity, project=f"gone-{uuid.uuid4().hex[:6]}")
    assert gone.login() is None
    assert workload_identity_for(GAR_REPO, environ) is None  # no project, no identity
