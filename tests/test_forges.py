"""The forge clients (``activities.forges``) against the forge emulator (``sandbox.forge``):
real bare repositories, real merges, every request and answer checked against the forge's
OpenAPI description (``tests/reference/forges``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ruamel.yaml import YAML
from structlog.testing import capture_logs
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from activities.forges import default_api_url, detect_provider, forge_for, parse_repo_url
from activities.forges.base import MAX_RATE_LIMIT_WAITS, Forge, rate_limit_delay
from activities.github_app import InstallationTokens
from freightline.errors import (
    ConfigError,
    CredentialError,
    ForgeUnavailableError,
    NotFoundError,
    PullRequestError,
    PullRequestNotMergeable,
    PullRequestNotReady,
)
from freightline.kargo.credentials import CredentialStore, GitCredentials
from sandbox.api_emulator import ApiEmulator, json_response
from sandbox.forge import ForgeEmulator
from sandbox.forge._store import GitFailure, git

KINDS = ["github", "gitlab", "gitea", "bitbucket", "azure"]
PROJECT = "acme/gitops"
TOKEN = "forge-token"
FIXED_API = ("bitbucket", "azure")
"""Forges whose API is not on the repository's host: clients name the emulator's."""


@pytest.fixture(params=KINDS)
def forge(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ForgeEmulator]:
    emulator = ForgeEmulator(request.param, tmp_path / "forge", token=TOKEN)
    emulator.add_repo(PROJECT)
    emulator.add_label(PROJECT, "promotion")
    try:
        yield emulator
        assert emulator.violations == []
    finally:
        emulator.stop()


class Sleeps:
    """The client's sleep, recorded instead of slept (no wall clock in tests)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(
    forge: ForgeEmulator,
    *,
    token: str = TOKEN,
    sleep: Sleeps | None = None,
    http: httpx.AsyncClient | None = None,
    **kwargs: Any,
) -> Forge:
    credentials = CredentialStore(None, git_fallback=GitCredentials("bot", token))
    if forge.kind in FIXED_API:
        # Kargo's Bitbucket and Azure clients always call api.bitbucket.org, dev.azure.com.
        kwargs.setdefault("api_base_url", forge.api_url)
    return forge_for(
        forge.repo_url(PROJECT),
        forge.kind,
        credentials=credentials,
        sleep=sleep or Sleeps(),
        http=http,
        **kwargs,
    )


def method_name(forge: ForgeEmulator, method: str) -> str:
    """The forge's name for a merge method (Bitbucket's merge strategies have their own)."""
    if forge.kind == "azure":
        return {"merge": "noFastForward"}.get(method, method)
    if forge.kind != "bitbucket":
        return method
    return {"merge": "merge_commit", "rebase": "rebase_fast_forward"}.get(method, method)


async def open_change(
    forge: ForgeEmulator, branch: str = "stage/prod", files: dict[str, str] | None = None
) -> Any:
    forge.commit_to(PROJECT, branch, files or {"prod/values.yaml": "image: v2\n"})
    return await client(forge).open_pull_request(
        source=branch,
        target="main",
        title="Promote v2",
        description="by Freightline",
        labels=["promotion"],
    )


def head(forge: ForgeEmulator, branch: str = "main") -> str:
    sha = forge.store.branch_head(PROJECT, branch)
    assert sha is not None
    return sha


def repo(forge: ForgeEmulator) -> Path:
    return forge.store.repos[PROJECT]


# --- happy paths --------------------------------------------------------------------------------


async def test_open_is_idempotent_and_found(forge: ForgeEmulator) -> None:
    forge_client = client(forge)
    assert await forge_client.find_pull_request(source="stage/prod", target="main") is None
    opened = await open_change(forge)
    assert opened.state == "open"
    assert opened.number == 1
    assert opened.url == forge.web_url(PROJECT, 1)
    # Bitbucket abbreviates the head; it has no labels (Kargo ignores them there).
    assert opened.head_sha and head(forge, "stage/prod").startswith(opened.head_sha)
    assert (opened.source_branch, opened.target_branch) == ("stage/prod", "main")
    assert forge.pull(PROJECT, 1).labels == ([] if forge.kind == "bitbucket" else ["promotion"])
    # A retried open (the activity crashed after the forge answered) finds the same one.
    again = await forge_client.open_pull_request(
        source="stage/prod", target="main", title="Promote v2", description="", labels=[]
    )
    assert again == opened
    assert len(forge.store.pulls[PROJECT]) == 1
    assert await forge_client.find_pull_request(source="stage/prod", target="main") == opened
    assert await forge_client.get_pull_request(1) == opened
    # Bitbucket's pull request says nothing about mergeability (Kargo: BCLOUD-22014).
    assert opened.mergeable is (None if forge.kind == "bitbucket" else True)


