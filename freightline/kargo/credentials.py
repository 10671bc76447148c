"""Credentials live on the worker, never in Temporal.

A Kargo ``Secret`` document is refused by ``freightline apply`` (its values
would be recorded in workflow histories). Give the worker the same document
instead, in one of two ways:

1. **A credentials file**: ``FREIGHTLINE_CREDENTIALS_FILE=/path/creds.yaml``
   holding Kargo's Secret documents, unchanged::

       apiVersion: v1
       kind: Secret
       metadata:
         name: kargo-demo-repo
         namespace: kargo-demo                 # optional: this project only
         labels:
           kargo.akuity.io/cred-type: git      # git | helm | image | generic
       stringData:
         repoURL: https://github.com/example/kargo-demo.git
         # repoURLIsRegex: "true"              # repoURL is then a regular expression
         username: example
         password: ghp_...                     # or, for git over SSH: sshPrivateKey

   (``data`` with base64 values works as well.) A Secret without the label
   (a webhook receiver's, or ``generic``) is found by its name. The file is
   re-read when it changes; in Kubernetes, mount it from a real Secret. A
   step's ``${{ secret('name') }}`` reads a Secret by ``metadata.name`` (and by
   ``metadata.namespace`` = the project when it names one), as Kargo's
   ``secret()`` reads a generic Secret of the project. Only steps that run in
   the worktree activity can call ``secret()``: the value exists in that
   activity only, never in the workflow.
2. **Environment variables** for a single git identity:
   ``FREIGHTLINE_GIT_USERNAME`` and ``FREIGHTLINE_GIT_PASSWORD`` apply to
   every git repository that no file entry matches.

Only activities and the webhook server call these functions; workflows hold
repository URLs and Secret names, never the values. ``docs/credentials.md``
is the user's guide; ``freightline.kargo.credential_check`` says which needs
each Secret serves.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from freightline.errors import CredentialError
from freightline.kargo.freight import RepositoryKind, same_repository
from freightline.settings import CREDENTIALS_FILE_ENV, SSH_KNOWN_HOSTS_ENV, GitSettings

CRED_TYPE_LABEL = "kargo.akuity.io/cred-type"


@dataclass(frozen=True, repr=False)
class GitHubApp:
    """A GitHub App installation: the activity that needs git trades it for a token."""

    app_id: str
    """``githubAppClientID`` or ``githubAppID``: a JWT's issuer may be either."""
    installation_id: int
    private_key: str
    api_url: str
    """``https://api.github.com``, or GitHub Enterprise's ``https://HOST/api/v3``."""

    def __repr__(self) -> str:
        return f"GitHubApp({self.app_id}, installation {self.installation_id}, {self.api_url})"


