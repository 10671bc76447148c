"""The process's settings: read from the environment once, at the edge, and passed down.

A Freightline process (``python worker.py``, a ``freightline`` command) calls
:func:`load_settings` once, where it starts, and hands each part what it
needs: activity classes and servers take their settings through their
constructors, and nothing below the edge reads ``os.environ``. This module is
the one place that knows the variables' names; a bad value stops the process
with one line naming the variable (``FREIGHTLINE_WORKER_ROLE='bogus':
expected all or argocd``), never a traceback.

Temporal's own connection variables (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*``,
``TEMPORAL_PROFILE``) are not here: Temporal's envconfig reads them, as the
``temporal`` CLI does (``freightline.app.temporal.connect``).

Each group is a pydantic-settings model of its own, so a group can be built
alone and a test or the demo can set a field by name over the environment.
Secrets are ``SecretStr``: their repr is ``'**********'``, they never appear in
logs or error messages, and they never reach a workflow's input or history.

====================================  ============================  ======================================
variable                              field                         default
====================================  ============================  ======================================
FREIGHTLINE_TASK_QUEUE                temporal.task_queue           ``freightline``
FREIGHTLINE_UI_URL                    temporal.ui_url               (derived from TEMPORAL_ADDRESS)
FREIGHTLINE_WORKER_ROLE               worker.role                   ``all`` (or ``argocd``)
FREIGHTLINE_SHARD                     worker.shard                  (needed by the ``argocd`` role)
FREIGHTLINE_METRICS_ADDRESS           listen.metrics_address        ``127.0.0.1:9464``; empty: off
FREIGHTLINE_HEALTH_ADDRESS            listen.health_address         ``127.0.0.1:8080``; empty: off
FREIGHTLINE_WEBHOOK_PORT              webhooks.port                 (none: the worker serves no webhooks)
FREIGHTLINE_WEBHOOK_HOST              webhooks.host                 ``127.0.0.1``
FREIGHTLINE_WEBHOOK_SECRET            webhooks.secret               (secret)
FREIGHTLINE_GITHUB_WEBHOOK_SECRET     webhooks.github_secret        (secret; default: webhooks.secret)
FREIGHTLINE_GIT_AUTHOR_NAME           git.author_name               ``Freightline``
FREIGHTLINE_GIT_AUTHOR_EMAIL          git.author_email              ``freightline@localhost``
FREIGHTLINE_GIT_USERNAME              git.username                  (with git.password)
FREIGHTLINE_GIT_PASSWORD              git.password                  (secret)
FREIGHTLINE_CREDENTIALS_FILE          git.credentials_file          (a file of Kargo Secret documents)
FREIGHTLINE_GIT_SIGNING_KEY_FILE      git.signing_key_file          (an armored GPG private key: sign commits)
FREIGHTLINE_SSH_KNOWN_HOSTS           git.ssh_known_hosts           (a known_hosts file for git over SSH)
FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES  git.allow_local_repositories  ``false``
FREIGHTLINE_REPOSITORY_CACHE          git.repository_cache          ``~/.cache/freightline/repositories``
FREIGHTLINE_REPOSITORY_CACHE_MIB      git.repository_cache_mib      ``10240`` (the cache's bound, MiB)
ARGOCD_SERVER                         argocd.server                 (none: Argo CD steps error clearly)
ARGOCD_AUTH_TOKEN                     argocd.token                  (secret)
ARGOCD_INSECURE                       argocd.insecure               ``false``
FREIGHTLINE_NOTIFY_URLS               notify.urls                   (comma-separated; secrets)
FREIGHTLINE_REGISTRY_MIRRORS          registry.mirrors              (``registry=mirror,...``)
FREIGHTLINE_METRIC_*                  metrics.header_values         (secrets for ``{{env.NAME}}`` headers)
FREIGHTLINE_PROJECT                   cli.project                   (the CLI's default ``--project``)
FREIGHTLINE_UI_ADDRESS                ui.address                    (none: the worker serves no web UI)
FREIGHTLINE_UI_AUTH                   ui.auth                       ``users`` (or ``proxy``, ``oidc``)
FREIGHTLINE_UI_USERS_FILE             ui.users_file                 (users, password hashes, roles)
FREIGHTLINE_UI_SECRET                 ui.secret                     (secret; signs sessions and CSRF)
FREIGHTLINE_UI_SIGNING_KEY            ui.signing_key                (secret; Ed25519, signs approvals)
FREIGHTLINE_UI_PROXY_USER_HEADER      ui.proxy_user_header          ``X-Forwarded-User``
FREIGHTLINE_UI_PROXY_GROUPS_HEADER    ui.proxy_groups_header        ``X-Forwarded-Groups``
FREIGHTLINE_UI_TRUSTED_PROXIES        ui.trusted_proxies            ``127.0.0.1,::1``
FREIGHTLINE_UI_OIDC_ISSUER_URL        ui.oidc_issuer_url            (``oidc``: the issuer, discovery under it)
FREIGHTLINE_UI_OIDC_CLIENT_ID         ui.oidc_client_id             (``oidc``: the UI's client ID)
FREIGHTLINE_UI_OIDC_CLIENT_SECRET     ui.oidc_client_secret         (secret; none: a public client, PKCE)
FREIGHTLINE_UI_OIDC_SECRET_FILE       ui.oidc_secret_file           (the client secret from a file instead)
FREIGHTLINE_UI_OIDC_ADDITIONAL_SCOPES ui.oidc_additional_scopes     ``groups`` (after openid profile email)
FREIGHTLINE_UI_OIDC_USERNAME_CLAIM    ui.oidc_username_claim        ``email``
FREIGHTLINE_UI_OIDC_GROUPS_CLAIM      ui.oidc_groups_claim          ``groups``
FREIGHTLINE_UI_OIDC_REDIRECT_URL      ui.oidc_redirect_url          (default: the UI's ``/oidc/callback``)
USER, LOGNAME                         cli.user                      ``cli`` (who the CLI acts as)
====================================  ============================  ======================================

Every listener binds to loopback unless told otherwise: a worker on a laptop
exposes nothing to its network, and a second one clashes only on ports. The
deployment (``deploy/``) sets ``0.0.0.0`` explicitly, where the kubelet and
Prometheus reach the pod from outside.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from freightline.errors import ConfigError

__all__ = [
    "ArgoCDSettings",
    "CliSettings",
    "GitSettings",
    "ListenSettings",
    "MetricSettings",
    "NotifySettings",
    "RegistrySettings",
    "Settings",
    "TemporalSettings",
    "WebhookSettings",
    "WorkerSettings",
    "environment_variables",
    "load_settings",
    "parse_address",
]

TASK_QUEUE_ENV: Final = "FREIGHTLINE_TASK_QUEUE"
UI_URL_ENV: Final = "FREIGHTLINE_UI_URL"
WORKER_ROLE_ENV: Final = "FREIGHTLINE_WORKER_ROLE"
SHARD_ENV: Final = "FREIGHTLINE_SHARD"
MAX_CACHED_WORKFLOWS_ENV: Final = "FREIGHTLINE_MAX_CACHED_WORKFLOWS"
METRICS_ADDRESS_ENV: Final = "FREIGHTLINE_METRICS_ADDRESS"
HEALTH_ADDRESS_ENV: Final = "FREIGHTLINE_HEALTH_ADDRESS"
WEBHOOK_PORT_ENV: Final = "FREIGHTLINE_WEBHOOK_PORT"
WEBHOOK_HOST_ENV: Final = "FREIGHTLINE_WEBHOOK_HOST"
WEBHOOK_SECRET_ENV: Final = "FREIGHTLINE_WEBHOOK_SECRET"  # noqa: S105 - a variable name
GITHUB_SECRET_ENV: Final = "FREIGHTLINE_GITHUB_WEBHOOK_SECRET"  # noqa: S105 - a variable name
GIT_AUTHOR_NAME_ENV: Final = "FREIGHTLINE_GIT_AUTHOR_NAME"
GIT_AUTHOR_EMAIL_ENV: Final = "FREIGHTLINE_GIT_AUTHOR_EMAIL"
GIT_USERNAME_ENV: Final = "FREIGHTLINE_GIT_USERNAME"
GIT_PASSWORD_ENV: Final = "FREIGHTLINE_GIT_PASSWORD"  # noqa: S105 - a variable name
CREDENTIALS_FILE_ENV: Final = "FREIGHTLINE_CREDENTIALS_FILE"
GIT_SIGNING_KEY_FILE_ENV: Final = "FREIGHTLINE_GIT_SIGNING_KEY_FILE"
SSH_KNOWN_HOSTS_ENV: Final = "FREIGHTLINE_SSH_KNOWN_HOSTS"
ALLOW_LOCAL_REPOSITORIES_ENV: Final = "FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES"
REPOSITORY_CACHE_ENV: Final = "FREIGHTLINE_REPOSITORY_CACHE"
REPOSITORY_CACHE_MIB_ENV: Final = "FREIGHTLINE_REPOSITORY_CACHE_MIB"
ARGOCD_SERVER_ENV: Final = "ARGOCD_SERVER"
ARGOCD_AUTH_TOKEN_ENV: Final = "ARGOCD_AUTH_TOKEN"  # noqa: S105 - a variable name
ARGOCD_INSECURE_ENV: Final = "ARGOCD_INSECURE"
NOTIFY_URLS_ENV: Final = "FREIGHTLINE_NOTIFY_URLS"
REGISTRY_MIRRORS_ENV: Final = "FREIGHTLINE_REGISTRY_MIRRORS"
METRIC_HEADER_ENV_PREFIX: Final = "FREIGHTLINE_METRIC_"
PROJECT_ENV: Final = "FREIGHTLINE_PROJECT"
UI_ADDRESS_ENV: Final = "FREIGHTLINE_UI_ADDRESS"
UI_AUTH_ENV: Final = "FREIGHTLINE_UI_AUTH"
UI_USERS_FILE_ENV: Final = "FREIGHTLINE_UI_USERS_FILE"
UI_SECRET_ENV: Final = "FREIGHTLINE_UI_SECRET"  # noqa: S105 - a variable name
UI_SIGNING_KEY_ENV: Final = "FREIGHTLINE_UI_SIGNING_KEY"
UI_PROXY_USER_HEADER_ENV: Final = "FREIGHTLINE_UI_PROXY_USER_HEADER"
UI_PROXY_GROUPS_HEADER_ENV: Final = "FREIGHTLINE_UI_PROXY_GROUPS_HEADER"
UI_TRUSTED_PROXIES_ENV: Final = "FREIGHTLINE_UI_TRUSTED_PROXIES"
UI_OIDC_ISSUER_URL_ENV: Final = "FREIGHTLINE_UI_OIDC_ISSUER_URL"
UI_OIDC_CLIENT_ID_ENV: Final = "FREIGHTLINE_UI_OIDC_CLIENT_ID"
UI_OIDC_CLIENT_SECRET_ENV: Final = "FREIGHTLINE_UI_OIDC_CLIENT_SECRET"  # noqa: S105 - a name
UI_OIDC_SECRET_FILE_ENV: Final = "FREIGHTLINE_UI_OIDC_SECRET_FILE"  # noqa: S105 - a name
UI_OIDC_ADDITIONAL_SCOPES_ENV: Final = "FREIGHTLINE_UI_OIDC_ADDITIONAL_SCOPES"
UI_OIDC_USERNAME_CLAIM_ENV: Final = "FREIGHTLINE_UI_OIDC_USERNAME_CLAIM"
UI_OIDC_GROUPS_CLAIM_ENV: Final = "FREIGHTLINE_UI_OIDC_GROUPS_CLAIM"
UI_OIDC_REDIRECT_URL_ENV: Final = "FREIGHTLINE_UI_OIDC_REDIRECT_URL"

DEFAULT_TASK_QUEUE: Final = "freightline"
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1:9464"  # deploy/ sets 0.0.0.0 for the scraper
DEFAULT_HEALTH_ADDRESS: Final = "127.0.0.1:8080"  # deploy/ sets 0.0.0.0 for the kubelet
DEFAULT_WEBHOOK_HOST: Final = "127.0.0.1"  # serving other machines is a deliberate setting
DEFAULT_AUTHOR_NAME: Final = "Freightline"
DEFAULT_AUTHOR_EMAIL: Final = "freightline@localhost"
DEFAULT_REPOSITORY_CACHE_MIB: Final = 10 * 1024
DEFAULT_MAX_CACHED_WORKFLOWS: Final = 1000


def _default_repository_cache() -> Path:
    """The worker's repository cache: under ``$XDG_CACHE_HOME`` (``~/.cache``), which
    outlives a restart (the deployment's ``HOME`` is its ``/tmp`` volume)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "freightline" / "repositories"


def parse_address(address: str, *, setting: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as a bindable pair, or a ConfigError naming the setting."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f'{setting}: "{address}" is not HOST:PORT (e.g. 0.0.0.0:9464)')
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ":9464" means all interfaces


class _Group(BaseSettings):
    """A group of settings, each field read from the variable its alias names (exactly)."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,  # an empty variable is an unset one, unless a group says otherwise
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        str_strip_whitespace=True,
    )


class TemporalSettings(_Group):
    """Where work goes and where people look (the connection itself is Temporal's envconfig)."""

    task_queue: str = Field(DEFAULT_TASK_QUEUE, min_length=1, validation_alias=TASK_QUEUE_ENV)
    ui_url: str | None = Field(None, validation_alias=UI_URL_ENV)
    """The Temporal UI, for links the CLI prints and notifications carry; unset, it is derived
    from the frontend address (``freightline.app.temporal.ui_url``)."""


class WorkerSettings(_Group):
    """What this worker runs: everything, or one cluster's Argo CD activities."""

    role: Literal["all", "argocd"] = Field("all", validation_alias=WORKER_ROLE_ENV)
    shard: str | None = Field(None, validation_alias=SHARD_ENV)
    """With the ``argocd`` role: the Stages' ``spec.shard`` whose Argo CD this worker reaches."""
    max_cached_workflows: int = Field(
        DEFAULT_MAX_CACHED_WORKFLOWS, ge=0, validation_alias=MAX_CACHED_WORKFLOWS_ENV
    )
    """Workflow runs the worker keeps in memory between their tasks (the SDK's sticky cache,
    least recently used evicted): an evicted run is replayed from its history when it next
    has work. Each idle Stage or Warehouse costs ~190 KiB of it (bench/README.md)."""

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() not in ("all", "argocd"):
            raise ValueError("expected all or argocd")
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _argocd_needs_a_shard(self) -> WorkerSettings:
        if self.role == "argocd" and not self.shard:
            raise ValueError(
                f"{WORKER_ROLE_ENV}=argocd needs {SHARD_ENV}: the Stages' spec.shard whose "
                "Argo CD this worker reaches"
            )
        return self


class ListenSettings(_Group):
    """The worker's listeners: Prometheus metrics and the health probes."""

    # Here an empty variable means "off", not "default".
    model_config = SettingsConfigDict(env_ignore_empty=False)

    metrics_address: str | None = Field(
        DEFAULT_METRICS_ADDRESS, validation_alias=METRICS_ADDRESS_ENV
    )
    health_address: str | None = Field(DEFAULT_HEALTH_ADDRESS, validation_alias=HEALTH_ADDRESS_ENV)

    @field_validator("metrics_address", "health_address", mode="before")
    @classmethod
    def _host_port_or_off(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        try:
            parse_address(value, setting="")
        except ConfigError:
            raise ValueError("not HOST:PORT (e.g. 0.0.0.0:9464), or empty for off") from None
        return value


class WebhookSettings(_Group):
    """The webhook receiver: where the worker serves it, and the shared secrets."""

    port: int | None = Field(None, ge=0, le=65535, validation_alias=WEBHOOK_PORT_ENV)
    host: str = Field(DEFAULT_WEBHOOK_HOST, validation_alias=WEBHOOK_HOST_ENV)
    secret: SecretStr | None = Field(None, validation_alias=WEBHOOK_SECRET_ENV)
    github_secret: SecretStr | None = Field(None, validation_alias=GITHUB_SECRET_ENV)

    def secret_value(self) -> str:
        """The shared secret ("" when unset: every request is then refused)."""
        return self.secret.get_secret_value() if self.secret else ""

    def github_secret_value(self) -> str:
        """The GitHub signing secret, the shared one unless set apart."""
        return self.github_secret.get_secret_value() if self.github_secret else self.secret_value()


class GitSettings(_Group):
    """Commit identity and credentials; the credentials never leave the worker."""

    author_name: str = Field(DEFAULT_AUTHOR_NAME, validation_alias=GIT_AUTHOR_NAME_ENV)
    author_email: str = Field(DEFAULT_AUTHOR_EMAIL, validation_alias=GIT_AUTHOR_EMAIL_ENV)
    username: str | None = Field(None, validation_alias=GIT_USERNAME_ENV)
    password: SecretStr | None = Field(None, validation_alias=GIT_PASSWORD_ENV)
    credentials_file: Path | None = Field(None, validation_alias=CREDENTIALS_FILE_ENV)
    signing_key_file: Path | None = Field(None, validation_alias=GIT_SIGNING_KEY_FILE_ENV)
    """An ASCII-armored GPG private key without a passphrase: every commit and tag the
    worker makes is signed with it (Kargo's system-level signing key); its user ID should
    be the commit author's."""
    ssh_known_hosts: Path | None = Field(None, validation_alias=SSH_KNOWN_HOSTS_ENV)
    """The host keys git over SSH accepts (a Secret's ``knownHosts`` comes first); an
    SSH host whose key is in neither is refused."""
    allow_local_repositories: bool = Field(False, validation_alias=ALLOW_LOCAL_REPOSITORIES_ENV)
    """Whether git subscriptions and steps may name a local path or ``file://`` URL: the
    worker's own filesystem, off by default (the dev server, the demo and the tests use
    bare repositories on disk and turn it on)."""
    repository_cache: Path | None = Field(
        default_factory=_default_repository_cache, validation_alias=REPOSITORY_CACHE_ENV
    )
    """Where the worker keeps a bare mirror of each repository it clones or discovers
    (``docs/repository-cache.md``); None (``off``): every clone is a fresh one."""
    repository_cache_mib: int = Field(
        DEFAULT_REPOSITORY_CACHE_MIB, ge=1, validation_alias=REPOSITORY_CACHE_MIB_ENV
    )
    """The cache's bound: past it, the least recently used mirrors no activity holds go."""

    @field_validator("repository_cache", mode="before")
    @classmethod
    def _cache_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "off":
            return None
        return value

    @model_validator(mode="after")
    def _username_with_password(self) -> GitSettings:
        if bool(self.username) != bool(self.password and self.password.get_secret_value()):
            given, missing = (
                (GIT_USERNAME_ENV, GIT_PASSWORD_ENV)
                if self.username
                else (GIT_PASSWORD_ENV, GIT_USERNAME_ENV)
            )
            raise ValueError(f"{given} is set without {missing}: set both, or neither")
        return self

    @property
    def author(self) -> tuple[str, str]:
        """The default commit author: (name, email)."""
        return self.author_name, self.author_email


class ArgoCDSettings(_Group):
    """Where the worker's Argo CD is and how to authenticate; never leaves the worker."""

    server: str | None = Field(None, validation_alias=ARGOCD_SERVER_ENV)
    """The API server, ``https://argocd.example.com``; a bare host means https."""
    token: SecretStr | None = Field(None, validation_alias=ARGOCD_AUTH_TOKEN_ENV)
    insecure: bool = Field(False, validation_alias=ARGOCD_INSECURE_ENV)
    """Skip TLS verification (self-signed dev servers)."""

    @property
    def base_url(self) -> str:
        server = (self.server or "").rstrip("/")
        return server if "://" in server else f"https://{server}"

    def token_value(self) -> str:
        return self.token.get_secret_value().strip() if self.token else ""


class NotifySettings(_Group):
    """Where notification events go; the URLs often hold a token, so they are secrets."""

    urls: Annotated[tuple[SecretStr, ...], NoDecode] = Field((), validation_alias=NOTIFY_URLS_ENV)

    @field_validator("urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value


class RegistrySettings(_Group):
    """Registry mirrors: discovery asks the mirror, Freight names the original.

    ``public.ecr.aws=127.0.0.1:5000`` lists and resolves ``public.ecr.aws/nginx/nginx``
    at ``127.0.0.1:5000/nginx/nginx`` (see ``freightline.kargo.mirrors``).
    """

    mirrors: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias=REGISTRY_MIRRORS_ENV
    )

    @field_validator("mirrors", mode="before")
    @classmethod
    def _registry_equals_mirror(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        mirrors = {}
        for entry in filter(None, (e.strip() for e in value.split(","))):
            registry, sep, mirror = entry.partition("=")
            if not sep or not registry.strip() or not mirror.strip():
                raise ValueError(f"{entry!r} is not registry=mirror")
            mirrors[registry.strip()] = mirror.strip()
        return mirrors


def _metric_header_values() -> dict[str, SecretStr]:
    # The names are the user's (``{{env.FREIGHTLINE_METRIC_TOKEN}}``), so they are found by prefix.
    return {
        name: SecretStr(value)
        for name, value in os.environ.items()
        if name.startswith(METRIC_HEADER_ENV_PREFIX) and len(name) > len(METRIC_HEADER_ENV_PREFIX)
    }


class MetricSettings(BaseModel):
    """Values a web metric's headers may name as ``{{env.FREIGHTLINE_METRIC_<NAME>}}``."""

    model_config = ConfigDict(frozen=True)

    header_values: Mapping[str, SecretStr] = Field(default_factory=_metric_header_values)

    def plain(self) -> dict[str, str]:
        """The values themselves, for the measurement that sends them (and nothing else)."""
        return {name: value.get_secret_value() for name, value in self.header_values.items()}


class CliSettings(_Group):
    """Defaults of the ``freightline`` command."""

    project: str | None = Field(None, validation_alias=PROJECT_ENV)
    user: str = Field("cli", validation_alias=AliasChoices("USER", "LOGNAME"))
    """Who the CLI acts as (approvals, aborts), unless ``--user`` says."""


class UiSettings(_Group):
    """The web UI (``freightline ui``, or the worker with ``FREIGHTLINE_UI_ADDRESS``): where it
    listens and how it knows who people are (``freightline.app.ui_auth``, docs/ui.md)."""

    address: str | None = Field(None, validation_alias=UI_ADDRESS_ENV)
    """``host:port`` the worker serves the UI on; unset, the worker serves none."""
    auth: Literal["users", "proxy", "oidc"] = Field("users", validation_alias=UI_AUTH_ENV)
    """``users``: people sign in with a password from the users file; ``proxy``: an
    authenticating proxy in front names them in a header; ``oidc``: people sign in at an
    OpenID Connect issuer (authorization code with PKCE, ``freightline.app.ui_oidc``)."""
    users_file: Path | None = Field(None, validation_alias=UI_USERS_FILE_ENV)
    """The users (with password hashes), their groups, and each project's roles."""
    secret: SecretStr | None = Field(None, validation_alias=UI_SECRET_ENV)
    """Signs session cookies and CSRF tokens; unset, a random one per process (sessions end
    when it restarts)."""
    signing_key: SecretStr | None = Field(None, validation_alias=UI_SIGNING_KEY_ENV)
    """An Ed25519 private key (base64 of its 32-byte seed): the UI signs each approval and
    rejection with it, for projects whose ProjectConfig lists its public key in
    ``approvalKeys`` (``freightline ui-keygen`` makes a pair)."""
    proxy_user_header: str = Field("X-Forwarded-User", validation_alias=UI_PROXY_USER_HEADER_ENV)
    proxy_groups_header: str = Field(
        "X-Forwarded-Groups", validation_alias=UI_PROXY_GROUPS_HEADER_ENV
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        ("127.0.0.1", "::1"), validation_alias=UI_TRUSTED_PROXIES_ENV
    )
    """Peer addresses whose identity headers are believed (``proxy`` mode); others are refused."""
    # OIDC (``oidc`` mode); the names follow Kargo's api.oidc settings.
    oidc_issuer_url: str | None = Field(None, validation_alias=UI_OIDC_ISSUER_URL_ENV)
    """The issuer; its discovery document is ``<issuer>/.well-known/openid-configuration``."""
    oidc_client_id: str | None = Field(None, validation_alias=UI_OIDC_CLIENT_ID_ENV)
    oidc_client_secret: SecretStr | None = Field(None, validation_alias=UI_OIDC_CLIENT_SECRET_ENV)
    """Optional, as in Kargo: without it the UI is a public client and PKCE alone binds the
    code to the browser that asked for it."""
    oidc_secret_file: Path | None = Field(None, validation_alias=UI_OIDC_SECRET_FILE_ENV)
    """A file holding the client secret (a mounted Kubernetes Secret), read at start."""
    oidc_additional_scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        ("groups",), validation_alias=UI_OIDC_ADDITIONAL_SCOPES_ENV
    )
    """Scopes asked for after ``openid profile email`` (Kargo's ``additionalScopes``)."""
    oidc_username_claim: str = Field("email", validation_alias=UI_OIDC_USERNAME_CLAIM_ENV)
    """The ID token claim that names the user (Kargo's ``usernameClaim``)."""
    oidc_groups_claim: str = Field("groups", validation_alias=UI_OIDC_GROUPS_CLAIM_ENV)
    """The ID token claim that lists the user's groups (``group:NAME`` grants)."""
    oidc_redirect_url: str | None = Field(None, validation_alias=UI_OIDC_REDIRECT_URL_ENV)
    """The callback URL registered at the issuer; unset, the UI's own ``/oidc/callback`` as
    the browser reached it (set it behind a proxy that rewrites the host)."""

    @field_validator("trusted_proxies", "oidc_additional_scopes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("address", mode="before")
    @classmethod
    def _host_port(cls, value: object) -> object:
        if isinstance(value, str) and value.strip():
            try:
                parse_address(value.strip(), setting="")
            except ConfigError:
                raise ValueError("not HOST:PORT (e.g. 127.0.0.1:8088)") from None
        return value

    def oidc_secret(self) -> str | None:
        """The OIDC client secret, from the variable or the file (ConfigError if unreadable)."""
        if self.oidc_client_secret is not None:
            return self.oidc_client_secret.get_secret_value() or None
        if self.oidc_secret_file is None:
            return None
        try:
            return self.oidc_secret_file.read_text().strip() or None
        except OSError as err:
            raise ConfigError(
                f"{UI_OIDC_SECRET_FILE_ENV}={str(self.oidc_secret_file)!r}: "
                f"cannot read it: {err.strerror}"
            ) from None


class Settings(BaseModel):
    """Everything a Freightline process is configured with, by group."""

    model_config = ConfigDict(frozen=True)

    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    listen: ListenSettings = Field(default_factory=ListenSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    git: GitSettings = Field(default_factory=GitSettings)
    argocd: ArgoCDSettings = Field(default_factory=ArgoCDSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    metrics: MetricSettings = Field(default_factory=MetricSettings)
    cli: CliSettings = Field(default_factory=CliSettings)
    ui: UiSettings = Field(default_factory=UiSettings)

    def replace(self, **groups: Mapping[str, Any]) -> Settings:
        """A copy with fields set by name, per group, the environment not read again.

        ``settings.replace(temporal={"ui_url": server.ui_url})``: what a process
        that starts its own services (``freightline dev``, the demo) tells its
        in-process worker. Raises ConfigError for a bad value.
        """
        updated: dict[str, BaseModel] = {}
        for name, values in groups.items():
            group: BaseModel = getattr(self, name)
            try:
                updated[name] = type(group).model_validate({**dict(group), **values})
            except ValidationError as err:
                raise ConfigError("; ".join(_problems(err))) from None
        return self.model_copy(update=updated)


_GROUPS: Final[dict[str, type[BaseModel]]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type)
}


def load_settings() -> Settings:
    """The process's settings, from its environment; call it once, where the process starts.

    Raises ConfigError: one line naming each bad variable (never a secret's value).
    """
    groups: dict[str, BaseModel] = {}
    problems: list[str] = []
    for name, model in _GROUPS.items():
        try:
            groups[name] = model()
        except ValidationError as err:  # every group is read, so one run names every problem
            problems += _problems(err)
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings.model_validate(groups)


def _problems(err: ValidationError) -> list[str]:
    """``NAME='value': problem`` for each error (a secret's value is never shown)."""
    problems = []
    for error in err.errors():
        name = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not name:
            problems.append(message)
        elif name in _SECRET_VARIABLES or not isinstance(error.get("input"), str | int | None):
            problems.append(f"{name}: {message}")
        else:
            problems.append(f"{name}={error['input']!r}: {message}")
    return problems


def environment_variables() -> dict[str, str]:
    """Every variable the settings read, to the field it sets (``group.field``)."""
    names = {}
    for group, model in _GROUPS.items():
        for field_name, field in model.model_fields.items():
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            for choice in choices:
                if isinstance(choice, str):
                    names[choice] = f"{group}.{field_name}"
    names[f"{METRIC_HEADER_ENV_PREFIX}*"] = "metrics.header_values"
    return names


def _holds_secret(annotation: object) -> bool:
    return annotation is SecretStr or any(_holds_secret(arg) for arg in get_args(annotation))


# Errors about these name the variable but never echo its value.
_SECRET_VARIABLES: Final = frozenset(
    name
    for model in _GROUPS.values()
    for field in model.model_fields.values()
    if _holds_secret(field.annotation)
    for name in (
        field.validation_alias.choices
        if isinstance(field.validation_alias, AliasChoices)
        else [field.validation_alias]
    )
    if isinstance(name, str)
)
