"""Bitbucket Cloud's REST API 2.0 for pull requests at ``/2.0`` (api.bitbucket.org's base),
checked against the OpenAPI subset Kargo v1.11 generates its client from
(``tests/reference/forges/bitbucket-cloud.json``).

As Bitbucket answers: commit hashes in a pull request are abbreviated to 12 hex digits
(``GET .../commit/{hash}`` gives the full one); opening a pull request for a source →
destination pair that already has an open one answers that one, updated; a merge that git
refuses is a 400 with Bitbucket's words, one the approvals block a 400 naming the merge
checks; errors are ``{"type": "error", "error": {"message": ...}}``.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any, ClassVar

from openapi_schema_validator import OAS30Validator
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import (
    REFERENCE,
    Access,
    Account,
    Flavour,
    Webhook,
    bearer,
    iso,
)
from sandbox.forge._store import (
    AlreadyExists,
    GitFailure,
    HeadMismatch,
    NeedsApproval,
    NotMergeable,
    PullRequest,
    UnknownBranch,
    git,
)

_REPO = r"/repositories/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_SHORT = 12
"""Bitbucket's abbreviated hash length in pull requests."""
_STRATEGIES = {
    "merge_commit": "merge",
    "squash": "squash",
    "squash_fast_forward": "squash",
    "rebase_fast_forward": "rebase",
}
"""Bitbucket's merge strategies the emulator's store makes (the other two: 400)."""
_STATES = {"open": "OPEN", "merged": "MERGED", "closed": "DECLINED"}
_CONFLICT = "You can't merge until you resolve all merge conflicts."
_CHECKS = "You can't merge until you have at least 1 approval (merge checks)."
WEBHOOK_EVENTS = {"merged": "pullrequest:fulfilled", "closed": "pullrequest:rejected"}


@functools.cache
def _schema_validator(schema: str) -> OAS30Validator:
    document = json.loads((REFERENCE / "bitbucket-cloud.json").read_text())
    # The document is the root, so the schema's $refs resolve in its components.
    document["$ref"] = f"#/components/schemas/{schema}"
    return OAS30Validator(document)


def check_webhook(payload: dict[str, Any]) -> list[str]:
    """What the description finds wrong with a pull request webhook's objects: Bitbucket
    publishes no webhook schema, but its ``pullrequest``, ``repository`` and ``actor`` are the
    API's ``pullrequest``, ``repository`` and ``account``."""
    problems = []
    for key, schema in (
        ("pullrequest", "pullrequest"),
        ("repository", "repository"),
        ("actor", "account"),
    ):
        for error in _schema_validator(schema).iter_errors(payload.get(key)):
            path = "/".join(map(str, error.absolute_path))
            problems.append(f"{key}/{path}: {error.message}")
    return problems[:10]


def _error(status: int, message: str, detail: str | None = None) -> Response:
    error: dict[str, Any] = {"message": message}
    if detail:
        error["detail"] = detail
    return json_response(status, {"type": "error", "error": error})