def github_api_url(repo_url: str) -> str:
    """The REST API of the GitHub that serves ``repo_url`` (github.com or an Enterprise host)."""
    parts = urlsplit(repo_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    if host.lower() in ("github.com", "www.github.com"):
        return "https://api.github.com"
    scheme = "http" if parts.scheme == "http" else "https"
    return f"{scheme}://{host}/api/v3"


@dataclass(frozen=True)
class GitCredentials:
    """How to authenticate to one git repository: a username and password (or token) over
    HTTPS, or an SSH private key (with the ``known_hosts`` lines its server must match)."""

    username: str = ""
    password: str = ""
    ssh_private_key: str | None = None
    known_hosts: str | None = None
    github_app: GitHubApp | None = None

    def __repr__(self) -> str:  # never print the secret, even by accident
        if self.github_app is not None:
            return f"GitCredentials({self.github_app!r})"
        kind = "ssh key" if self.ssh_private_key else "password"
        return f"GitCredentials(username={self.username!r}, {kind}=***)"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values to scrub from anything git prints."""
        app_key = self.github_app.private_key if self.github_app else None
        return tuple(v for v in (self.password, self.ssh_private_key, app_key) if v)


@dataclass(frozen=True, repr=False)
class CredentialEntry:
    """One Secret document of the credentials file."""

    name: str
    namespace: str | None
    cred_type: str | None
    repo_url: str | None
    is_regex: bool
    values: Mapping[str, str]

    @property
    def username(self) -> str:
        return self.values.get("username", "")

    @property
    def password(self) -> str:
        return self.values.get("password", "")

    def matches(self, cred_type: str, repo_url: str) -> bool:
        if cred_type != self.cred_type or self.repo_url is None:
            return False
        if self.is_regex:
            return re.search(self.repo_url, repo_url) is not None
        kind = _KINDS.get(cred_type)
        if kind is None:
            return self.repo_url == repo_url
        return same_repository(kind, self.repo_url, repo_url)

    def in_project(self, project: str) -> bool:
        """A Secret without a namespace serves every project; one with, only that one."""
        return self.namespace is None or self.namespace == project

    def __repr__(self) -> str:
        return f"CredentialEntry({self.name}, {self.cred_type}, {self.repo_url}, keys={sorted(self.values)})"


_KINDS: dict[str, RepositoryKind] = {"git": "git", "image": "image", "helm": "chart"}
"""Kargo's repository credential types, and the normal form each compares repository URLs in."""

CRED_TYPES: Final = ("git", "helm", "image", "generic")


SHARED_RESOURCES_NAMESPACE = "kargo-shared-resources"
"""Kargo's namespace of resources every project may read (``sharedSecret()``): a Secret of the
credentials file with this namespace, or with none, answers ``sharedSecret(name)``."""


class CredentialStore:
    """The worker's credentials: file entries first, then one git identity for any repository.

    Built once by the worker from its settings (``CREDENTIALS_FILE``,
    ``GIT_USERNAME`` / ``GIT_PASSWORD``, see ``freightline.settings``).
    """

    def __init__(
        self,
        path: Path | None,
        git_fallback: GitCredentials | None = None,
        *,
        known_hosts: Path | None = None,
    ) -> None:
        self.path = path
        self.git_fallback = git_fallback
        self.known_hosts = known_hosts
        self._entries: list[CredentialEntry] = []
        self._mtime: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, git: GitSettings) -> CredentialStore:
        """The worker's credentials: the credentials file, then the one git identity, if set."""
        fallback = None
        if git.username and git.password:
            fallback = GitCredentials(git.username, git.password.get_secret_value())
        return cls(git.credentials_file, git_fallback=fallback, known_hosts=git.ssh_known_hosts)

    def git(self, repo_url: str) -> GitCredentials | None:
        """Credentials for a git repository, or None to go anonymous."""
        entry = self.find("git", repo_url)
        if entry is not None and entry.values.get(_APP_KEY):
            return GitCredentials(github_app=_github_app(entry.values, repo_url))
        if entry is not None:
            return GitCredentials(
                entry.username,
                entry.password,
                ssh_private_key=entry.values.get("sshPrivateKey") or None,
                known_hosts=entry.values.get("knownHosts") or self._known_hosts(),
            )
        return self.git_fallback

    def _known_hosts(self) -> str | None:
        if self.known_hosts is None:
            return None
        try:
            return self.known_hosts.read_text()
        except OSError as err:
            raise CredentialError(
                f"{SSH_KNOWN_HOSTS_ENV}={self.known_hosts}: {err.strerror}"
            ) from None

    def basic(self, cred_type: str, repo_url: str) -> tuple[str, str] | None:
        """A username and password for an image or helm repository, or None."""
        entry = self.find(cred_type, repo_url)
        return (entry.username, entry.password) if entry else None

    def secret(self, project: str, name: str) -> Mapping[str, str] | None:
        """The data of the Secret ``name`` for ``project`` (a webhook receiver's, or what a
        step's ``secret()`` reads), or None."""
        for entry in self.entries():
            if entry.name == name and entry.in_project(project):
                return entry.values
        return None

    def step_secret(self, project: str, name: str) -> dict[str, str]:
        """``secret(name)`` in a step's config: the Secret's data, empty when there is none
        (as Kargo's ``secret()``)."""
        return dict(self.secret(project, name) or {})

    def find(self, cred_type: str, repo_url: str) -> CredentialEntry | None:
        """The first Secret of ``cred_type`` whose ``repoURL`` matches ``repo_url``."""
        for entry in self.entries():
            if entry.matches(cred_type, repo_url):
                return entry
        return None

    def entries(self) -> list[CredentialEntry]:
        """Every Secret of the file, re-read when the file changed."""
        if self.path is None:
            return []
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError as err:
                raise CredentialError(
                    f"{CREDENTIALS_FILE_ENV}={self.path}: {err.strerror}"
                ) from None
            if mtime != self._mtime:
                self._entries = _parse(self.path)
                self._mtime = mtime
            return self._entries