@pytest.mark.parametrize("method", ["merge", "squash", "rebase"])
async def test_merge_methods_make_the_forges_history(forge: ForgeEmulator, method: str) -> None:
    if forge.kind == "gitlab" and method == "rebase":
        pytest.skip("GitLab's merge call has no rebase method (Kargo offers merge and squash)")
    opened = await open_change(forge)
    source_head = head(forge, "stage/prod")
    # main moves on meanwhile (another file), so each method's shape is visible.
    forge.commit_to(PROJECT, "main", {"README.md": "moved\n"}, message="Unrelated")
    base = head(forge)
    merged = await client(forge).merge_pull_request(
        opened.number, method=method_name(forge, method)
    )
    assert merged.state == "merged"
    assert merged.merge_commit == head(forge)
    assert merged.closed_by == "freightline-bot"
    parents = git(repo(forge), "rev-list", "--parents", "-n1", head(forge)).split()[1:]
    if method == "merge":
        assert parents == [base, source_head]
    else:
        assert parents == [base]
        assert merged.merge_commit != source_head
    message = git(repo(forge), "log", "-1", "--format=%s", head(forge))
    if method == "rebase":
        assert message == "Change"  # the source's own commit, replayed
    elif method == "squash":
        assert message.startswith("Promote v2")
    # Both changes are on main.
    assert git(repo(forge), "show", "main:prod/values.yaml") == "image: v2"
    assert git(repo(forge), "show", "main:README.md") == "moved"
    # Merging again (a retried activity) answers the same merge, and merges nothing more.
    again = await client(forge).merge_pull_request(opened.number, method=method_name(forge, method))
    assert again == merged
    assert head(forge) == merged.merge_commit
    assert await client(forge).find_pull_request(source="stage/prod", target="main") == merged


async def test_default_merge_method(forge: ForgeEmulator) -> None:
    opened = await open_change(forge)
    merged = await client(forge).merge_pull_request(opened.number, method=None)
    assert merged.merge_commit == head(forge)
    assert len(git(repo(forge), "rev-list", "--parents", "-n1", head(forge)).split()) == 3


async def test_a_person_merges_or_closes(forge: ForgeEmulator) -> None:
    first = await open_change(forge)
    forge.merge(PROJECT, first.number, user="alice", method="squash")
    merged = await client(forge).get_pull_request(first.number)
    assert (merged.state, merged.closed_by, merged.merge_commit) == ("merged", "alice", head(forge))
    second = await open_change(forge, "stage/uat", {"uat/values.yaml": "image: v3\n"})
    forge.close(PROJECT, second.number, user="bob")
    closed = await client(forge).get_pull_request(second.number)
    # Gitea's pull request does not say who closed it.
    closer = None if forge.kind == "gitea" else "bob"
    assert (closed.state, closed.closed_by, closed.merge_commit) == ("closed", closer, None)
    with pytest.raises(
        PullRequestNotMergeable, match=f"closed{' by bob' if closer else ''} without"
    ):
        await client(forge).merge_pull_request(second.number, method=None)


# --- errors -------------------------------------------------------------------------------------


async def test_bad_token_is_a_credential_error_without_the_token(forge: ForgeEmulator) -> None:
    forge.commit_to(PROJECT, "stage/prod", {"prod/values.yaml": "image: v2\n"})
    with capture_logs() as logs, pytest.raises(CredentialError) as caught:
        await client(forge, token="wrong-secret-token").get_pull_request(1)
    assert "wrong-secret-token" not in str(caught.value)
    assert "wrong-secret-token" not in repr(logs)


async def test_read_only_token_may_not_open(forge: ForgeEmulator) -> None:
    forge.add_token("read-only-token", "viewer", write=False)
    forge.commit_to(PROJECT, "stage/prod", {"prod/values.yaml": "image: v2\n"})
    with pytest.raises(CredentialError, match="may not") as caught:
        await client(forge, token="read-only-token").open_pull_request(
            source="stage/prod", target="main", title="t", description="", labels=[]
        )
    assert "read-only-token" not in str(caught.value)


