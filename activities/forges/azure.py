"""Azure DevOps Services' pull requests over its Git REST API (``api-version=7.1``).

As Kargo v1.11's provider (``pkg/gitprovider/azure``, through Microsoft's Go SDK):

* a repository URL is ``https://dev.azure.com/{org}/{project}/_git/{repo}`` or the legacy
  ``https://{org}.visualstudio.com/{project}/_git/{repo}``; the API is
  ``https://dev.azure.com/{org}/{project}/_apis/git/repositories/{repo}`` either way;
* the token (the git credential's password: a personal access token) is sent as HTTP Basic
  with an empty user name, as the SDK's PAT connection sends it;
* open with ``POST .../pullrequests`` (``refs/heads/`` source and target, title, description,
  labels as tags); Azure's 409 (TF401179, one is already active for the pair) means the active
  one is found instead;
* find with ``GET .../pullrequests?searchCriteria.sourceRefName=&searchCriteria.targetRefName=
  &searchCriteria.status=all``;
* a pull request is open when ``active``, merged when ``completed``, closed without merging
  when ``abandoned``; its URL is ``repository.webUrl`` + ``/pullrequest/{id}``; the merge commit
  is ``lastMergeCommit``, the head ``lastMergeSourceCommit``; who closed it ``closedBy``;
* merge by ``PATCH .../pullrequests/{id}`` with ``status: completed``, the head the worker read
  as ``lastMergeSourceCommit`` (a push in between is Azure's refusal, not a merge of something
  nobody reviewed) and ``completionOptions.mergeStrategy`` (``noFastForward``, ``rebase``,
  ``rebaseMerge``, ``squash``: Azure does not check it, so this client does, as Kargo's). A
  draft, or a ``mergeStatus`` other than ``succeeded`` (still computing), is not ready;
  ``conflicts`` is not mergeable. Azure completes asynchronously: the pull request is read
  again up to :data:`COMPLETION_READS` times, a second apart, as Kargo does; still active is
  not ready. A refusal naming the branch policies (approvals, builds) is not ready either.

Azure answers a refused PAT with 401, or with 203 and its sign-in page: both are the
credential's fault.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from activities.forges.base import ForgeHttp, forge_message
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import (
    CredentialError,
    PullRequestError,
    PullRequestNotMergeable,
    PullRequestNotReady,
)

__all__ = ["MERGE_STRATEGIES", "AzureDevOps"]

API_VERSION = "7.1"
MERGE_STRATEGIES = ("noFastForward", "rebase", "rebaseMerge", "squash")
COMPLETION_READS = 10
_HEADS = "refs/heads/"


class AzureDevOps:
    """One Azure DevOps repository ``{org}/{project}/{repo}`` through ``http``."""

    provider = "azure"

    def __init__(self, http: ForgeHttp, org: str, project: str, repo: str) -> None:
        self._http = http
        self.repository = f"{org}/{project}/{repo}"
        self._repo = "/".join(
            (
                "",
                quote(org, safe=""),
                quote(project, safe=""),
                "_apis/git/repositories",
                quote(repo, safe=""),
            )
        )

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> Any:
        response = await self._http.request(
            method,
            f"{self._repo}{path}",
            what=what,
            json=json,
            params={**(params or {}), "api-version": API_VERSION},
            expect=(*expect, 203),
        )
        if response.status_code == 203:
            # Azure's sign-in page for a PAT it does not take.
            raise CredentialError(
                f"{self._http.where}: the forge refused the worker's token for {what} (203)"
            )
        return response

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        what = f"opening a pull request {source} → {target}"
        request: dict[str, Any] = {
            "sourceRefName": _HEADS + source,
            "targetRefName": _HEADS + target,
            "title": title,
            "description": description,
        }
        if labels:
            request["labels"] = [{"name": label} for label in labels]
        response = await self._call(
            "POST", "/pullrequests", what=what, json=request, expect=(201, 409)
        )
        if response.status_code == 409:
            existing = await self._find(source=source, target=target, status="active")
            if existing is None:
                raise self._http.error(response, what)
            return existing
        return _convert(response.json())

    async def get_pull_request(self, number: int) -> PullRequest:
        return _convert(await self._read(number))

    async def _read(self, number: int) -> dict[str, Any]:
        response = await self._call(
            "GET", f"/pullrequests/{number}", what=f"pull request #{number}"
        )
        body: dict[str, Any] = response.json()
        return body

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        return await self._find(source=source, target=target, status="all")

    async def _find(self, *, source: str, target: str, status: str) -> PullRequest | None:
        response = await self._call(
            "GET",
            "/pullrequests",
            what=f"pull requests {source} → {target}",
            params={
                "searchCriteria.sourceRefName": _HEADS + source,
                "searchCriteria.targetRefName": _HEADS + target,
                "searchCriteria.status": status,
                "$top": 100,
            },
        )
        found = response.json().get("value") or []
        if not found:
            return None
        return _convert(max(found, key=lambda pull: int(pull["pullRequestId"])))

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        if method is not None and method not in MERGE_STRATEGIES:
            raise PullRequestError(
                f"{self._http.where}: merge method {method!r} is not one of Azure DevOps' merge "
                f"strategies ({', '.join(MERGE_STRATEGIES)})"
            )
        body = await self._read(number)
        pull = _convert(body)
        if pull.state == "merged":
            return pull
        self._http.refuse_closed(pull, f"pull request #{number}")
        where = f"{self._http.where}: pull request #{number}"
        merge_status = body.get("mergeStatus")
        if body.get("isDraft"):
            raise PullRequestNotReady(f"{where} is a draft ({pull.url})")
        if merge_status == "conflicts":
            raise PullRequestNotMergeable(
                f"{where} has conflicts with {pull.target_branch} ({pull.url})"
            )
        if merge_status != "succeeded":
            raise PullRequestNotReady(
                f"{where} is not ready to merge: merge status {merge_status} ({pull.url})"
            )
        request: dict[str, Any] = {
            "status": "completed",
            "lastMergeSourceCommit": {"commitId": pull.head_sha},
        }
        if method is not None:
            request["completionOptions"] = {"mergeStrategy": method}
        what = f"merging pull request #{number}"
        response = await self._call(
            "PATCH",
            f"/pullrequests/{number}",
            what=what,
            json=request,
            expect=(200, 400, 409),
        )
        if response.status_code != 200:
            error = f"{self._http.error(response, what)} ({pull.url})"
            if "polic" in forge_message(response).lower():  # branch policies not met yet
                raise PullRequestNotReady(error)
            raise PullRequestNotMergeable(error)
        merged = _convert(response.json())
        for _ in range(COMPLETION_READS):
            if merged.state != "open":
                break
            await asyncio.sleep(1.0)
            merged = await self.get_pull_request(number)
        if merged.state != "merged":
            raise PullRequestNotReady(f"{where} is still being completed ({pull.url})")
        return merged


def _convert(body: dict[str, Any]) -> PullRequest:
    status = body.get("status")
    state = "open" if status == "active" else "merged" if status == "completed" else "closed"
    closer = body.get("closedBy") if state != "open" else None
    web = str((body.get("repository") or {}).get("webUrl") or "")
    return PullRequest(
        number=int(body["pullRequestId"]),
        url=f"{web}/pullrequest/{body['pullRequestId']}",
        state=state,
        merge_commit=(body.get("lastMergeCommit") or {}).get("commitId")
        if state == "merged"
        else None,
        head_sha=(body.get("lastMergeSourceCommit") or {}).get("commitId"),
        source_branch=str(body.get("sourceRefName", "")).removeprefix(_HEADS),
        target_branch=str(body.get("targetRefName", "")).removeprefix(_HEADS),
        closed_by=(closer.get("uniqueName") or closer.get("displayName"))
        if isinstance(closer, dict)
        else None,
        mergeable=_mergeable(body.get("mergeStatus")) if state == "open" else None,
    )


def _mergeable(status: Any) -> bool | None:
    if status == "succeeded":
        return True
    if status in ("conflicts", "rejectedByPolicy", "failure"):
        return False
    return None
