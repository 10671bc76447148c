"""GitHub's REST API for pull requests and its git database (:mod:`sandbox.forge._github_git`),
at ``/`` (api.github.com's paths) and ``/api/v3`` (GitHub Enterprise Server's base), checked
against GitHub's OpenAPI descriptions."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from openapi_core import OpenAPI
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import Access, Account, Flavour, Webhook, bearer, iso, load_spec
from sandbox.forge._github_git import GitData
from sandbox.forge._store import (
    AlreadyExists,
    HeadMismatch,
    NeedsApproval,
    NotMergeable,
    PullRequest,
    UnknownBranch,
)

_DOCS = "https://docs.github.com/rest"
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_READ_ONLY = "Resource not accessible by personal access token"
SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


@dataclass(frozen=True)
class App:
    """A GitHub App installed on the forge: its JWTs are checked with ``public_key``."""

    app_id: str
    installation_id: int
    public_key: rsa.RSAPublicKey
    user: str


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _error(status: int, message: str, **extra: Any) -> Response:
    return json_response(
        status, {"message": message, "documentation_url": _DOCS, "status": str(status), **extra}
    )


class GitHubApi(Flavour):
    kind = "github"
    api_prefix = "/api/v3"
    missing_project = missing_pull = "Not Found"
    read_only: ClassVar[dict[Access, str]] = {"write": _READ_ONLY, "merge": _READ_ONLY}
    merge_refusals: ClassVar[dict[type[Exception], tuple[int, str]]] = {
        HeadMismatch: (409, "Head branch was modified. Review and try the merge again."),
        NeedsApproval: (
            405,
            "At least 1 approving review is required by reviewers with write access.",
        ),
        NotMergeable: (405, "Pull Request is not mergeable"),
    }

    def __init__(self, forge: Any) -> None:
        super().__init__(forge)
        self.route("GET", f"{_REPO}/pulls", self._list)
        self.route("POST", f"{_REPO}/pulls", self._create)
        self.route("GET", rf"{_REPO}/pulls/(?P<number>\d+)", self._get)
        self.route("PATCH", rf"{_REPO}/pulls/(?P<number>\d+)", self._update)
        self.route("PUT", rf"{_REPO}/pulls/(?P<number>\d+)/merge", self._merge)
        self.route("GET", rf"{_REPO}/issues/(?P<number>\d+)", self._issue)
        self.route("POST", rf"{_REPO}/issues/(?P<number>\d+)/labels", self._labels)
        self.git_data = GitData(self)
        self.apps: dict[int, App] = {}
        self.minted: list[str] = []
        self._cloud: OpenAPI | None = None
        self._enterprise: OpenAPI | None = None

    # --- plumbing -------------------------------------------------------------

    def load_specs(self) -> None:
        self._cloud = load_spec("github.json", "/")
        self._enterprise = load_spec("github-enterprise-3.19.json", "/api/v3")

    def spec_for(self, request: Request) -> OpenAPI | None:
        return self._enterprise if request.path.startswith("/api/v3/") else self._cloud

    def token(self, request: Request) -> str | None:
        return bearer(request, "token", "bearer")

    def error(self, status: int, message: str) -> Response:
        return _error(status, message)

    def unauthorized(self) -> Response:
        return _error(401, "Bad credentials")

    def rate_limited(self, retry_after: int) -> tuple[int, Any, dict[str, str]]:
        # GitHub answers a secondary rate limit with 403 (sometimes 429) and Retry-After.
        return (
            403,
            {
                "message": SECONDARY_RATE_LIMIT,
                "documentation_url": "https://docs.github.com/rest/using-the-rest-api/"
                "rate-limits-for-the-rest-api#about-secondary-rate-limits",
            },
            {"Retry-After": str(retry_after)},
        )

    def answer(self, request: Request, account: Account | None) -> Response:
        path = request.path.removeprefix("/api/v3")
        if path.startswith("/app/installations/") and path.endswith("/access_tokens"):
            return self._installation_token(request, path.split("/")[3])
        if account is None:
            return self.unauthorized()
        response = self.dispatch(request, path, account)
        return response if response is not None else _error(404, "Not Found")

    def _project(self, params: dict[str, str]) -> str | None:
        project = f"{params['owner']}/{params['repo']}"
        return project if project in self.store.repos else None

    def _api(self) -> str:
        return self.forge.api_url

    def web_url(self, project: str, number: int) -> str:
        return f"{self.forge.url}/{project}/pull/{number}"

    # --- the shapes -----------------------------------------------------------

    def user(self, login: str) -> dict[str, Any]:
        api, web = self._api(), self.forge.url
        return {
            "login": login,
            "id": sum(map(ord, login)),
            "node_id": f"U_{login}",
            "avatar_url": f"{web}/avatars/{login}",
            "gravatar_id": "",
            "url": f"{api}/users/{login}",
            "html_url": f"{web}/{login}",
            "followers_url": f"{api}/users/{login}/followers",
            "following_url": f"{api}/users/{login}/following{{/other_user}}",
            "gists_url": f"{api}/users/{login}/gists{{/gist_id}}",
            "starred_url": f"{api}/users/{login}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/users/{login}/subscriptions",
            "organizations_url": f"{api}/users/{login}/orgs",
            "repos_url": f"{api}/users/{login}/repos",
            "events_url": f"{api}/users/{login}/events{{/privacy}}",
            "received_events_url": f"{api}/users/{login}/received_events",
            "type": "User",
            "site_admin": False,
        }

    def repository(self, project: str) -> dict[str, Any]:
        api, web = f"{self._api()}/repos/{project}", f"{self.forge.url}/{project}"
        owner, name = project.split("/", 1)
        templated = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        return {
            "id": sum(map(ord, project)),
            "node_id": f"R_{project}",
            "name": name,
            "full_name": project,
            "owner": self.user(owner),
            "private": True,
            "html_url": web,
            "description": None,
            "fork": False,
            "url": api,
            **{key: api + suffix for key, suffix in templated.items()},
            "clone_url": f"{web}.git",
            "git_url": f"git://{self.forge.url.split('://', 1)[1]}/{project}.git",
            "ssh_url": f"git@127.0.0.1:{project}.git",
            "svn_url": web,
            "mirror_url": None,
            "homepage": None,
            "language": None,
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": "main",
            "open_issues": 0,
            "open_issues_count": 0,
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": False,
            "archived": False,
            "disabled": False,
            "license": None,
            "pushed_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }

    def label(self, project: str, name: str) -> dict[str, Any]:
        return {
            "id": sum(map(ord, name)),
            "node_id": f"L_{name}",
            "url": f"{self._api()}/repos/{project}/labels/{name}",
            "name": name,
            # A pull request's inline labels have a non-nullable description.
            "description": "",
            "color": "ededed",
            "default": False,
        }

    def pull(self, pull: PullRequest, *, full: bool = True) -> dict[str, Any]:
        api = f"{self._api()}/repos/{pull.project}"
        owner = pull.project.split("/", 1)[0]
        html = self.web_url(pull.project, pull.number)
        state = "open" if pull.state == "open" else "closed"

        def ref(branch: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{owner}:{branch}",
                "ref": branch,
                "sha": sha,
                "user": self.user(owner),
                "repo": self.repository(pull.project),
            }

        body: dict[str, Any] = {
            "url": f"{api}/pulls/{pull.number}",
            "id": pull.id,
            "node_id": f"PR_{pull.id}",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pull.number}",
            "commits_url": f"{api}/pulls/{pull.number}/commits",
            "review_comments_url": f"{api}/pulls/{pull.number}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{pull.number}/comments",
            "statuses_url": f"{api}/statuses/{pull.head_sha}",
            "number": pull.number,
            "state": state,
            "locked": False,
            "title": pull.title,
            "user": self.user(pull.author),
            "body": pull.body or None,
            "labels": [self.label(pull.project, name) for name in pull.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": iso(pull.created_at),
            "updated_at": iso(pull.updated_at),
            "closed_at": iso(pull.closed_at),
            "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": ref(pull.source, pull.head_sha),
            "base": ref(pull.target, pull.base_sha),
            "_links": {
                "self": {"href": f"{api}/pulls/{pull.number}"},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{pull.number}"},
                "comments": {"href": f"{api}/issues/{pull.number}/comments"},
                "review_comments": {"href": f"{api}/pulls/{pull.number}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{api}/pulls/{pull.number}/commits"},
                "statuses": {"href": f"{api}/statuses/{pull.head_sha}"},
            },
            "author_association": "MEMBER",
            "auto_merge": None,
            "draft": False,
        }
        if full:
            mergeable = self.store.mergeable(pull) if pull.state == "open" else None
            body.update(
                merged=pull.state == "merged",
                mergeable=mergeable,
                rebaseable=mergeable,
                mergeable_state=(
                    "unknown"
                    if mergeable is None
                    else "dirty"
                    if not mergeable
                    else "clean"
                    if self.store.approved(pull)
                    else "blocked"
                ),
                merged_by=self.user(pull.merged_by) if pull.merged_by else None,
                comments=0,
                review_comments=0,
                maintainer_can_modify=False,
                commits=1,
                additions=0,
                deletions=0,
                changed_files=0,
            )
        return body

    # --- the operations -------------------------------------------------------

    def _list(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "read")
        source = None
        if head := request.args.get("head"):
            # "user:ref-name"; GitHub ignores a head filter without the owner part.
            owner, _, branch = head.partition(":")
            source = branch if branch and owner == params["owner"] else None
            if not branch:
                source = None
        pulls = self.store.find(
            project,
            source=source,
            target=request.args.get("base"),
            state=request.args.get("state", "open"),
        )
        return json_response(200, [self.pull(p, full=False) for p in pulls])

    def _create(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project = self.project_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        head = str(data["head"])
        source = head.split(":", 1)[1] if ":" in head else head
        try:
            pull = self.store.open(
                project,
                source=source,
                target=str(data["base"]),
                title=str(data.get("title") or ""),
                body=str(data.get("body") or ""),
                author=account.user,
            )
        except AlreadyExists:
            return _validation(
                message=f"A pull request already exists for {params['owner']}:{source}."
            )
        except UnknownBranch as err:
            return _validation(field=err.field, code="invalid")
        except NotMergeable as err:
            return _validation(message=str(err))
        return json_response(201, self.pull(pull))

    def _get(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        return json_response(200, self.pull(self.pull_for(params, account, "read")))

    def _update(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        if data.get("state") == "closed" and pull.state == "open":
            self.forge.close(pull.project, pull.number, user=account.user)
        if "title" in data:
            pull.title = str(data["title"])
        if "body" in data:
            pull.body = str(data["body"] or "")
        return json_response(200, self.pull(pull))

    def _merge(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "merge")
        data = json.loads(request.get_data() or b"null") or {}
        method = data.get("merge_method") or "merge"
        if method not in self.forge.merge_methods:
            return _error(405, f"{method.capitalize()} merges are not allowed on this repository.")
        message = data.get("commit_title")
        if message and data.get("commit_message"):
            message = f"{message}\n\n{data['commit_message']}"
        merged = self.merge(pull, account, method=method, sha=data.get("sha"), message=message)
        return json_response(
            200,
            {
                "sha": merged.merge_commit,
                "merged": True,
                "message": "Pull Request successfully merged",
            },
        )

    def _issue(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "read")
        project = pull.project
        api = f"{self._api()}/repos/{project}/issues/{pull.number}"
        return json_response(
            200,
            {
                "id": pull.id,
                "node_id": f"I_{pull.id}",
                "url": api,
                "repository_url": f"{self._api()}/repos/{project}",
                "labels_url": f"{api}/labels{{/name}}",
                "comments_url": f"{api}/comments",
                "events_url": f"{api}/events",
                "html_url": self.web_url(project, pull.number),
                "number": pull.number,
                "state": "open" if pull.state == "open" else "closed",
                "title": pull.title,
                "body": pull.body or None,
                "user": self.user(pull.author),
                "labels": [self.label(project, name) for name in pull.labels],
                "assignee": None,
                "assignees": [],
                "milestone": None,
                "locked": False,
                "comments": 0,
                "pull_request": {
                    "url": f"{self._api()}/repos/{project}/pulls/{pull.number}",
                    "html_url": self.web_url(project, pull.number),
                    "diff_url": self.web_url(project, pull.number) + ".diff",
                    "patch_url": self.web_url(project, pull.number) + ".patch",
                    "merged_at": iso(pull.merged_at),
                },
                "closed_at": iso(pull.closed_at),
                "created_at": iso(pull.created_at),
                "updated_at": iso(pull.updated_at),
                "closed_by": self.user(pull.closed_by) if pull.closed_by else None,
                "author_association": "MEMBER",
            },
        )

    def _labels(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        pull = self.pull_for(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        for item in data.get("labels", []) if isinstance(data, dict) else data:
            name = item["name"] if isinstance(item, dict) else str(item)
            if name not in pull.labels:
                pull.labels.append(name)
        return json_response(200, [self.label(pull.project, name) for name in pull.labels])

    def _installation_token(self, request: Request, installation: str) -> Response:
        """An App's JWT (RS256, issued by the App) buys an hour's token for its installation."""
        app = self.apps.get(int(installation)) if installation.isdigit() else None
        if app is None:
            return _error(404, "Not Found")
        jwt = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            header, payload, signature = jwt.split(".")
            app.public_key.verify(
                _unb64(signature),
                f"{header}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            claims = json.loads(_unb64(payload))
        except (ValueError, InvalidSignature):
            return _error(401, "A JSON web token could not be decoded")
        if claims.get("iss") != app.app_id:
            return _error(401, "'Issuer' claim ('iss') must be an Integer")
        token = f"ghs_{uuid.uuid4().hex}"
        self.forge.add_token(token, app.user)
        self.minted.append(token)
        expires = datetime.now(UTC) + timedelta(hours=1)
        return json_response(
            201,
            {
                "token": token,
                "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"contents": "write", "pull_requests": "write"},
                "repository_selection": "all",
            },
        )

    # --- webhooks -------------------------------------------------------------

    def webhook(self, action: str, pull_number: int, project: str, user: str) -> Webhook:
        pull = self.store.get(project, pull_number)
        assert pull is not None
        return Webhook(
            headers={"X-GitHub-Event": "pull_request"},
            body={
                "action": "closed",  # GitHub says "closed" for both; merged tells them apart
                "number": pull.number,
                "pull_request": self.pull(pull),
                "repository": self.repository(project),
                "sender": self.user(user),
            },
        )


def _validation(
    *, message: str | None = None, field: str | None = None, code: str = "custom"
) -> Response:
    error: dict[str, Any] = {"resource": "PullRequest", "code": code}
    if field is not None:
        error["field"] = field
    if message is not None:
        error["message"] = message
    return json_response(
        422,
        {
            "message": "Validation Failed",
            "errors": [error],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422",
        },
    )
