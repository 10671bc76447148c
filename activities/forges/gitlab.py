"""GitLab's merge requests over its REST API v4.

As Kargo's provider: the project is named by its URL-encoded path; open with
``POST /projects/{id}/merge_requests`` (labels comma-separated); find with
``GET .../merge_requests?source_branch=&target_branch=``; merge with
``PUT .../merge_requests/{iid}/merge`` (``squash: true`` for the ``squash`` method; GitLab
has no rebase merge through this call), passing the head the worker saw as ``sha`` so a push
in between is GitLab's 409. A squash's commit is ``squash_commit_sha`` when there is no merge
commit (a fast-forward project).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from activities.forges.base import ForgeHttp, forge_message
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import PullRequestNotMergeable, PullRequestNotReady

__all__ = ["GitLab"]

MERGE_METHODS = ("merge", "squash")


class GitLab:
    """One GitLab project ``group/…/name`` through ``http``."""

    provider = "gitlab"

    def __init__(self, http: ForgeHttp, project: str) -> None:
        self._http = http
        self.project = project
        self._base = f"/projects/{quote(project, safe='')}/merge_requests"

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        what = f"opening a merge request {source} → {target}"
        request: dict[str, Any] = {
            "source_branch": source,
            "target_branch": target,
            "title": title,
            "description": description,
        }
        if labels:
            request["labels"] = ",".join(labels)
        response = await self._http.request(
            "POST", self._base, what=what, json=request, expect=(201, 409)
        )
        if response.status_code == 409:
            # "Another open merge request already exists for this source branch: !N"
            existing = await self._find(source=source, target=target, state="opened")
            if existing is None:
                raise self._http.error(response, what)
            return existing
        return _convert(response.json())

    async def get_pull_request(self, number: int) -> PullRequest:
        return (await self._read(number))[0]

    async def _read(self, number: int) -> tuple[PullRequest, str | None]:
        """The merge request and its ``detailed_merge_status``."""
        response = await self._http.request(
            "GET", f"{self._base}/{number}", what=f"merge request !{number}"
        )
        body = response.json()
        return _convert(body), body.get("detailed_merge_status")

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        return await self._find(source=source, target=target, state="all")

    async def _find(self, *, source: str, target: str, state: str) -> PullRequest | None:
        response = await self._http.request(
            "GET",
            self._base,
            what=f"merge requests {source} → {target}",
            params={
                "source_branch": source,
                "target_branch": target,
                "state": state,
                "order_by": "created_at",
                "sort": "desc",
                "per_page": 20,
            },
        )
        found = response.json()
        if not found:
            return None
        return _convert(max(found, key=lambda mr: int(mr["iid"])))

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        self._http.check_merge_method(method, MERGE_METHODS)
        pull, status = await self._read(number)
        if pull.state == "merged":
            return pull
        self._http.refuse_closed(pull, f"merge request !{number}")
        where = f"{self._http.where}: merge request !{number}"
        if status in ("conflict", "need_rebase"):
            raise PullRequestNotMergeable(f"{where} cannot be merged: {status} ({pull.url})")
        if status not in ("mergeable", None):
            raise PullRequestNotReady(f"{where} is not ready to merge: {status} ({pull.url})")
        request: dict[str, Any] = {"sha": pull.head_sha}
        if method == "squash":
            request["squash"] = True
        what = f"merging merge request !{number}"
        response = await self._http.request(
            "PUT",
            f"{self._base}/{number}/merge",
            what=what,
            json=request,
            expect=(200, 405, 409, 422),
        )
        if response.status_code != 200:
            error = f"{self._http.error(response, what)} ({pull.url})"
            if response.status_code == 405 and "Branch cannot be merged" not in str(
                forge_message(response)
            ):
                # "Method Not Allowed": its merge status changed since it was read.
                raise PullRequestNotReady(error)
            raise PullRequestNotMergeable(error)
        return _convert(response.json())


def _convert(body: dict[str, Any]) -> PullRequest:
    state = {"opened": "open", "locked": "open", "merged": "merged"}.get(body["state"], "closed")
    closer = None
    if state == "merged":
        closer = body.get("merge_user") or body.get("merged_by")
    elif state == "closed":
        closer = body.get("closed_by")
    return PullRequest(
        number=int(body["iid"]),
        url=str(body["web_url"]),
        state=state,
        merge_commit=(body.get("merge_commit_sha") or body.get("squash_commit_sha"))
        if state == "merged"
        else None,
        head_sha=body.get("sha"),
        source_branch=body["source_branch"],
        target_branch=body["target_branch"],
        closed_by=closer["username"] if closer else None,
        mergeable=_mergeable(body) if state == "open" else None,
    )


def _mergeable(body: dict[str, Any]) -> bool | None:
    status = body.get("detailed_merge_status")
    if status in ("unchecked", "checking", "preparing", "approvals_syncing", None):
        return None
    return bool(status == "mergeable")
