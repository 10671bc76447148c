"""What every forge flavour shares: the accounts a token stands for, OpenAPI checking,
and the shape of a flavour (routes over the store, their 404/403 guards, merging through the
API, a webhook payload)."""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.request.exceptions import SecurityValidationError
from ruamel.yaml import YAML
from werkzeug.wrappers import Request, Response

from sandbox.datadog import openapi_problems
from sandbox.forge._store import HeadMismatch, NeedsApproval, NotMergeable

if TYPE_CHECKING:
    from sandbox.forge import ForgeEmulator
    from sandbox.forge._store import PullRequest

REFERENCE = Path(__file__).resolve().parent.parent.parent / "tests" / "reference" / "forges"


@dataclass(frozen=True)
class Account:
    """Who a token is, and whether it may write (open, merge, close)."""

    user: str
    write: bool = True


@dataclass(frozen=True)
class Webhook:
    """A webhook to send: the event's headers (signature added by the emulator) and body."""

    headers: dict[str, str]
    body: dict[str, Any]


Handler = Callable[[Request, Account, dict[str, str]], Response]

Access = Literal["read", "write", "merge"]
"""What a request does to a project: a read-only token may only ``read``."""


class Refused(Exception):
    """A forge's error answer from deep in a handler (a guard, a merge): the route answers it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@functools.cache
def load_spec(name: str, base_path: str) -> OpenAPI:
    """An excerpt from ``tests/reference/forges``, served under ``base_path`` of any host (a
    relative server; read once per process, as reading one takes about a second)."""
    text = (REFERENCE / name).read_text()
    document = json.loads(text) if name.endswith(".json") else YAML(typ="safe").load(text)
    document["servers"] = [{"url": base_path}]
    return OpenAPI.from_dict(document)


def raw_path(request: Request) -> str:
    """The path as sent, percent-escapes kept: GitLab names a project ``group%2Fname``, one
    path segment, which the WSGI ``PATH_INFO`` has already decoded into two."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    return str(raw).split("?", 1)[0] if raw else request.path


class _RawPathRequest(WerkzeugOpenAPIRequest):
    @property
    def path(self) -> str:
        return raw_path(self.request)

    @property
    def path_pattern(self) -> str:
        return raw_path(self.request)


@functools.cache
def _webhook_validator(name: str, event: str) -> Draft202012Validator:
    document = json.loads((REFERENCE / name).read_text())
    # The description is OpenAPI 3.1, whose schemas are JSON Schema 2020-12: the document itself
    # is the root, its components resolving the event's $refs.
    document["$ref"] = f"#/webhooks/{event}/post/requestBody/content/application~1json/schema"
    return Draft202012Validator(document)


def check_webhook(name: str, event: str, payload: Any) -> list[str]:
    """What the webhook description ``name`` finds wrong with an ``event`` payload."""
    errors = _webhook_validator(name, event).iter_errors(payload)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors][:10]


def check_request(spec: OpenAPI, request: Request) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec.validate_request(_RawPathRequest(request))
    except SecurityValidationError:
        return []  # a missing token is the forge's 401, answered by the flavour
    except Exception as err:  # openapi-core's error tree has no one root
        return openapi_problems(err)
    return []


def check_response(spec: OpenAPI, request: Request, response: Response) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec.validate_response(_RawPathRequest(request), WerkzeugOpenAPIResponse(response))
    except ResponseNotFound:
        # The descriptions leave out statuses every operation can answer (401, 429, some
        # 403s); those bodies are the forge's generic error shape, not an operation's.
        return []
    except Exception as err:
        return openapi_problems(err)
    return []