async def test_not_found_names_the_repository_and_pull_request(forge: ForgeEmulator) -> None:
    with pytest.raises(
        NotFoundError, match=r"acme/gitops(/_git/gitops)?: (pull|merge) request [#!]7 not found"
    ):
        await client(forge).get_pull_request(7)
    credentials = CredentialStore(None, git_fallback=GitCredentials("bot", TOKEN))
    missing = forge_for(
        forge.repo_url("acme/missing"),
        forge.kind,
        credentials=credentials,
        api_base_url=forge.api_url if forge.kind in FIXED_API else None,
    )
    with pytest.raises(NotFoundError, match="acme/missing"):
        await missing.open_pull_request(
            source="a", target="main", title="t", description="", labels=[]
        )


async def test_conflict_is_not_mergeable(forge: ForgeEmulator) -> None:
    opened = await open_change(forge, files={"README.md": "ours\n"})
    forge.commit_to(PROJECT, "main", {"README.md": "theirs\n"})
    mergeable = (await client(forge).get_pull_request(opened.number)).mergeable
    assert mergeable is (None if forge.kind == "bitbucket" else False)
    # GitHub and GitLab say so before a merge is tried (mergeable_state "dirty",
    # detailed_merge_status "conflict"); Gitea refuses the merge with 409, Bitbucket with 400.
    words = {
        "github": "conflicts",
        "gitlab": "conflict",
        "gitea": "409 Merge conflict",
        "bitbucket": "400 You can't merge until you resolve all merge conflicts",
        "azure": "conflicts",
    }
    with pytest.raises(PullRequestNotMergeable, match=words[forge.kind]) as caught:
        await client(forge).merge_pull_request(opened.number, method=method_name(forge, "merge"))
    assert not isinstance(caught.value, PullRequestNotReady)
    assert forge.pull(PROJECT, opened.number).state == "open"


async def test_missing_approvals_are_not_ready_yet(forge: ForgeEmulator) -> None:
    forge.require_approvals(PROJECT, "main")
    opened = await open_change(forge)
    # Gitea's and Azure's are about conflicts only; Bitbucket has none.
    if forge.kind not in ("gitea", "bitbucket", "azure"):
        assert (await client(forge).get_pull_request(opened.number)).mergeable is False
    with pytest.raises(PullRequestNotReady):
        await client(forge).merge_pull_request(opened.number, method=None)
    assert forge.pull(PROJECT, opened.number).state == "open"
    forge.approve(PROJECT, opened.number, user="reviewer")
    merged = await client(forge).merge_pull_request(opened.number, method=None)
    assert merged.state == "merged"


