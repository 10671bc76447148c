"""Azure DevOps Services' Git REST API 7.1 for pull requests, at the root (dev.azure.com's
paths: ``/{org}/{project}/_apis/git/repositories/{repo}/pullrequests``), checked against the
hand-written subset ``tests/reference/forges/azure-devops-pulls.yaml``.

A repository ``org/name`` is Azure's project ``name`` in organization ``org`` with its default
repository ``name``: cloned at ``{url}/org/name/_git/name.git``. As
Azure answers: a PAT comes as HTTP Basic (any user name); an active pull request for the same
branches is 409 TF401179; completing one (``PATCH`` with ``status: completed``) merges at once
here (Azure may take a moment: the client reads it back); a stale ``lastMergeSourceCommit``
is 409; unmet approvals a 400 naming the branch policies; errors are Azure's
``{"message", "typeKey", ...}``.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import Access, Account, Flavour, Webhook, iso
from sandbox.forge._store import (
    AlreadyExists,
    HeadMismatch,
    NeedsApproval,
    NotMergeable,
    PullRequest,
    UnknownBranch,
)

_REPO = r"/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/git/repositories/(?P<repo>[^/]+)"
_GIT_PATH = re.compile(
    r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_git/(?P<repo>[^/]+)\.git/(?P<rest>.*)$"
)
_STRATEGIES = {"noFastForward": "merge", "squash": "squash", "rebase": "rebase"}
"""Azure's merge strategies the emulator's store makes (``rebaseMerge``: 400)."""
_STATUS = {"open": "active", "merged": "completed", "closed": "abandoned"}
_READ_ONLY = "TF401027: You need the Git 'PullRequestContribute' permission to perform this action."


def _error(status: int, message: str, key: str = "InvalidArgumentValueException") -> Response:
    return json_response(
        status,
        {
            "$id": "1",
            "innerException": None,
            "message": message,
            "typeName": f"Microsoft.TeamFoundation.Git.Server.{key}, Microsoft.TeamFoundation.Git.Server",
            "typeKey": key,
            "errorCode": 0,
            "eventId": 3000,
        },
    )


class AzureApi(Flavour):
    kind = "azure"
    api_prefix = ""
    spec_file = "azure-devops-pulls.yaml"
    missing_project = (
        "TF401019: The Git repository with name or identifier does not exist or you do not "
        "have permissions for the operation you are attempting."
    )
    missing_pull = "TF401180: The requested pull request was not found."
    read_only: ClassVar[dict[Access, str]] = {"write": _READ_ONLY, "merge": _READ_ONLY}
    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {
        HeadMismatch: (
            409,
            "TF401192: The pull request's source branch was updated since it was last merged.",
        ),
        NeedsApproval: (
            400,
            "The pull request cannot be completed: the branch policies (required reviewers) "
            "are not satisfied.",
        ),
        NotMergeable: (409, "TF401185: The pull request has merge conflicts."),
    }
    number_param = "id"

    def __init__(self, forge: Any) -> None:
        super().__init__(forge)
        self.route("GET", f"{_REPO}/pullrequests", self._list)
        self.route("POST", f"{_REPO}/pullrequests", self._create)
        self.route("GET", rf"{_REPO}/pullrequests/(?P<id>\d+)", self._get)
        self.route("PATCH", rf"{_REPO}/pullrequests/(?P<id>\d+)", self._update)

    def in_api(self, path: str) -> bool:
        return "/_apis/" in path  # under each organisation and project

    def token(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            return base64.b64decode(value).decode().partition(":")[2] or None
        except (ValueError, UnicodeDecodeError):
            return None

    def error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def unauthorized(self) -> Response:
        return Response("", status=401, headers={"WWW-Authenticate": "Basic realm=dev.azure.com"})

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        return (
            429,
            {"message": "TF400733: The request has been throttled.", "typeKey": "Throttled"},
            {"Retry-After": str(retry_after)},
        )

    def answer(self, request: Request, account: Account | None) -> Response:
        if "/_apis/" not in request.path:
            return _error(404, "Not Found")
        if account is None:
            return self.unauthorized()
        response = self.dispatch(request, request.path, account)
        return response if response is not None else _error(404, "Not Found")

    def web_url(self, project: str, number: int) -> str:
        return f"{self.forge.url}/{self.repo_path(project)}/pullrequest/{number}"

    def repo_path(self, project: str) -> str:
        org, name = project.split("/", 1)
        return f"{org}/{name}/_git/{name}"

    def git_path(self, path: str) -> str:
        match = _GIT_PATH.match(path)
        if match is None or match["project"] != match["repo"]:
            return path
        return f"/{match['org']}/{match['repo']}.git/{match['rest']}"

    def _project(self, params: dict[str, str]) -> str | None:
        if params["project"] != params["repo"]:
            return None
        project = f"{params['org']}/{params['repo']}"
        return project if project in self.store.repos else None

    # --- the shapes -----------------------------------------------------------

    def identity(self, login: str) -> dict[str, Any]:
        return {
            "displayName": login.title(),
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, login)),
            "uniqueName": login,
            "url": f"{self.forge.url}/_apis/Identities/{login}",
        }

    def repository(self, project: str) -> dict[str, Any]:
        org, name = project.split("/", 1)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, project)),
            "name": name,
            "url": f"{self.forge.url}/{org}/{name}/_apis/git/repositories/{name}",
            "webUrl": f"{self.forge.url}/{self.repo_path(project)}",
            "remoteUrl": self.forge.repo_url(project),
            "project": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "name": name},
        }

    def pull(self, pull: PullRequest) -> dict[str, Any]:
        repository = self.repository(pull.project)
        body: dict[str, Any] = {
            "pullRequestId": pull.number,
            "codeReviewId": pull.number,
            "status": _STATUS[pull.state],
            "createdBy": self.identity(pull.author),
            "creationDate": iso(pull.created_at),
            "title": pull.title,
            "description": pull.body,
            "sourceRefName": f"refs/heads/{pull.source}",
            "targetRefName": f"refs/heads/{pull.target}",
            "mergeStatus": (
                ("succeeded" if self.store.mergeable(pull) else "conflicts")
                if pull.state == "open"
                else "succeeded"
            ),
            "isDraft": False,
            "mergeId": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{pull.project}#{pull.number}")),
            "lastMergeSourceCommit": {"commitId": pull.head_sha},
            "lastMergeTargetCommit": {"commitId": pull.base_sha},
            "labels": [{"name": label, "active": True} for label in pull.labels],
            "repository": repository,
            "url": f"{repository['url']}/pullRequests/{pull.number}",
            "supportsIterations": True,
        }
        if pull.merge_commit:
            body["lastMergeCommit"] = {"commitId": pull.merge_commit}
        if pull.state != "open":
            body["closedDate"] = iso(pull.closed_at)
            if pull.closed_by:
                body["closedBy"] = self.identity(pull.closed_by)
        if pull.method:
            strategy = {v: k for k, v in _STRATEGIES.items()}[pull.method]
            body["completionOptions"] = {"mergeStrategy": strategy}
        return body

    # --- the operations -------------------------------------------------------

    def _list(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        status = request.args.get("searchCriteria.status", "active")
        source = request.args.get("searchCriteria.sourceRefName")
        target = request.args.get("searchCriteria.targetRefName")
        pulls = [
            p
            for p in self.store.find(project)
            if (status == "all" or _STATUS[p.state] == status)
            and (source is None or f"refs/heads/{p.source}" == source)
            and (target is None or f"refs/heads/{p.target}" == target)
        ]
        skip = int(request.args.get("$skip", "0"))
        top = int(request.args.get("$top", "101"))
        chosen = [self.pull(p) for p in pulls[skip : skip + top]]
        return json_response(200, {"value": chosen, "count": len(chosen)})

    def _create(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        try:
            pull = self.store.open(
                project,
                source=str(data.get("sourceRefName", "")).removeprefix("refs/heads/"),
                target=str(data.get("targetRefName", "")).removeprefix("refs/heads/"),
                title=str(data.get("title", "")),
                body=str(data.get("description") or ""),
                author=account.user,
                labels=[str(label["name"]) for label in data.get("labels") or []],
            )
        except AlreadyExists:
            return _error(
                409,
                "TF401179: An active pull request for the source and target branch already exists.",
                "GitPullRequestExistsException",
            )
        except UnknownBranch as err:
            return _error(
                400,
                f"TF401398: The pull request cannot be activated because the {err.field} "
                f"branch '{err.branch}' does not exist.",
                "GitPullRequestBranchNotFoundException",
            )
        except NotMergeable as err:
            return _error(400, str(err))
        return json_response(201, self.pull(pull))

    def _get(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        return json_response(200, self.pull(self.pull_for(params, account, "read")))

    def _update(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        data = json.loads(request.get_data() or b"{}")
        if data.get("status") not in ("completed", "abandoned"):
            pull = self.pull_for(params, account, "write")
            return json_response(200, self.pull(pull))
        pull = self.pull_for(params, account, "merge")
        if pull.state != "open":
            return _error(
                409,
                f"TF401181: The pull request cannot be edited due to its state "
                f"({_STATUS[pull.state]}).",
                "InvalidPullRequestStateException",
            )
        if data["status"] == "abandoned":
            self.forge.close(pull.project, pull.number, user=account.user)
            return json_response(200, self.pull(pull))
        strategy = str(
            (data.get("completionOptions") or {}).get("mergeStrategy") or "noFastForward"
        )
        method = _STRATEGIES.get(strategy)
        if method is None:
            return _error(400, f"The merge strategy {strategy} is not allowed on this branch.")
        sha = (data.get("lastMergeSourceCommit") or {}).get("commitId")
        self.merge(pull, account, method=method, sha=sha, message=None)
        return json_response(200, self.pull(pull))

    # --- webhooks -------------------------------------------------------------

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        pull = self.store.get(project, pull_number)
        assert pull is not None
        resource = self.pull(pull)
        resource["_links"] = {"web": {"href": self.web_url(project, pull_number)}}
        event = "git.pullrequest.merged" if action == "merged" else "git.pullrequest.updated"
        who = self.identity(user)["displayName"]
        verb = "completed" if action == "merged" else "abandoned"
        return Webhook(
            headers={"User-Agent": "VSServices/16.255.35115.1"},
            body={
                "subscriptionId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project}/hook")),
                "notificationId": pull_number,
                "id": str(uuid.uuid4()),
                "eventType": event,
                "publisherId": "tfs",
                "message": {"text": f"{who} {verb} pull request {pull_number} ({pull.title})"},
                "resource": resource,
                "resourceVersion": "1.0",
                "createdDate": iso(pull.updated_at),
            },
        )
