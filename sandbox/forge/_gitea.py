"""Gitea's (and Forgejo's) REST API v1 for pull requests at ``/api/v1``."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import Access, Account, Flavour, Webhook, bearer, iso
from sandbox.forge._store import (
    AlreadyExists,
    HeadMismatch,
    NeedsApproval,
    NotMergeable,
    PullRequest,
    UnknownBranch,
)

_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_STYLES = {"merge": "merge", "squash": "squash", "rebase": "rebase", "rebase-merge": "merge"}


def _error(status: int, message: str, url: str = "") -> Response:
    return json_response(status, {"message": message, "url": url})


class GiteaApi(Flavour):
    kind = "gitea"
    api_prefix = "/api/v1"
    spec_file = "gitea-pulls.yaml"
    missing_project = missing_pull = "The target couldn't be found."
    read_only: ClassVar[dict[Access, str]] = {
        "write": "user should have permission to write to the target repository",
        "merge": "user should have permission to merge",
    }
    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {
        HeadMismatch: (409, "head out of date"),
        NeedsApproval: (405, "Does not have enough approvals"),
        NotMergeable: (409, "Merge conflict"),
    }

    def __init__(self, forge: Any) -> None:
        super().__init__(forge)
        self.route("GET", f"{_REPO}/pulls", self._list)
        self.route("POST", f"{_REPO}/pulls", self._create)
        self.route("GET", rf"{_REPO}/pulls/(?P<number>\d+)", self._get)
        self.route("PATCH", rf"{_REPO}/pulls/(?P<number>\d+)", self._update)
        self.route("POST", rf"{_REPO}/pulls/(?P<number>\d+)/merge", self._merge)
        self.route("GET", f"{_REPO}/labels", self._labels)
        self.labels: dict[str, dict[str, int]] = {}

    def token(self, request: Request) -> str | None:
        return bearer(request, "token", "bearer")

    def error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def unauthorized(self) -> Response:
        return _error(401, "user does not exist [uid: 0, name: ]")

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        # Gitea has no API rate limit of its own; the proxy in front of it answers 429.
        return 429, {"message": "Too Many Requests"}, {"Retry-After": str(retry_after)}

    def answer(self, request: Request, account: Account | None) -> Response:
        if not request.path.startswith("/api/v1/"):
            return _error(404, "Not Found")
        if account is None:
            return self.unauthorized()
        response = self.dispatch(request, request.path.removeprefix("/api/v1"), account)
        return response if response is not None else _error(404, "Not Found")

    def web_url(self, project: str, number: int) -> str:
        return f"{self.forge.url}/{project}/pulls/{number}"

    def add_label(self, project: str, name: str) -> int:
        known = self.labels.setdefault(project, {})
        return known.setdefault(name, 100 + len(known))

    def _project(self, params: dict[str, str]) -> str | None:
        project = f"{params['owner']}/{params['repo']}"
        return project if project in self.store.repos else None

    def user(self, login: str) -> dict[str, Any]:
        return {
            "id": sum(map(ord, login)),
            "login": login,
            "full_name": login.title(),
            "email": f"{login}@forge.localhost",
            "avatar_url": f"{self.forge.url}/avatars/{login}",
        }

    def label(self, project: str, name: str) -> dict[str, Any]:
        return {
            "id": self.add_label(project, name),
            "name": name,
            "color": "ededed",
            "description": "",
            "url": f"{self.forge.api_url}/repos/{project}/labels/{name}",
        }

    def pull(self, pull: PullRequest) -> dict[str, Any]:
        repo_id = sum(map(ord, pull.project))
        html = self.web_url(pull.project, pull.number)
        mergeable = self.store.mergeable(pull) if pull.state == "open" else False
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.forge.api_url}/repos/{pull.project}/pulls/{pull.number}",
            "html_url": html,
            "state": "open" if pull.state == "open" else "closed",
            "title": pull.title,
            "body": pull.body,
            "user": self.user(pull.author),
            "labels": [self.label(pull.project, name) for name in pull.labels],
            "head": {
                "label": pull.source,
                "ref": pull.source,
                "sha": pull.head_sha,
                "repo_id": repo_id,
            },
            "base": {
                "label": pull.target,
                "ref": pull.target,
                "sha": pull.base_sha,
                "repo_id": repo_id,
            },
            "merged": pull.state == "merged",
            "mergeable": mergeable,
            "merge_base": pull.base_sha,
            "merge_commit_sha": pull.merge_commit,
            "merged_at": iso(pull.merged_at),
            "merged_by": self.user(pull.merged_by) if pull.merged_by else None,
            "closed_at": iso(pull.closed_at),
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "draft": False,
        }

    # --- the operations -------------------------------------------------------

    def _list(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        pulls = self.store.find(
            project,
            target=request.args.get("base_branch"),
            state=request.args.get("state", "open"),
        )
        page = int(request.args.get("page", "1"))
        limit = int(request.args.get("limit", "30")) or 30
        chosen = pulls[(page - 1) * limit : page * limit]
        return json_response(
            200,
            [self.pull(p) for p in chosen],
            {"X-Total-Count": str(len(pulls))},
        )

    def _create(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        ids = {v: k for k, v in self.labels.get(project, {}).items()}
        try:
            labels = [ids[int(i)] for i in data.get("labels") or []]
        except KeyError:
            return _error(422, "label does not exist")
        try:
            pull = self.store.open(
                project,
                source=str(data.get("head", "")),
                target=str(data.get("base", "")),
                title=str(data.get("title", "")),
                body=str(data.get("body") or ""),
                author=account.user,
                labels=labels,
            )
        except AlreadyExists as err:
            existing = err.existing
            return _error(
                409,
                f"pull request already exists for these targets [id: {existing.id}, issue_id: "
                f"{existing.id}, head_repo_id: 1, base_repo_id: 1, head_branch: "
                f"{existing.source}, base_branch: {existing.target}]",
            )
        except UnknownBranch as err:
            return _error(404, f"{err.field} branch does not exist: {err.branch}")
        except NotMergeable as err:
            return _error(422, str(err))
        return json_response(201, self.pull(pull))

    def _get(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        return json_response(200, self.pull(self.pull_for(params, account, "read")))

    def _update(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        if data.get("state") == "closed" and pull.state == "open":
            self.forge.close(pull.project, pull.number, user=account.user)
        return json_response(201, self.pull(pull))

    def _merge(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "merge")
        if pull.state == "merged":
            return _error(405, "The PR is already merged")
        data = json.loads(request.get_data() or b"{}")
        style = _STYLES.get(str(data.get("Do")))
        if style is None or pull.state != "open":
            return Response(status=405)
        self.merge(
            pull,
            account,
            method=style,
            sha=data.get("head_commit_id") or None,
            message=data.get("MergeTitleField"),
        )
        return Response(status=200)

    def _labels(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        return json_response(
            200, [self.label(project, name) for name in self.labels.get(project, {})]
        )

    # --- webhooks -------------------------------------------------------------

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        pull = self.store.get(project, pull_number)
        assert pull is not None
        owner, name = project.split("/", 1)
        return Webhook(
            headers={"X-Gitea-Event": "pull_request", "X-Forgejo-Event": "pull_request"},
            body={
                "action": "closed",  # merged or not: pull_request.merged tells them apart
                "number": pull.number,
                "pull_request": self.pull(pull),
                "repository": {
                    "id": sum(map(ord, project)),
                    "name": name,
                    "full_name": project,
                    "owner": self.user(owner),
                    "html_url": f"{self.forge.url}/{project}",
                    "clone_url": self.forge.repo_url(project),
                },
                "sender": self.user(user),
            },
        )