async def test_github_base_modified_during_merge_is_not_ready(tmp_path: Path) -> None:
    forge = ForgeEmulator("github", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        opened = await open_change(forge)

        async def race(request: httpx.Request) -> None:
            if request.method == "PUT":
                forge.fail_next(
                    405, {"message": "Base branch was modified. Review and try the merge again."}
                )

        async with httpx.AsyncClient(event_hooks={"request": [race]}) as http:
            with pytest.raises(PullRequestNotReady, match="Base branch was modified"):
                await client(forge, http=http).merge_pull_request(opened.number, method=None)
        assert forge.violations == []
    finally:
        forge.stop()


async def test_a_push_between_check_and_merge_is_refused(forge: ForgeEmulator) -> None:
    if forge.kind == "bitbucket":
        pytest.skip("Bitbucket's merge call takes no expected head commit (nor does Kargo's)")
    opened = await open_change(forge)

    async def push_first(request: httpx.Request) -> None:
        # Someone pushes to the source branch after the client read the pull request's head.
        if request.url.path.endswith("/merge") or request.method == "PATCH":  # Azure: PATCH
            forge.commit_to(PROJECT, "stage/prod", {"prod/extra.yaml": "late: true\n"})

    async with httpx.AsyncClient(event_hooks={"request": [push_first]}) as http:
        with pytest.raises(PullRequestNotMergeable, match="409"):
            await client(forge, http=http).merge_pull_request(
                opened.number, method=method_name(forge, "merge")
            )
    assert forge.pull(PROJECT, opened.number).state == "open"


async def test_rate_limit_waits_retry_after(forge: ForgeEmulator) -> None:
    sleeps = Sleeps()
    forge.rate_limit_next(retry_after=7, count=2)
    with capture_logs() as logs:
        assert (
            await client(forge, sleep=sleeps).find_pull_request(source="x", target="main") is None
        )
    assert sleeps.calls == [7.0, 7.0]
    assert TOKEN not in repr(logs)
    assert [entry["retry_after"] for entry in logs if entry["event"] == "forge rate limit"] == [
        7.0,
        7.0,
    ]


async def test_github_secondary_rate_limit_as_429(tmp_path: Path) -> None:
    forge = ForgeEmulator("github", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        sleeps = Sleeps()
        forge.rate_limit_next(retry_after=2, status=429)
        assert (
            await client(forge, sleep=sleeps).find_pull_request(source="x", target="main") is None
        )
        assert sleeps.calls == [2.0]
    finally:
        forge.stop()


def test_rate_limit_delays() -> None:
    def answer(status: int, headers: dict[str, str], body: Any = None) -> httpx.Response:
        return httpx.Response(status, headers=headers, json=body or {"message": "x"})

    assert rate_limit_delay(answer(429, {"Retry-After": "12"})) == 12.0
    assert rate_limit_delay(answer(403, {"Retry-After": "3"})) == 3.0
    reset = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1030"}
    assert rate_limit_delay(answer(403, reset), now=lambda: 1000.0) == 30.0
    assert rate_limit_delay(answer(403, {}, {"message": "secondary rate limit"})) is not None
    assert rate_limit_delay(answer(403, {}, {"message": "Resource not accessible"})) is None
    assert rate_limit_delay(answer(404, {"Retry-After": "1"})) is None


async def test_rate_limit_gives_up_after_bounded_waits(forge: ForgeEmulator) -> None:
    sleeps = Sleeps()
    forge.rate_limit_next(retry_after=1, count=MAX_RATE_LIMIT_WAITS + 1)
    with pytest.raises(ForgeUnavailableError, match="rate limited"):
        await client(forge, sleep=sleeps).find_pull_request(source="x", target="main")
    assert sleeps.calls == [1.0] * MAX_RATE_LIMIT_WAITS
    forge.rate_limit_next(retry_after=3600)
    with pytest.raises(ForgeUnavailableError, match="retry after 3600s"):
        await client(forge, sleep=sleeps).find_pull_request(source="x", target="main")


async def test_server_errors_and_unreachable_are_retryable(forge: ForgeEmulator) -> None:
    forge.fail_next(502, {"message": "Server Error"})
    with pytest.raises(ForgeUnavailableError, match="502"):
        await client(forge).get_pull_request(1)
    with pytest.raises(ForgeUnavailableError, match="unreachable"):
        await client(forge, api_base_url="http://127.0.0.1:9").get_pull_request(1)
    assert ForgeUnavailableError.retryable


def test_the_description_refuses_a_malformed_request(forge: ForgeEmulator) -> None:
    path = {
        "github": f"/repos/{PROJECT}/pulls",
        "gitlab": "/projects/acme%2Fgitops/merge_requests",
        "gitea": f"/repos/{PROJECT}/pulls",
        "bitbucket": f"/repositories/{PROJECT}/pullrequests",
        "azure": "/acme/gitops/_apis/git/repositories/gitops/pullrequests?api-version=7.1",
    }[forge.kind]
    answer = httpx.post(
        f"{forge.api_url}{path}",
        json={"title": 3},
        headers={
            "Authorization": {
                "bitbucket": f"Bearer {TOKEN}",
                "azure": "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode(),
            }.get(forge.kind, f"token {TOKEN}"),
            "PRIVATE-TOKEN": TOKEN,
        },
    )
    assert answer.status_code == 400
    assert forge.violations
    forge.violations.clear()


# --- webhooks -----------------------------------------------------------------------------------


class Receiver(ApiEmulator):
    name = "receiver"

    def answer(self, request: Request) -> Response:
        return json_response(200, {})


@pytest.mark.parametrize("kind", KINDS)
async def test_webhooks_on_merge_and_close(tmp_path: Path, kind: Any) -> None:
    with Receiver() as receiver:
        forge = ForgeEmulator(
            kind, tmp_path / "forge", webhook_url=receiver.url + "/hook", webhook_secret="s3cret"
        )
        try:
            forge.add_repo(PROJECT)
            forge.add_label(PROJECT, "promotion")
            merged = await open_change(forge)
            forge.merge(PROJECT, merged.number, user="alice")
            closed = await open_change(forge, "stage/uat", {"uat/values.yaml": "image: v3\n"})
            forge.close(PROJECT, closed.number, user="bob")
            deliveries = forge.wait_for_deliveries(2)
            assert sorted((d.action, d.number, d.status) for d in deliveries) == [
                ("closed", 2, 200),
                ("merged", 1, 200),
            ]
            hooks = {}
            for hook in receiver.requests:
                sent = json.loads(hook.get_data())
                if kind == "gitlab":
                    hooks[sent["object_attributes"]["iid"]] = hook
                elif kind == "bitbucket":
                    hooks[sent["pullrequest"]["id"]] = hook
                elif kind == "azure":
                    hooks[sent["resource"]["pullRequestId"]] = hook
                else:
                    hooks[sent["number"]] = hook
            for number, hook in hooks.items():
                body = hook.get_data()
                digest = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
                payload = json.loads(body)
                if kind == "github":
                    assert hook.headers["X-GitHub-Event"] == "pull_request"
                    assert hook.headers["X-Hub-Signature-256"] == f"sha256={digest}"
                    assert payload["action"] == "closed"
                    assert payload["pull_request"]["merged"] is (number == 1)
                    assert payload["sender"]["login"] == ("alice" if number == 1 else "bob")
                elif kind == "gitlab":
                    assert hook.headers["X-Gitlab-Event"] == "Merge Request Hook"
                    assert hook.headers["X-Gitlab-Token"] == "s3cret"
                    attributes = payload["object_attributes"]
                    assert (attributes["action"], attributes["state"]) == (
                        ("merge", "merged") if number == 1 else ("close", "closed")
                    )
                    assert payload["user"]["username"] == ("alice" if number == 1 else "bob")
                elif kind == "bitbucket":
                    # What Kargo's receiver checks: the event key and the sha256 HMAC.
                    assert hook.headers["X-Event-Key"] == (
                        "pullrequest:fulfilled" if number == 1 else "pullrequest:rejected"
                    )
                    assert hook.headers["X-Hub-Signature"] == f"sha256={digest}"
                    assert hook.headers["X-Request-UUID"]
                    assert payload["pullrequest"]["state"] == (
                        "MERGED" if number == 1 else "DECLINED"
                    )
                    assert payload["pullrequest"]["links"]["html"]["href"] == forge.web_url(
                        PROJECT, number
                    )
                    assert payload["actor"]["nickname"] == ("alice" if number == 1 else "bob")
                elif kind == "azure":
                    # Azure signs nothing (the receiver's URL is the secret); Kargo's receiver
                    # tells Azure DevOps by its User-Agent.
                    assert hook.headers["User-Agent"].startswith("VSServices")
                    assert payload["eventType"] == (
                        "git.pullrequest.merged" if number == 1 else "git.pullrequest.updated"
                    )
                    resource = payload["resource"]
                    assert resource["status"] == ("completed" if number == 1 else "abandoned")
                    assert resource["_links"]["web"]["href"] == forge.web_url(PROJECT, number)
                    assert resource["closedBy"]["uniqueName"] == ("alice" if number == 1 else "bob")
                else:
                    assert hook.headers["X-Gitea-Event"] == "pull_request"
                    assert hook.headers["X-Gitea-Signature"] == digest
                    assert hook.headers["X-Gogs-Signature"] == digest
                    assert hook.headers["X-Hub-Signature-256"] == f"sha256={digest}"
                    sha1 = hmac.new(b"s3cret", body, hashlib.sha1).hexdigest()
                    assert hook.headers["X-Hub-Signature"] == f"sha1={sha1}"
                    assert payload["pull_request"]["merged"] is (number == 1)
                    assert payload["sender"]["login"] == ("alice" if number == 1 else "bob")
            assert forge.violations == []
        finally:
            forge.stop()


# --- choosing the provider and the API --------------------------------------------------------


def test_detection_follows_kargo() -> None:
    assert detect_provider("https://github.com/acme/gitops.git") == "github"
    assert detect_provider("git@github.example.com:acme/gitops.git") == "github"
    assert detect_provider("https://acme.ghe.com/acme/gitops") == "github"
    assert detect_provider("https://gitlab.example.com/group/sub/proj.git") == "gitlab"
    assert detect_provider("https://gitea.example.com/acme/gitops") == "gitea"
    assert detect_provider("https://bitbucket.org/acme/gitops.git") == "bitbucket"
    assert detect_provider("git@bitbucket.org:acme/gitops.git") == "bitbucket"
    # Kargo's Bitbucket Cloud predicate is the exact host (Data Center is not served).
    assert detect_provider("https://bitbucket.example.com/acme/gitops") is None
    assert detect_provider("https://git.example.com/acme/gitops") is None
    credentials = CredentialStore(None, git_fallback=GitCredentials("bot", TOKEN))
    with pytest.raises(ConfigError, match="set provider"):
        forge_for("https://git.example.com/acme/gitops", None, credentials=credentials)
    assert detect_provider("https://dev.azure.com/acme/ops/_git/gitops") == "azure"
    assert detect_provider("https://acme.visualstudio.com/ops/_git/gitops") == "azure"
    with pytest.raises(ConfigError, match="sourcehut"):
        forge_for("https://git.example.com/acme/gitops", "sourcehut", credentials=credentials)
    with pytest.raises(ConfigError, match="ORG/PROJECT/_git/REPO"):
        forge_for("https://dev.azure.com/acme/gitops", None, credentials=credentials)


def test_api_urls_follow_the_repository_url() -> None:
    assert parse_repo_url("git@github.com:Acme/GitOps.git") == (
        "https",
        "github.com",
        "Acme/GitOps",
    )
    assert parse_repo_url("ssh://git@gitlab.example.com:2222/g/s/p.git") == (
        "https",
        "gitlab.example.com",
        "g/s/p",
    )
    assert default_api_url("github", "https", "github.com") == "https://api.github.com"
    assert default_api_url("github", "http", "ghe.local:8080") == "http://ghe.local:8080/api/v3"
    assert default_api_url("gitlab", "https", "gitlab.com") == "https://gitlab.com/api/v4"
    assert (
        default_api_url("gitea", "https", "gitea.example.com") == "https://gitea.example.com/api/v1"
    )
    assert default_api_url("bitbucket", "https", "bitbucket.org") == "https://api.bitbucket.org/2.0"
    assert default_api_url("azure", "https", "acme.visualstudio.com") == "https://dev.azure.com"


async def test_no_credential_is_a_credential_error(forge: ForgeEmulator) -> None:
    with pytest.raises(CredentialError, match="no git credential"):
        forge_for(forge.repo_url(PROJECT), forge.kind, credentials=CredentialStore(None))


async def test_github_com_paths_at_the_root(tmp_path: Path) -> None:
    # api.github.com's paths (no /api/v3), checked against api.github.com's description.
    forge = ForgeEmulator("github", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        forge.commit_to(PROJECT, "stage/prod", {"prod/values.yaml": "image: v2\n"})
        opened = await client(forge, api_base_url=forge.url).open_pull_request(
            source="stage/prod", target="main", title="t", description="", labels=["a"]
        )
        assert opened.number == 1
        assert all(not r.path.startswith("/api/v3") for r in forge.requests)
        assert forge.violations == []
    finally:
        forge.stop()


async def test_github_app_credentials_buy_a_cached_installation_token(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    forge = ForgeEmulator("github", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        forge.add_github_app("12345", 678, key.public_key())
        forge.commit_to(PROJECT, "stage/prod", {"prod/values.yaml": "image: v2\n"})
        secrets = tmp_path / "credentials.yaml"
        secrets.write_text(
            yaml_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "app",
                        "labels": {"kargo.akuity.io/cred-type": "git"},
                    },
                    "stringData": {
                        "repoURL": forge.repo_url(PROJECT),
                        "githubAppID": "12345",
                        "githubAppInstallationID": "678",
                        "githubAppPrivateKey": pem,
                    },
                }
            )
        )
        credentials = CredentialStore(secrets)
        tokens = InstallationTokens()
        with capture_logs() as logs:
            for _ in range(2):
                github = forge_for(
                    forge.repo_url(PROJECT), "github", credentials=credentials, tokens=tokens
                )
                opened = await github.open_pull_request(
                    source="stage/prod", target="main", title="t", description="", labels=[]
                )
        assert opened.number == 1
        assert forge.pull(PROJECT, 1).author == "freightline[bot]"
        assert tokens.minted == 1  # the second client reused the cached token
        assert len(forge.minted_tokens) == 1
        assert forge.minted_tokens[0] not in repr(logs)
        assert "PRIVATE KEY" not in repr(logs)
        assert forge.violations == []
    finally:
        forge.stop()


def yaml_dump(document: dict[str, Any]) -> str:
    stream = io.StringIO()
    YAML().dump(document, stream)
    return stream.getvalue()


async def test_a_credential_can_name_the_api(tmp_path: Path) -> None:
    # A production-looking URL (github.com, so the provider is detected), its API redirected
    # by the credential's apiURL to the emulator's api.github.com-style root.
    forge = ForgeEmulator("github", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        forge.commit_to(PROJECT, "stage/prod", {"prod/values.yaml": "image: v2\n"})
        secrets = tmp_path / "credentials.yaml"
        secrets.write_text(
            yaml_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "gh", "labels": {"kargo.akuity.io/cred-type": "git"}},
                    "stringData": {
                        "repoURL": "https://github.com/acme/gitops.git",
                        "username": "bot",
                        "password": TOKEN,
                        "apiURL": forge.url,
                    },
                }
            )
        )
        github = forge_for(
            "https://github.com/acme/gitops", None, credentials=CredentialStore(secrets)
        )
        opened = await github.open_pull_request(
            source="stage/prod", target="main", title="t", description="", labels=[]
        )
        assert opened.url == forge.web_url(PROJECT, 1)
        assert forge.requests[0].path == f"/repos/{PROJECT}/pulls"
        assert forge.violations == []
    finally:
        forge.stop()


