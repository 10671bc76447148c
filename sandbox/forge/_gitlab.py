"""GitLab's REST API v4 for merge requests at ``/api/v4``: the project is its ID or its
URL-encoded path (``acme%2Fgitops``), a merge request its ``iid``."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import (
    Access,
    Account,
    Flavour,
    Webhook,
    bearer,
    iso,
    raw_path,
)
from sandbox.forge._store import (
    AlreadyExists,
    HeadMismatch,
    NeedsApproval,
    NotMergeable,
    PullRequest,
    UnknownBranch,
)

_MR = r"/projects/(?P<project>[^/]+)/merge_requests"
_STATES = {"open": "opened", "closed": "closed", "merged": "merged"}


def _error(status: int, message: Any) -> Response:
    return json_response(status, {"message": message})


class GitLabApi(Flavour):
    kind = "gitlab"
    api_prefix = "/api/v4"
    spec_file = "gitlab-merge-requests.yaml"
    number_param = "iid"
    missing_project = "404 Project Not Found"
    missing_pull = "404 Not found"
    read_only: ClassVar[dict[Access, str]] = {"write": "403 Forbidden", "merge": "403 Forbidden"}
    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {
        HeadMismatch: (409, "SHA does not match HEAD of source branch"),
        NeedsApproval: (405, "405 Method Not Allowed"),
        # A conflict: 405 "Branch cannot be merged" (a closed or merged one: 405 "Method Not
        # Allowed", in _merge), as GitLab answers and go-gitlab, Kargo's client, documents.
        NotMergeable: (405, "Branch cannot be merged"),
    }

    def __init__(self, forge: Any) -> None:
        super().__init__(forge)
        self.route("GET", _MR, self._list)
        self.route("POST", _MR, self._create)
        self.route("GET", rf"{_MR}/(?P<iid>\d+)", self._get)
        self.route("PUT", rf"{_MR}/(?P<iid>\d+)", self._update)
        self.route("PUT", rf"{_MR}/(?P<iid>\d+)/merge", self._merge)

    def token(self, request: Request) -> str | None:
        return request.headers.get("PRIVATE-TOKEN") or bearer(request, "bearer")

    def error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def unauthorized(self) -> Response:
        return _error(401, "401 Unauthorized")

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        return 429, {"message": "Retry later"}, {"Retry-After": str(retry_after)}

    def answer(self, request: Request, account: Account | None) -> Response:
        path = raw_path(request)
        if not path.startswith("/api/v4/"):
            return _error(404, "404 Not Found")
        if account is None:
            return self.unauthorized()
        response = self.dispatch(request, path.removeprefix("/api/v4"), account)
        return response if response is not None else _error(404, "404 Not Found")

    def web_url(self, project: str, number: int) -> str:
        return f"{self.forge.url}/{project}/-/merge_requests/{number}"

    def _project(self, params: dict[str, str]) -> str | None:
        project = unquote(params["project"])
        return project if project in self.store.repos else None

    def user(self, name: str | None) -> dict[str, Any] | None:
        if name is None:
            return None
        return {
            "id": sum(map(ord, name)),
            "username": name,
            "name": name.title(),
            "state": "active",
            "avatar_url": None,
            "web_url": f"{self.forge.url}/{name}",
        }

    def merge_request(self, pull: PullRequest) -> dict[str, Any]:
        mergeable = self.store.mergeable(pull) if pull.state == "open" else False
        merged = pull.state == "merged"
        squashed = merged and pull.method == "squash"
        return {
            "id": pull.id,
            "iid": pull.number,
            "project_id": sum(map(ord, pull.project)),
            "title": pull.title,
            "description": pull.body,
            "state": _STATES[pull.state],
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "merged_by": self.user(pull.merged_by),
            "merge_user": self.user(pull.merged_by),
            "merged_at": iso(pull.merged_at),
            "closed_by": self.user(pull.closed_by) if pull.state == "closed" else None,
            "closed_at": iso(pull.closed_at) if pull.state == "closed" else None,
            "target_branch": pull.target,
            "source_branch": pull.source,
            "author": self.user(pull.author),
            "labels": list(pull.labels),
            "draft": False,
            "work_in_progress": False,
            "sha": pull.head_sha,
            # GitLab squashes into one commit on the source, then merges it with a merge commit
            # unless the project fast-forwards; the emulator's squash is that one commit.
            "merge_commit_sha": None if squashed else pull.merge_commit,
            "squash_commit_sha": pull.merge_commit if squashed else None,
            "squash": squashed,
            "has_conflicts": pull.state == "open" and not mergeable,
            "detailed_merge_status": (
                "not_open"
                if pull.state != "open"
                else "conflict"
                if not mergeable
                else "mergeable"
                if self.store.approved(pull)
                else "not_approved"
            ),
            "merge_status": "can_be_merged" if mergeable else "cannot_be_merged",
            "web_url": self.web_url(pull.project, pull.number),
        }

    # --- the operations -------------------------------------------------------

    def _list(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        state = request.args.get("state", "all")
        state = {"opened": "open", "locked": "open"}.get(state, state)
        pulls = self.store.find(
            project,
            source=request.args.get("source_branch"),
            target=request.args.get("target_branch"),
            state=state,
        )
        if state == "closed":
            pulls = [p for p in pulls if p.state == "closed"]
        return json_response(200, [self.merge_request(p) for p in pulls])

    def _create(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        labels = [name for name in str(data.get("labels") or "").split(",") if name]
        try:
            pull = self.store.open(
                project,
                source=str(data["source_branch"]),
                target=str(data["target_branch"]),
                title=str(data["title"]),
                body=str(data.get("description") or ""),
                author=account.user,
                labels=labels,
            )
        except AlreadyExists as err:
            return _error(
                409,
                [
                    "Another open merge request already exists for this source branch: "
                    f"!{err.existing.number}"
                ],
            )
        except UnknownBranch as err:
            field = "source_branch" if err.field == "head" else "target_branch"
            return _error(422, {field: ["is invalid"]})
        except NotMergeable:
            return _error(422, ["Source branch has no new commits"])
        return json_response(201, self.merge_request(pull))

    def _get(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        return json_response(200, self.merge_request(self.pull_for(params, account, "read")))

    def _update(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        if data.get("state_event") == "close" and pull.state == "open":
            self.forge.close(pull.project, pull.number, user=account.user)
        return json_response(200, self.merge_request(pull))

    def _merge(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "merge")
        if pull.state != "open":
            return _error(405, "405 Method Not Allowed")
        data = json.loads(request.get_data() or b"null") or {}
        method = "squash" if data.get("squash") else "merge"
        message = data.get(
            "squash_commit_message" if method == "squash" else "merge_commit_message"
        )
        merged = self.merge(pull, account, method=method, sha=data.get("sha"), message=message)
        return json_response(200, self.merge_request(merged))

    # --- webhooks -------------------------------------------------------------

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        pull = self.store.get(project, pull_number)
        assert pull is not None
        attributes = self.merge_request(pull)
        attributes.update(
            action="merge" if action == "merged" else "close",
            url=attributes["web_url"],
            last_commit={"id": pull.head_sha},
        )
        return Webhook(
            headers={"X-Gitlab-Event": "Merge Request Hook"},
            body={
                "object_kind": "merge_request",
                "event_type": "merge_request",
                "user": self.user(user),
                "project": {
                    "path_with_namespace": project,
                    "web_url": f"{self.forge.url}/{project}",
                    "git_http_url": self.forge.repo_url(project),
                    "default_branch": "main",
                },
                "object_attributes": attributes,
            },
        )
