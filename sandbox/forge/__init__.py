"""A forge emulator: GitHub's, GitLab's, Gitea's, Bitbucket Cloud's or Azure DevOps' REST API
for pull requests (and GitHub's git database, for ``github-push``: :mod:`sandbox.forge._github_git`)
over real bare git repositories on disk, which it also serves over git's smart HTTP.

``ForgeEmulator("github", root)`` serves api.github.com's paths at its root and GitHub
Enterprise Server's at ``/api/v3``; ``"gitlab"`` serves ``/api/v4`` (merge requests, the
project named by its URL-encoded path); ``"gitea"`` serves ``/api/v1`` (Gitea and Forgejo);
``"bitbucket"`` serves ``/2.0`` (Bitbucket Cloud's base; clients name it with ``apiURL``, as
api.bitbucket.org is not the repository's host); ``"azure"`` serves dev.azure.com's paths at its
root (a repository ``org/name`` is Azure's ``org/name/_git/name``: a project's default
repository, named as the project is).
A repository ``owner/name`` is cloned and pushed at ``{url}/owner/name.git``, so a worker
derives the API base from the repository URL exactly as for the real forge.

Merges are real git (a merge commit, a squash commit or a rebase, as the forge's merge
method says); see :mod:`sandbox.forge._store`. Every request and answer is checked against
the forge's published OpenAPI description (``tests/reference/forges``), problems kept in
:attr:`violations` for the tests to assert there are none.

Tests act as people: :meth:`ForgeEmulator.merge` and :meth:`ForgeEmulator.close` do what a
reviewer does in the web UI, naming the user (another process, such as the demo, POSTs
``{"project", "number", "user"[, "method"]}`` to ``/-/person/merge`` or ``/-/person/close``);
both send the forge's pull request webhook to
``webhook_url`` (signed with ``webhook_secret`` as the forge signs) when one is configured.
:meth:`ForgeEmulator.rate_limit_next` makes the next request hit the forge's (secondary)
rate limit with a ``Retry-After``; :meth:`add_token` adds accounts, read-only ones too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import ApiEmulator, json_response
from sandbox.forge._azure import AzureApi
from sandbox.forge._bitbucket import BitbucketApi
from sandbox.forge._bitbucket import check_webhook as check_bitbucket_webhook
from sandbox.forge._common import (
    Account,
    Flavour,
    check_request,
    check_response,
    check_webhook,
)
from sandbox.forge._gitea import GiteaApi
from sandbox.forge._github import App, GitHubApi
from sandbox.forge._gitlab import GitLabApi
from sandbox.forge._store import ForgeStore, NotMergeable, PullRequest, git
from sandbox.gitops import KARGO_DEMO

__all__ = ["Delivery", "ForgeEmulator", "ForgeKind", "PullRequest"]

ForgeKind = Literal["github", "gitlab", "gitea", "bitbucket", "azure"]
PERSON_PATH = "/-/person/"
"""Where another process acts as a person (merge, close): see ``ForgeEmulator._act_as_person``."""


@dataclass(frozen=True)
class Delivery:
    """A webhook the emulator sent, and what the receiver answered (or the error)."""

    event: str
    action: str
    number: int
    status: int | None
    error: str | None = None


def _flavour(kind: ForgeKind, forge: ForgeEmulator) -> Flavour:
    if kind == "github":
        return GitHubApi(forge)
    if kind == "gitlab":
        return GitLabApi(forge)
    if kind == "gitea":
        return GiteaApi(forge)
    if kind == "bitbucket":
        return BitbucketApi(forge)
    if kind == "azure":
        return AzureApi(forge)
    raise ValueError(kind)


class ForgeEmulator(ApiEmulator):
    """One forge on ``127.0.0.1`` at a free port; repositories under ``root``."""

    def __init__(
        self,
        kind: ForgeKind,
        root: Path,
        *,
        token: str = "forge-token",  # noqa: S107 - the emulator's own test token
        user: str = "freightline-bot",
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        port: int = 0,
    ) -> None:
        self.name = kind
        self.kind = kind
        self.store = ForgeStore(root)
        self.accounts: dict[str, Account] = {token: Account(user)}
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.deliveries: list[Delivery] = []
        self.merge_methods = {"merge", "squash", "rebase"}
        self._deliveries = threading.Condition()
        self._flavour = _flavour(kind, self)
        super().__init__(port)
        self._flavour.load_specs()

    # --- setting up -----------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The API base a client is configured with (GitHub: Enterprise Server's ``/api/v3``)."""
        return self.url + self._flavour.api_prefix

    def add_repo(
        self, project: str, *, seed: Path | None = KARGO_DEMO, branch: str = "main"
    ) -> Path:
        """A bare repository ``owner/name`` (its ``branch`` seeded from ``seed``); its path."""
        return self.store.add_repo(project, seed=seed, branch=branch)

    def repo_url(self, project: str) -> str:
        """The repository's clone URL (git's smart HTTP, served by this emulator)."""
        return f"{self.url}/{self._flavour.repo_path(project)}.git"

    def add_token(self, token: str, user: str, *, write: bool = True) -> None:
        """Another account; ``write=False`` answers writes 403 as a read-only token gets."""
        self.accounts[token] = Account(user, write)

    def commit_to(
        self,
        project: str,
        branch: str,
        files: dict[str, str],
        *,
        start: str = "main",
        message: str = "Change",
        user: str = "Sandbox",
    ) -> str:
        """Commit ``files`` (path → text) on ``branch`` (created from ``start`` if missing),
        as a push would; the new head."""
        repo = self.store.repos[project]
        parent = self.store.branch_head(project, branch) or self.store.branch_head(project, start)
        assert parent is not None, f"{project} has no branch {start}"
        index = {"GIT_INDEX_FILE": str(repo / f"index-{uuid.uuid4().hex}")}
        try:
            git(repo, "read-tree", parent, env=index)
            for path, text in files.items():
                blob = subprocess.run(
                    ["git", "hash-object", "-w", "--stdin"],
                    cwd=repo,
                    input=text,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                git(
                    repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index
                )
            tree = git(repo, "write-tree", env=index)
        finally:
            Path(index["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        commit = git(repo, "commit-tree", tree, "-p", parent, "-m", message, user=user)
        git(repo, "update-ref", f"refs/heads/{branch}", commit)
        return commit

    def pull(self, project: str, number: int) -> PullRequest:
        """A pull request as the forge keeps it."""
        pull = self.store.get(project, number)
        if pull is None:
            raise KeyError(f"{project} has no pull request {number}")
        return pull

    def web_url(self, project: str, number: int) -> str:
        """A pull request's page, as the forge's API reports it."""
        return self._flavour.web_url(project, number)

    def add_github_app(
        self, app_id: str, installation_id: int, public_key: Any, *, user: str = "freightline[bot]"
    ) -> None:
        """A GitHub App installation whose JWTs (signed by ``public_key``'s private key) buy
        installation tokens at ``POST /app/installations/{id}/access_tokens`` (GitHub only)."""
        assert isinstance(self._flavour, GitHubApi), "GitHub Apps are GitHub's"
        self._flavour.apps[installation_id] = App(app_id, installation_id, public_key, user)

    @property
    def verified_commits(self) -> set[str]:
        """Commits created through GitHub's git database API without an author, which GitHub
        signs (its ``verification.verified``); the emulator only records them (GitHub only)."""
        git_data = getattr(self._flavour, "git_data", None)
        return set(git_data.signed) if git_data is not None else set()

    @property
    def minted_tokens(self) -> list[str]:
        """The installation tokens GitHub Apps were given (GitHub only)."""
        return list(getattr(self._flavour, "minted", []))

    def add_label(self, project: str, name: str) -> None:
        """A label the repository has (Gitea takes label IDs, so they must exist first; GitHub
        and GitLab create labels on use)."""
        add = getattr(self._flavour, "add_label", None)
        if add is not None:
            add(project, name)

    # --- acting as a person ---------------------------------------------------

    def merge(
        self,
        project: str,
        number: int,
        *,
        user: str,
        method: str = "merge",
        sha: str | None = None,
        message: str | None = None,
    ) -> PullRequest:
        """Merge as ``user`` would in the web UI (real git), then send the webhook. A person
        merges whatever approvals say (an admin's override); the API checks them."""
        pull = self.store.merge(
            project,
            number,
            method=method,
            user=user,
            sha=sha,
            message=message,
            check_approvals=False,
        )
        self._send_webhook("merged", project, number, user)
        return pull

    def api_merge(
        self,
        project: str,
        number: int,
        *,
        user: str,
        method: str,
        sha: str | None,
        message: str | None,
    ) -> PullRequest:
        """A merge the API asked for: approvals are checked; the webhook is sent."""
        pull = self.store.merge(project, number, method=method, user=user, sha=sha, message=message)
        self._send_webhook("merged", project, number, user)
        return pull

    def require_approvals(self, project: str, branch: str = "main", count: int = 1) -> None:
        """Merging into ``branch`` through the API needs ``count`` approvals (branch protection
        on GitHub and Gitea, approval rules on GitLab)."""
        self.store.required_approvals[(project, branch)] = count

    def approve(self, project: str, number: int, *, user: str) -> PullRequest:
        """``user`` approves the pull request (a review)."""
        pull = self.pull(project, number)
        if user not in pull.approved_by:
            pull.approved_by.append(user)
        return pull

    def close(self, project: str, number: int, *, user: str) -> PullRequest:
        """Close without merging as ``user``, then send the webhook."""
        before = self.pull(project, number).state
        pull = self.store.close(project, number, user=user)
        if before == "open":
            self._send_webhook("closed", project, number, user)
        return pull

    def rate_limit_next(
        self, retry_after: int = 1, count: int = 1, *, status: int | None = None
    ) -> None:
        """The next ``count`` API requests hit the forge's rate limit, with ``Retry-After``
        (GitHub's secondary limit is a 403 unless ``status=429`` asks for its other form)."""
        answer, body, headers = self._flavour.rate_limited(retry_after)
        for _ in range(count):
            self.fail_next(status or answer, body, headers)

    def wait_for_deliveries(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """Wait until ``count`` webhooks were sent (and answered); all deliveries so far."""
        with self._deliveries:
            self._deliveries.wait_for(lambda: len(self.deliveries) >= count, timeout)
            return list(self.deliveries)

    # --- webhooks -------------------------------------------------------------

    def _send_webhook(self, action: str, project: str, number: int, user: str) -> None:
        if self.webhook_url is None:
            return
        hook = self._flavour.webhook(action, number, project, user)
        if self.kind == "github":
            problems = check_webhook(
                "github-webhook-pull-request-closed.json", "pull-request-closed", hook.body
            )
            if problems:
                self.record_violation("webhook pull_request closed", problems)
        elif self.kind == "bitbucket":
            problems = check_bitbucket_webhook(hook.body)
            if problems:
                self.record_violation(f"webhook {hook.headers['X-Event-Key']}", problems)
        payload = json.dumps(hook.body).encode()
        headers = {"Content-Type": "application/json", **hook.headers}
        secret = self.webhook_secret or ""
        digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
        if self.kind == "github":
            headers["X-GitHub-Delivery"] = str(uuid.uuid4())
            if secret:
                headers["X-Hub-Signature-256"] = f"sha256={digest}"
        elif self.kind == "gitlab":
            if secret:
                headers["X-Gitlab-Token"] = secret
        elif self.kind == "bitbucket":
            if secret:
                # Bitbucket Cloud signs with HMAC-SHA256 under GitHub's old header name.
                headers["X-Hub-Signature"] = f"sha256={digest}"
        elif self.kind == "gitea" and secret:
            # Gitea signs each delivery four ways (services/webhook/deliver.go): its own and
            # Gogs' header carry the bare hex HMAC-SHA256, GitHub's two the prefixed SHA-1 and
            # SHA-256 ones, so a receiver written for GitHub (Kargo's) accepts it. Forgejo
            # adds its own header with the same value.
            headers["X-Gitea-Signature"] = digest
            headers["X-Gogs-Signature"] = digest
            headers["X-Forgejo-Signature"] = digest
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
            sha1 = hmac.new(secret.encode(), payload, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={sha1}"
        url = self.webhook_url
        event = (
            hook.headers.get("X-GitHub-Event")
            or hook.headers.get("X-Gitlab-Event")
            or hook.headers.get("X-Gitea-Event")
            or hook.headers.get("X-Event-Key")
            or str(hook.body.get("eventType", ""))  # Azure DevOps: no header, no signature
        )

        def deliver() -> None:
            # A thread of its own: the receiver may share an event loop with the test that
            # acted as the person, which must not block on it.
            try:
                with httpx.Client(timeout=10.0) as client:
                    answer = client.post(url, content=payload, headers=headers)
                delivery = Delivery(event, action, number, answer.status_code)
            except httpx.HTTPError as err:
                delivery = Delivery(event, action, number, None, str(err))
            with self._deliveries:
                self.deliveries.append(delivery)
                self._deliveries.notify_all()

        threading.Thread(target=deliver, daemon=True).start()

    # --- serving --------------------------------------------------------------

    def _account(self, request: Request) -> Account | None:
        token = self._flavour.token(request)
        return None if token is None else self.accounts.get(token)

    def _unchecked(self, request: Request) -> bool:
        return self._is_git(request) or request.path.startswith(PERSON_PATH)

    def check_request(self, request: Request) -> list[str]:
        spec = self._flavour.spec_for(request) if not self._unchecked(request) else None
        return [] if spec is None else check_request(spec, request)

    def check_response(self, request: Request, response: Response) -> list[str]:
        spec = self._flavour.spec_for(request) if not self._unchecked(request) else None
        return [] if spec is None else check_response(spec, request, response)

    def answer(self, request: Request) -> Response:
        if self._is_git(request):
            return self._git_http(request)
        if request.path.startswith(PERSON_PATH) and request.method == "POST":
            return self._act_as_person(request)
        return self._flavour.answer(request, self._account(request))

    def _act_as_person(self, request: Request) -> Response:
        """``POST /-/person/merge`` or ``/-/person/close`` with ``{"project", "number",
        "user"[, "method"]}``: what :meth:`merge` and :meth:`close` do, for a demo driving the
        emulator from another process (the forges' own web UI, not their API)."""
        try:
            data = json.loads(request.get_data() or b"{}")
            project, number, user = str(data["project"]), int(data["number"]), str(data["user"])
            if request.path == f"{PERSON_PATH}merge":
                pull = self.merge(
                    project, number, user=user, method=str(data.get("method", "merge"))
                )
            elif request.path == f"{PERSON_PATH}close":
                pull = self.close(project, number, user=user)
            else:
                return json_response(404, {"message": "Not Found"})
        except (KeyError, ValueError, TypeError) as err:
            return json_response(400, {"message": f"{type(err).__name__}: {err}"})
        except NotMergeable as err:
            return json_response(409, {"message": str(err)})
        return json_response(
            200, {"state": pull.state, "mergeCommit": pull.merge_commit, "closedBy": pull.closed_by}
        )

    @staticmethod
    def _is_git(request: Request) -> bool:
        path = request.path
        return ".git/" in path and (
            path.endswith("/info/refs")
            or path.endswith("/git-upload-pack")
            or path.endswith("/git-receive-pack")
        )

    def _git_http(self, request: Request) -> Response:
        """git's smart HTTP through ``git http-backend``; a push needs a valid token (any
        user name, the token as the password), as on the forges."""
        pushing = request.path.endswith("/git-receive-pack") or (
            request.args.get("service") == "git-receive-pack"
        )
        auth = request.authorization
        account = self.accounts.get(auth.password or "") if auth is not None else None
        if (pushing or auth is not None) and account is None:
            return Response(
                "Authentication required",
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="forge"'},
            )
        env = {
            "GIT_PROJECT_ROOT": str(self.store.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": self._flavour.git_path(request.path),
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string.decode(),
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_USER": account.user if account else "",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": "/usr/bin:/bin",
        }
        if encoding := request.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        done = subprocess.run(
            ["git", "http-backend"],
            input=request.get_data(),
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        return Response(body, status=status, headers=headers)