async def test_another_process_acts_as_a_person(forge: ForgeEmulator) -> None:
    first = await open_change(forge)
    async with httpx.AsyncClient() as http:
        merged = await http.post(
            f"{forge.url}/-/person/merge",
            json={"project": PROJECT, "number": first.number, "user": "carol", "method": "squash"},
        )
        assert merged.json() == {"state": "merged", "mergeCommit": head(forge), "closedBy": "carol"}
        again = await http.post(
            f"{forge.url}/-/person/merge",
            json={"project": PROJECT, "number": first.number, "user": "carol"},
        )
        assert again.status_code == 409
    assert (await client(forge).get_pull_request(first.number)).closed_by == "carol"


def test_git_over_smart_http_pushes_with_a_token(forge: ForgeEmulator, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", forge.repo_url(PROJECT), str(work))  # reading is anonymous
    (work / "new.txt").write_text("pushed\n")
    git(work, "add", "new.txt")
    git(work, "commit", "--quiet", "-m", "Pushed over HTTP")
    with pytest.raises(GitFailure, match="could not read Username"):  # asked for one
        git(work, "push", "--quiet", "origin", "HEAD:refs/heads/pushed")
    authenticated = forge.repo_url(PROJECT).replace("http://", f"http://bot:{TOKEN}@")
    git(work, "push", "--quiet", authenticated, "HEAD:refs/heads/pushed")
    assert forge.store.branch_head(PROJECT, "pushed") == git(work, "rev-parse", "HEAD")


async def test_gitlab_subgroups(tmp_path: Path) -> None:
    forge = ForgeEmulator("gitlab", tmp_path / "forge")
    try:
        project = "platform/team/gitops"
        forge.add_repo(project)
        forge.commit_to(project, "stage/prod", {"prod/values.yaml": "image: v2\n"})
        credentials = CredentialStore(None, git_fallback=GitCredentials("bot", TOKEN))
        gitlab = forge_for(forge.repo_url(project), "gitlab", credentials=credentials)
        opened = await gitlab.open_pull_request(
            source="stage/prod", target="main", title="t", description="", labels=["promotion"]
        )
        assert opened.url == forge.web_url(project, 1)
        assert (
            forge.requests[-1]
            .environ["RAW_URI"]
            .startswith("/api/v4/projects/platform%2Fteam%2Fgitops/merge_requests")
        )
        merged = await gitlab.merge_pull_request(opened.number, method="squash")
        assert merged.merge_commit == forge.store.branch_head(project, "main")
        assert forge.violations == []
    finally:
        forge.stop()


# --- Bitbucket Cloud ----------------------------------------------------------------------------


async def test_bitbucket_finds_a_pull_request_pages_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bitbucket cannot filter by branch: the client follows ``next`` through the list.
    monkeypatch.setattr("activities.forges.bitbucket._PAGE", 1)
    forge = ForgeEmulator("bitbucket", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        for branch in ("stage/a", "stage/b", "stage/c"):
            forge.commit_to(PROJECT, branch, {f"{branch}.txt": "x\n"})
            forge.store.open(
                PROJECT, source=branch, target="main", title=branch, body="", author="d"
            )
        forge.close(PROJECT, 2, user="bob")
        bitbucket = client(forge)
        oldest = await bitbucket.find_pull_request(source="stage/a", target="main")
        assert oldest is not None and (oldest.number, oldest.state) == (1, "open")
        declined = await bitbucket.find_pull_request(source="stage/b", target="main")
        assert declined is not None and (declined.state, declined.closed_by) == ("closed", "bob")
        assert await bitbucket.find_pull_request(source="stage/a", target="other") is None
        pages = [r for r in forge.requests if r.path.endswith("/pullrequests")]
        assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in pages)
        assert sorted(pages[0].args.getlist("state")) == [
            "DECLINED",
            "MERGED",
            "OPEN",
            "SUPERSEDED",
        ]
        assert forge.violations == []
    finally:
        forge.stop()


async def test_bitbucket_merge_strategy_names_and_unawaitable_answers(tmp_path: Path) -> None:
    forge = ForgeEmulator("bitbucket", tmp_path / "forge")
    try:
        forge.add_repo(PROJECT)
        opened = await open_change(forge)
        with pytest.raises(PullRequestError, match="merge_commit"):  # Kargo's names: refused
            await client(forge).merge_pull_request(opened.number, method="merge")
        assert forge.pull(PROJECT, opened.number).state == "open"
        assert not any(r.path.endswith("/merge") for r in forge.requests)

        # What the emulator cannot be made to answer: a draft, a merge Bitbucket finishes in
        # the background (202). Both are "not yet", as in Kargo, never a merge commit.
        draft = {"draft": True}

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/merge"):
                return httpx.Response(202, headers={"Location": "http://bitbucket.test/task"})
            upstream = httpx.get(
                str(request.url).replace("http://bitbucket.test/2.0", forge.api_url),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            return httpx.Response(200, json={**upstream.json(), **draft})

        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            for is_draft, words in ((True, "is a draft"), (False, "in the background")):
                draft["draft"] = is_draft
                with pytest.raises(PullRequestNotReady, match=words):
                    await client(
                        forge, http=http, api_base_url="http://bitbucket.test/2.0"
                    ).merge_pull_request(opened.number, method=None)
        assert forge.pull(PROJECT, opened.number).state == "open"
    finally:
        forge.stop()


# --- Azure DevOps -------------------------------------------------------------------------------


async def test_azure_legacy_urls_basic_auth_and_the_sign_in_page() -> None:
    """What no emulator request shows: a visualstudio.com URL's API on dev.azure.com, the PAT as
    Basic with no user name, and Azure's 203 sign-in page for a PAT it does not take."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(203, text="<html>Sign in</html>")

    credentials = CredentialStore(None, git_fallback=GitCredentials("", "pat-secret"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        azure = forge_for(
            "https://acme.visualstudio.com/Ops/_git/gitops",
            None,
            credentials=credentials,
            http=http,
        )
        with pytest.raises(CredentialError, match="refused the worker's token") as caught:
            await azure.get_pull_request(3)
    assert "pat-secret" not in str(caught.value)
    (request,) = seen
    assert str(request.url) == (
        "https://dev.azure.com/acme/Ops/_apis/git/repositories/gitops/pullrequests/3"
        "?api-version=7.1"
    )
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b":pat-secret").decode()


API_PATHS = {
    "github": "/repos/o/r/pulls",
    "gitlab": "/api/v4/projects/1/merge_requests",
    "gitea": "/api/v1/repos/o/r/pulls",
    "bitbucket": "/2.0/repositories/o/r/pullrequests",
    "azure": "/o/p/_apis/git/repositories/r/pullrequests",
}


@pytest.mark.parametrize("kind", sorted(API_PATHS))
def test_every_forge_checks_its_api_against_a_description(kind: str, tmp_path: Path) -> None:
    """The emulator's answers are only as good as its checks: each flavour checks its
    pull-request API against a description of it."""
    emulator = ForgeEmulator(kind, tmp_path / "forge", token=TOKEN)  # type: ignore[arg-type]
    try:
        request = Request(EnvironBuilder(path=API_PATHS[kind]).get_environ())
        assert emulator._flavour.spec_for(request) is not None
    finally:
        emulator.stop()
