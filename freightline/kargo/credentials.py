"""Credentials live on the worker, never in Temporal.

A Kargo ``Secret`` document is refused by ``freightline apply`` (its values
would be recorded in workflow histories). Give the worker the same document
instead, in one of two ways:

1. **A credentials file**: ``FREIGHTLINE_CREDENTIALS_FILE=/path/creds.yaml``
   holding Kargo-style Secret documents, unchanged::

       apiVersion: v1
       kind: Secret
       metadata:
         name: kargo-demo-repo
         labels:
           kargo.akuity.io/cred-type: git      # git | image | helm | generic
       stringData:
         repoURL: https://github.com/example/kargo-demo.git
         # repoURLIsRegex: "true"              # repoURL is then a regular expression
         username: example
         password: ghp_...

   (``data`` with base64 values works as well.) The file is re-read when it
   changes; in Kubernetes, mount it from a real Secret. A document labelled
   ``kargo.akuity.io/cred-type: generic`` holds any keys: it is what a step's
   ``${{ secret('name') }}`` reads (by ``metadata.name``, and by
   ``metadata.namespace`` = the project when it names one), as Kargo's
   ``secret()`` reads a generic Secret of the project. Only steps that run in
   the worktree activity can call ``secret()``: the value exists in that
   activity only, never in the workflow.
2. **Environment variables** for a single git identity:
   ``FREIGHTLINE_GIT_USERNAME`` and ``FREIGHTLINE_GIT_PASSWORD`` apply to
   every git repository that no file entry matches.

Only activities call these functions; workflows hold repository URLs, never
the values.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from freightline.errors import CredentialError
from freightline.kargo.freight import RepositoryKind, same_repository
from freightline.settings import CREDENTIALS_FILE_ENV

CRED_TYPE_LABEL = "kargo.akuity.io/cred-type"


@dataclass(frozen=True)
class GitCredentials:
    """A username and password (or token) for one git repository."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the secret, even by accident
        return f"GitCredentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class CredentialEntry:
    cred_type: str
    repo_url: str
    is_regex: bool
    username: str
    password: str

    def matches(self, cred_type: str, repo_url: str) -> bool:
        if cred_type != self.cred_type:
            return False
        if self.is_regex:
            return re.search(self.repo_url, repo_url) is not None
        kind = _KINDS.get(cred_type)
        if kind is None:
            return self.repo_url == repo_url
        return same_repository(kind, self.repo_url, repo_url)

    def __repr__(self) -> str:
        return f"CredentialEntry({self.cred_type}, {self.repo_url}, {self.username}, ***)"


_KINDS: dict[str, RepositoryKind] = {"git": "git", "image": "image", "helm": "chart"}
"""Kargo's credential types, and the normal form each compares repository URLs in."""


@dataclass(frozen=True)
class GenericSecret:
    """A ``generic`` Secret document: any keys, for ``secret()`` in step configs."""

    name: str
    namespace: str | None
    data: dict[str, str]

    def __repr__(self) -> str:
        return f"GenericSecret({self.name}, {self.namespace}, keys={sorted(self.data)})"


class CredentialStore:
    """The worker's credentials: file entries first, then one git identity for any repository.

    Built once by the worker from its settings (``CREDENTIALS_FILE``,
    ``GIT_USERNAME`` / ``GIT_PASSWORD``, see ``freightline.settings``).
    """

    def __init__(self, path: Path | None, git_fallback: GitCredentials | None = None) -> None:
        self.path = path
        self.git_fallback = git_fallback
        self._entries: list[CredentialEntry] = []
        self._secrets: list[GenericSecret] = []
        self._mtime: float | None = None
        self._lock = threading.Lock()

    def git(self, repo_url: str) -> GitCredentials | None:
        """Credentials for a git repository, or None to go anonymous."""
        entry = self._find("git", repo_url)
        if entry is not None:
            return GitCredentials(entry.username, entry.password)
        return self.git_fallback

    def basic(self, cred_type: str, repo_url: str) -> tuple[str, str] | None:
        """A username and password for an image or helm repository, or None."""
        entry = self._find(cred_type, repo_url)
        return (entry.username, entry.password) if entry else None

    def secret(self, project: str, name: str) -> dict[str, str]:
        """The data of the generic Secret ``name`` (of ``project`` when it names a namespace);
        empty when there is none, as Kargo's ``secret()``."""
        self._load()
        for secret in self._secrets:
            if secret.name == name and secret.namespace in (None, project):
                return dict(secret.data)
        return {}

    def _find(self, cred_type: str, repo_url: str) -> CredentialEntry | None:
        for entry in self._load():
            if entry.matches(cred_type, repo_url):
                return entry
        return None

    def _load(self) -> list[CredentialEntry]:
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
                self._entries, self._secrets = _parse(self.path)
                self._mtime = mtime
            return self._entries


def parse_credentials_file(path: Path) -> list[CredentialEntry]:
    """Read Kargo-style Secret documents; errors name the file and document, never a value."""
    return _parse(path)[0]


def _parse(path: Path) -> tuple[list[CredentialEntry], list[GenericSecret]]:
    try:
        documents = list(YAML(typ="safe").load_all(path.read_text()))
    except (OSError, YAMLError) as err:
        raise CredentialError(f"{path}: cannot read credentials: {type(err).__name__}") from None
    entries = []
    secrets: list[GenericSecret] = []
    for number, doc in enumerate((d for d in documents if d is not None), start=1):
        where = f"{path}: document {number}"
        if not isinstance(doc, dict) or doc.get("kind") != "Secret":
            raise CredentialError(f"{where}: expected a kind: Secret document")
        metadata = doc.get("metadata") or {}
        labels = metadata.get("labels") or {}
        cred_type = labels.get(CRED_TYPE_LABEL)
        if cred_type not in ("git", "image", "helm", "generic"):
            raise CredentialError(
                f"{where}: label {CRED_TYPE_LABEL} must be git, image, helm or generic"
            )
        values = {k: str(v) for k, v in (doc.get("stringData") or {}).items()}
        for key, value in (doc.get("data") or {}).items():
            values.setdefault(key, base64.b64decode(str(value)).decode())
        if cred_type == "generic":
            if not metadata.get("name"):
                raise CredentialError(f"{where}: a generic Secret needs metadata.name")
            namespace = metadata.get("namespace")
            secrets.append(
                GenericSecret(str(metadata["name"]), str(namespace) if namespace else None, values)
            )
            continue
        missing = [k for k in ("repoURL", "username", "password") if not values.get(k)]
        if missing:
            raise CredentialError(f"{where}: missing {', '.join(missing)}")
        entries.append(
            CredentialEntry(
                cred_type=cred_type,
                repo_url=values["repoURL"],
                is_regex=values.get("repoURLIsRegex", "").lower() == "true",
                username=values["username"],
                password=values["password"],
            )
        )
    return entries, secrets
