"""Gitea's (and Forgejo's) pull requests over its REST API v1.

As Kargo's provider: labels are resolved to the repository's label IDs first (a missing one
is an error naming it); open with ``POST /repos/{owner}/{repo}/pulls``, whose 409 "pull request
already exists" means the open one is found instead; find by listing
``GET .../pulls?state=all&base_branch=`` and matching the head branch; merge with
``POST .../pulls/{n}/merge`` (``Do``: merge, squash, rebase or rebase-merge, with the head the
worker saw as ``head_commit_id``). Gitea's pull request does not say who closed one without
merging, so ``closed_by`` is then unknown.
"""

from __future__ import annotations

from typing import Any

from activities.forges.base import ForgeHttp
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import PullRequestError, PullRequestNotMergeable, PullRequestNotReady

__all__ = ["Gitea"]

MERGE_METHODS = ("merge", "squash", "rebase", "rebase-merge")
_PAGE = 50
_MAX_PAGES = 20
"""Pages of pull requests looked through when finding one (the newest 1000)."""


class Gitea:
    """One Gitea repository ``owner/name`` through ``http``."""

    provider = "gitea"

    def __init__(self, http: ForgeHttp, owner: str, name: str) -> None:
        self._http = http
        self.repository = f"{owner}/{name}"
        self._repo = f"/repos/{owner}/{name}"

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        what = f"opening a pull request {source} → {target}"
        request: dict[str, Any] = {
            "head": source,
            "base": target,
            "title": title,
            "body": description,
        }
        if labels:
            request["labels"] = await self._label_ids(labels)
        response = await self._http.request(
            "POST", f"{self._repo}/pulls", what=what, json=request, expect=(201, 409)
        )
        if response.status_code == 409:
            existing = await self._find(source=source, target=target, state="open")
            if existing is None:
                raise self._http.error(response, what)
            return existing
        return _convert(response.json())

    async def _label_ids(self, names: list[str]) -> list[int]:
        response = await self._http.request(
            "GET", f"{self._repo}/labels", what="labels", params={"limit": _PAGE}
        )
        known = {label["name"]: int(label["id"]) for label in response.json()}
        missing = [name for name in names if name not in known]
        if missing:
            raise PullRequestError(
                f"gitea repository {self.repository}: labels not found: {', '.join(missing)}"
            )
        return list(dict.fromkeys(known[name] for name in names))

    async def get_pull_request(self, number: int) -> PullRequest:
        response = await self._http.request(
            "GET", f"{self._repo}/pulls/{number}", what=f"pull request #{number}"
        )
        return _convert(response.json())

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        return await self._find(source=source, target=target, state="all")

    async def _find(self, *, source: str, target: str, state: str) -> PullRequest | None:
        for page in range(1, _MAX_PAGES + 1):
            response = await self._http.request(
                "GET",
                f"{self._repo}/pulls",
                what=f"pull requests {source} → {target}",
                params={"state": state, "base_branch": target, "page": page, "limit": _PAGE},
            )
            found = [
                pull
                for pull in response.json()
                if pull["head"]["ref"] == source and pull["base"]["ref"] == target
            ]
            if found:
                return _convert(max(found, key=lambda pull: int(pull["number"])))
            if len(response.json()) < _PAGE:
                return None
        return None

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        self._http.check_merge_method(method, MERGE_METHODS)
        pull = await self.get_pull_request(number)
        if pull.state == "merged":
            return pull
        self._http.refuse_closed(pull, f"pull request #{number}")
        what = f"merging pull request #{number}"
        response = await self._http.request(
            "POST",
            f"{self._repo}/pulls/{number}/merge",
            what=what,
            json={"Do": method or "merge", "head_commit_id": pull.head_sha},
            expect=(200, 405, 409),
        )
        if response.status_code == 405:
            # Gitea's 405: not mergeable yet (approvals, checks, a draft); a conflict is 409.
            raise PullRequestNotReady(f"{self._http.error(response, what)} ({pull.url})")
        if response.status_code != 200:
            raise PullRequestNotMergeable(f"{self._http.error(response, what)} ({pull.url})")
        return await self.get_pull_request(number)


def _convert(body: dict[str, Any]) -> PullRequest:
    merged = bool(body.get("merged"))
    state = "merged" if merged else "open" if body["state"] == "open" else "closed"
    merger = body.get("merged_by") if merged else None
    return PullRequest(
        number=int(body["number"]),
        url=str(body["html_url"]),
        state=state,
        merge_commit=body.get("merge_commit_sha") if merged else None,
        head_sha=body["head"]["sha"],
        source_branch=body["head"]["ref"],
        target_branch=body["base"]["ref"],
        closed_by=merger["login"] if merger else None,
        mergeable=bool(body.get("mergeable")) if state == "open" else None,
    )