def parse_credentials_file(path: Path) -> list[CredentialEntry]:
    """Read Kargo-style Secret documents; errors name the file and document, never a value."""
    return _parse(path)


def _parse(path: Path) -> list[CredentialEntry]:
    try:
        documents = list(YAML(typ="safe").load_all(path.read_text()))
    except (OSError, YAMLError) as err:
        raise CredentialError(f"{path}: cannot read credentials: {type(err).__name__}") from None
    entries = []
    for number, doc in enumerate((d for d in documents if d is not None), start=1):
        entries.append(_entry(doc, f"{path}: document {number}"))
    return entries


def _entry(doc: Any, where: str) -> CredentialEntry:
    if not isinstance(doc, dict) or doc.get("kind") != "Secret":
        raise CredentialError(f"{where}: expected a kind: Secret document")
    metadata = doc.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise CredentialError(f"{where}: metadata.name is missing")
    where = f"{where} (Secret {name})"
    labels = metadata.get("labels") or {}
    cred_type = labels.get(CRED_TYPE_LABEL)
    if cred_type is not None and cred_type not in CRED_TYPES:
        raise CredentialError(
            f"{where}: label {CRED_TYPE_LABEL} must be one of {', '.join(CRED_TYPES)}"
        )
    values = {str(k): str(v) for k, v in (doc.get("stringData") or {}).items()}
    for key, value in (doc.get("data") or {}).items():
        try:
            values.setdefault(str(key), base64.b64decode(str(value), validate=True).decode())
        except (ValueError, UnicodeDecodeError):
            raise CredentialError(f"{where}: data.{key} is not base64 of UTF-8 text") from None
    if cred_type in _KINDS:
        missing = [] if values.get("repoURL") else ["repoURL"]
        if cred_type == "git" and values.get(_APP_KEY):
            if not (values.get("githubAppID") or values.get("githubAppClientID")):
                missing.append("githubAppID (or githubAppClientID)")
            if not values.get("githubAppInstallationID", "").isdigit():
                missing.append("githubAppInstallationID (a number)")
        elif cred_type != "git" and _cloud_identity(values):
            pass  # a login is bought with it (activities.registry_identity)
        elif not values.get("sshPrivateKey") or cred_type != "git":
            missing += [k for k in ("username", "password") if not values.get(k)]
        if missing:
            raise CredentialError(f"{where}: missing {', '.join(missing)}")
    is_regex = values.get("repoURLIsRegex", "").lower() == "true"
    if is_regex:
        try:
            re.compile(values.get("repoURL", ""))
        except re.error as err:
            raise CredentialError(f"{where}: repoURL is not a regular expression: {err}") from None
    namespace = metadata.get("namespace")
    return CredentialEntry(
        name=name,
        namespace=str(namespace) if namespace else None,
        cred_type=cred_type,
        repo_url=values.get("repoURL"),
        is_regex=is_regex,
        values=MappingProxyType(values),
    )


_APP_KEY: Final = "githubAppPrivateKey"


def _github_app(values: Mapping[str, str], repo_url: str) -> GitHubApp:
    key = values[_APP_KEY]
    if "-----BEGIN" not in key:
        # Kargo takes the PEM base64-encoded as well (one line in a Secret's stringData).
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            key = base64.b64decode(key, validate=True).decode()
    return GitHubApp(
        app_id=values.get("githubAppClientID") or values["githubAppID"],
        installation_id=int(values["githubAppInstallationID"]),
        private_key=key,
        api_url=github_api_url(repo_url),
    )


def _cloud_identity(values: Mapping[str, str]) -> bool:
    """Whether a Secret holds Kargo's keys of an ECR access key or a GAR service account."""
    aws = bool(values.get("awsAccessKeyID") and values.get("awsSecretAccessKey"))
    return aws or bool(values.get("gcpServiceAccountKey"))