class Flavour:
    """One forge's API over the store: its routes, errors, tokens and webhooks."""

    kind = ""
    api_prefix = ""

    def __init__(self, forge: ForgeEmulator) -> None:
        self.forge = forge
        self.store = forge.store
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, request: Request, path: str, account: Account) -> Response | None:
        for method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and request.method == method:
                try:
                    return handler(request, account, match.groupdict())
                except Refused as refused:
                    return refused.response
        return None

    # --- for the handlers -----------------------------------------------------

    def project_for(self, params: dict[str, str], account: Account, access: Access) -> str:
        """The project a route's parameters name; the forge's 404 if it has none, then its 403
        if ``account`` may not do ``access``."""
        project = self._known_project(params)
        self._allow(account, access)
        return project

    def pull_for(self, params: dict[str, str], account: Account, access: Access) -> PullRequest:
        """The pull request a route's parameters name (``number_param``); as
        :meth:`project_for`, a missing pull request being the forge's 404 too (before the 403)."""
        project = self._known_project(params)
        pull = self.store.get(project, int(params[self.number_param]))
        if pull is None:
            raise Refused(self.error(404, self.missing_pull))
        self._allow(account, access)
        return pull

    def merge(
        self,
        pull: PullRequest,
        account: Account,
        *,
        method: str,
        sha: str | None,
        message: str | None,
    ) -> PullRequest:
        """Merge as the API asked (approvals checked, the webhook sent); what the store
        refuses is the forge's answer in :attr:`merge_refusals`."""
        try:
            return self.forge.api_merge(
                pull.project,
                pull.number,
                user=account.user,
                method=method,
                sha=sha,
                message=message,
            )
        except (HeadMismatch, NeedsApproval, NotMergeable) as err:
            status, words = self.merge_refusals[type(err)]
            raise Refused(self.error(status, words)) from None

    def _known_project(self, params: dict[str, str]) -> str:
        project = self._project(params)
        if project is None:
            raise Refused(self.error(404, self.missing_project))
        return project

    def _allow(self, account: Account, access: Access) -> None:
        if access != "read" and not account.write:
            raise Refused(self.error(403, self.read_only[access]))

    # --- for subclasses -------------------------------------------------------

    number_param = "number"
    """The route parameter that names a pull request (GitLab's ``iid``)."""

    missing_project = ""
    missing_pull = ""
    """The forge's 404 messages for an unknown project and an unknown pull request."""

    read_only: ClassVar[dict[Access, str]] = {}
    """The forge's 403 message for a read-only token, by what the request does."""

    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {}
    """The forge's answer (status, message) to a merge the store refuses, by the refusal:
    the head moved (:class:`HeadMismatch`), approvals lack (:class:`NeedsApproval`), a
    conflict or a pull request no longer open (:class:`NotMergeable`)."""

    def error(self, status: int, message: str) -> Response:
        """The forge's error answer, in its shape."""
        raise NotImplementedError

    def _project(self, params: dict[str, str]) -> str | None:
        """The project a route's parameters name, if the forge has it."""
        raise NotImplementedError

    spec_file: ClassVar[str | None] = None
    """The forge's OpenAPI description (an excerpt in ``tests/reference/forges``) of the API
    it serves under :attr:`api_prefix`, if any."""

    _spec: OpenAPI | None = None

    def load_specs(self) -> None:
        """Read the OpenAPI descriptions (after the emulator knows its URL)."""
        if self.spec_file is not None:
            self._spec = load_spec(self.spec_file, self.api_prefix or "/")

    def spec_for(self, request: Request) -> OpenAPI | None:
        """The description a request and its answer are checked against (None: not checked)."""
        return self._spec if self.in_api(request.path) else None

    def in_api(self, path: str) -> bool:
        """Whether ``path`` is in the API :attr:`spec_file` describes."""
        return path.startswith(self.api_prefix + "/")

    def token(self, request: Request) -> str | None:
        raise NotImplementedError

    def answer(self, request: Request, account: Account | None) -> Response:
        raise NotImplementedError

    def unauthorized(self) -> Response:
        raise NotImplementedError

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        raise NotImplementedError

    def web_url(self, project: str, number: int) -> str:
        raise NotImplementedError

    def repo_path(self, project: str) -> str:
        """The repository's path in its URLs (``owner/name``; Azure's has ``_git`` in it)."""
        return project

    def git_path(self, path: str) -> str:
        """The store's path for a smart-HTTP request's path (the inverse of :meth:`repo_path`)."""
        return path


def bearer(request: Request, *schemes: str) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in schemes and value.strip():
        return value.strip()
    return None


def iso(value: Any) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")