class BitbucketApi(Flavour):
    kind = "bitbucket"
    api_prefix = "/2.0"
    spec_file = "bitbucket-cloud.json"
    missing_project = "Repository not found"
    missing_pull = "Pull request not found"
    read_only: ClassVar[dict[Access, str]] = {
        "write": "Your credentials lack one or more required privilege scopes.",
        "merge": "Your credentials lack one or more required privilege scopes.",
    }
    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {
        HeadMismatch: (409, "The source branch moved while merging."),
        NeedsApproval: (400, _CHECKS),
        NotMergeable: (400, _CONFLICT),
    }
    number_param = "id"

    def __init__(self, forge: Any) -> None:
        super().__init__(forge)
        self.route("GET", f"{_REPO}/pullrequests", self._list)
        self.route("POST", f"{_REPO}/pullrequests", self._create)
        self.route("GET", rf"{_REPO}/pullrequests/(?P<id>\d+)", self._get)
        self.route("POST", rf"{_REPO}/pullrequests/(?P<id>\d+)/merge", self._merge)
        self.route("GET", rf"{_REPO}/commit/(?P<commit>[0-9a-f]+)", self._commit)

    def token(self, request: Request) -> str | None:
        return bearer(request, "bearer")

    def error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def unauthorized(self) -> Response:
        return _error(401, "Token is invalid, expired, or not supported for this endpoint.")

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        return (
            429,
            {
                "type": "error",
                "error": {"message": "Rate limit for this resource has been exceeded"},
            },
            {"Retry-After": str(retry_after)},
        )

    def answer(self, request: Request, account: Account | None) -> Response:
        if not request.path.startswith("/2.0/"):
            return _error(404, "Resource not found")
        if account is None:
            return self.unauthorized()
        response = self.dispatch(request, request.path.removeprefix("/2.0"), account)
        return response if response is not None else _error(404, "Resource not found")

    def web_url(self, project: str, number: int) -> str:
        return f"{self.forge.url}/{project}/pull-requests/{number}"

    def _project(self, params: dict[str, str]) -> str | None:
        project = f"{params['owner']}/{params['repo']}"
        return project if project in self.store.repos else None

    # --- the shapes -----------------------------------------------------------

    def account(self, login: str) -> dict[str, Any]:
        return {
            "type": "user",
            "uuid": f"{{{uuid.uuid5(uuid.NAMESPACE_DNS, login)}}}",
            "display_name": login.title(),
            "nickname": login,
            "account_id": f"557058:{sum(map(ord, login))}",
            "links": {"avatar": {"href": f"{self.forge.url}/avatars/{login}"}},
        }

    def repository(self, project: str) -> dict[str, Any]:
        return {
            "type": "repository",
            "uuid": f"{{{uuid.uuid5(uuid.NAMESPACE_URL, project)}}}",
            "full_name": project,
            "name": project.split("/", 1)[1],
            "links": {
                "self": {"href": f"{self.forge.api_url}/repositories/{project}"},
                "html": {"href": f"{self.forge.url}/{project}"},
            },
        }

    def pull(self, pull: PullRequest) -> dict[str, Any]:
        api = f"{self.forge.api_url}/repositories/{pull.project}/pullrequests/{pull.number}"
        body: dict[str, Any] = {
            "type": "pullrequest",
            "id": pull.number,
            "title": pull.title,
            "description": pull.body,
            "summary": {"raw": pull.body, "markup": "markdown", "html": f"<p>{pull.body}</p>"},
            "state": _STATES[pull.state],
            "author": self.account(pull.author),
            "source": {
                "branch": {"name": pull.source},
                "commit": {"hash": pull.head_sha[:_SHORT]},
                "repository": self.repository(pull.project),
            },
            "destination": {
                "branch": {"name": pull.target},
                "commit": {"hash": pull.base_sha[:_SHORT]},
                "repository": self.repository(pull.project),
            },
            "comment_count": 0,
            "task_count": 0,
            "close_source_branch": False,
            "draft": False,
            "reason": "",
            "created_on": iso(pull.created_at),
            "updated_on": iso(pull.updated_at),
            "links": {
                "self": {"href": api},
                "html": {"href": self.web_url(pull.project, pull.number)},
                "merge": {"href": f"{api}/merge"},
                "decline": {"href": f"{api}/decline"},
            },
        }
        # Bitbucket sends null for these while unset; the description does not allow null.
        if pull.merge_commit:
            body["merge_commit"] = {"hash": pull.merge_commit[:_SHORT]}
        if pull.closed_by and pull.state != "open":
            body["closed_by"] = self.account(pull.closed_by)
        return body

    # --- the operations -------------------------------------------------------

    def _list(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        states = request.args.getlist("state") or ["OPEN"]
        pulls = [p for p in self.store.find(project) if _STATES[p.state] in states]
        page = int(request.args.get("page", "1"))
        size = min(int(request.args.get("pagelen", "10")), 50)
        chosen = pulls[(page - 1) * size : page * size]
        body: dict[str, Any] = {
            "size": len(pulls),
            "page": page,
            "pagelen": size,
            "values": [self.pull(p) for p in chosen],
        }
        if page * size < len(pulls):
            query = "&".join(f"state={s}" for s in states)
            body["next"] = (
                f"{self.forge.api_url}/repositories/{project}/pullrequests"
                f"?{query}&pagelen={size}&page={page + 1}"
            )
        return json_response(200, body)

    def _create(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        source = str((data.get("source") or {}).get("branch", {}).get("name", ""))
        target = str(((data.get("destination") or {}).get("branch") or {}).get("name") or "main")
        try:
            pull = self.store.open(
                project,
                source=source,
                target=target,
                title=str(data.get("title", "")),
                body=str(data.get("description") or ""),
                author=account.user,
            )
        except AlreadyExists as err:
            # Bitbucket updates the open pull request for the pair instead of refusing.
            pull = err.existing
            pull.title = str(data.get("title") or pull.title)
            pull.body = str(data.get("description") or pull.body)
        except UnknownBranch as err:
            return _error(400, f"{err.branch}: branch not found", "source or destination")
        except NotMergeable as err:
            return _error(400, "There are no changes to be pulled", str(err))
        return json_response(201, self.pull(pull), {"Location": self._self(pull)})

    def _self(self, pull: PullRequest) -> str:
        return f"{self.forge.api_url}/repositories/{pull.project}/pullrequests/{pull.number}"

    def _get(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        return json_response(200, self.pull(self.pull_for(params, account, "read")))

    def _merge(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "merge")
        if pull.state != "open":
            return _error(400, f"You can't merge a pull request that is {pull.state}.")
        data = json.loads(request.get_data() or b"{}")
        strategy = str(data.get("merge_strategy") or "merge_commit")
        method = _STRATEGIES.get(strategy)
        if method is None:
            return _error(400, f"merge strategy {strategy} is not enabled for this branch")
        self.merge(pull, account, method=method, sha=None, message=data.get("message"))
        return json_response(200, self.pull(pull))

    def _commit(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        try:
            full = git(
                self.store.repos[project], "rev-parse", "--verify", f"{params['commit']}^{{commit}}"
            )
        except GitFailure:
            return _error(404, f"Commit not found: {params['commit']}")
        return json_response(
            200,
            {
                "type": "commit",
                "hash": full,
                "message": git(self.store.repos[project], "log", "-1", "--format=%B", full),
                "repository": self.repository(project),
                "links": {"html": {"href": f"{self.forge.url}/{project}/commits/{full}"}},
            },
        )

    # --- webhooks -------------------------------------------------------------

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        pull = self.store.get(project, pull_number)
        assert pull is not None
        return Webhook(
            headers={
                "X-Event-Key": WEBHOOK_EVENTS[action],
                "X-Hook-UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project}/hook")),
                "X-Request-UUID": str(uuid.uuid4()),
                "X-Attempt-Number": "1",
                "User-Agent": "Bitbucket-Webhooks/2.0",
            },
            body={
                "actor": self.account(user),
                "pullrequest": self.pull(pull),
                "repository": self.repository(project),
            },
        )
