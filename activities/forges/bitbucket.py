"""Bitbucket Cloud's pull requests over its REST API 2.0 (``https://api.bitbucket.org/2.0``).

As Kargo v1.11's provider (``pkg/gitprovider/bitbucket/cloud``):

* the token (the git credential's password: a repository, project or workspace access
  token) is sent as ``Authorization: Bearer``, whatever the credential's user name;
* open with ``POST /repositories/{workspace}/{repo_slug}/pullrequests`` (title, description,
  source and destination branch). Bitbucket has no labels: they are ignored, as Kargo ignores
  them (with a log line saying so);
* find by listing ``GET .../pullrequests`` with one ``state`` parameter per state and matching
  the branches here (the API cannot filter by branch, Kargo notes); Kargo reads the first page
  only, this client follows ``next`` for up to :data:`_MAX_PAGES` pages;
* a pull request is open when ``OPEN`` (or ``DRAFT``/``QUEUED``), merged when ``MERGED``, closed
  without merging when ``DECLINED`` or ``SUPERSEDED``; its URL is ``links.html.href``; who
  merged or declined it is ``closed_by``;
* Bitbucket answers an abbreviated ``merge_commit.hash``: the full one is read from
  ``GET .../commit/{hash}``. ``source.commit.hash`` (the head) stays abbreviated, as in Kargo;
* merge with ``POST .../pullrequests/{id}/merge`` (``merge_strategy``: one of Bitbucket's six,
  none for the destination branch's default). A draft is not ready (Kargo: not merged, no
  error); a 202 (Bitbucket merging in the background) is not ready either: the merge is read
  back next time. Bitbucket's merge call takes no expected head commit and its pull request has
  no mergeable flag (Kargo: "BCLOUD-22014"), so refusals are told apart by status: 409 (a ref
  moved during the merge) is not ready, 400 (a conflict, unmet merge checks) is not mergeable
  unless Bitbucket's words name approvals or merge checks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from activities.forges.base import ForgeHttp, forge_message, log
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import PullRequestError, PullRequestNotMergeable, PullRequestNotReady

__all__ = ["MERGE_STRATEGIES", "BitbucketCloud"]

MERGE_STRATEGIES = (
    "merge_commit",
    "squash",
    "fast_forward",
    "squash_fast_forward",
    "rebase_fast_forward",
    "rebase_merge",
)
_OPEN = ("OPEN", "DRAFT", "QUEUED")
_CLOSED = ("DECLINED", "SUPERSEDED")
_PAGE = 50
_MAX_PAGES = 20
"""Pages of pull requests looked through when finding one (the 1000 Bitbucket lists first)."""
_NOT_READY_WORDS = ("approval", "merge check", "build")


class BitbucketCloud:
    """One Bitbucket Cloud repository ``workspace/repo_slug`` through ``http``."""

    provider = "bitbucket"

    def __init__(self, http: ForgeHttp, workspace: str, slug: str) -> None:
        self._http = http
        self.repository = f"{workspace}/{slug}"
        self._repo = f"/repositories/{quote(workspace, safe='')}/{quote(slug, safe='')}"

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        if labels:
            log.info("bitbucket has no pull request labels; ignored", labels=labels)
        request: dict[str, Any] = {
            "type": "pullrequest",
            "title": title,
            "source": {"branch": {"name": source}},
            "destination": {"branch": {"name": target}},
        }
        if description:
            request["description"] = description
        # Bitbucket answers a second request for an open source → destination pair with that
        # pull request (updated), not an error: a retried open converges by itself.
        response = await self._http.request(
            "POST",
            f"{self._repo}/pullrequests",
            what=f"opening a pull request {source} → {target}",
            json=request,
            expect=(200, 201),
        )
        return await self._convert(response.json())

    async def get_pull_request(self, number: int) -> PullRequest:
        return await self._convert(await self._read(number))

    async def _read(self, number: int) -> dict[str, Any]:
        response = await self._http.request(
            "GET", f"{self._repo}/pullrequests/{number}", what=f"pull request #{number}"
        )
        body: dict[str, Any] = response.json()
        return body

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        path = f"{self._repo}/pullrequests"
        params: dict[str, Any] | None = {"state": ["OPEN", "MERGED", *_CLOSED], "pagelen": _PAGE}
        found: list[dict[str, Any]] = []
        for _ in range(_MAX_PAGES):
            response = await self._http.request(
                "GET", path, what=f"pull requests {source} → {target}", params=params
            )
            page = response.json()
            found += [
                pull
                for pull in page.get("values") or []
                if _branch(pull, "source") == source and _branch(pull, "destination") == target
            ]
            following = page.get("next")
            if not following:
                break
            # ``next`` is absolute and carries its own query; it is the API's, under api_url.
            parts = urlsplit(str(following))
            path = parts.path.removeprefix(urlsplit(self._http.api_url).path)
            path += f"?{parts.query}" if parts.query else ""
            params = None
        if not found:
            return None
        return await self._convert(max(found, key=lambda pull: int(pull["id"])))

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        if method is not None and method not in MERGE_STRATEGIES:
            raise PullRequestError(
                f"{self._http.where}: merge method {method!r} is not one of Bitbucket's merge "
                f"strategies ({', '.join(MERGE_STRATEGIES)})"
            )
        body = await self._read(number)
        pull = await self._convert(body)
        if pull.state == "merged":
            return pull
        self._http.refuse_closed(pull, f"pull request #{number}")
        where = f"{self._http.where}: pull request #{number}"
        if body.get("draft") or body.get("state") == "DRAFT":
            raise PullRequestNotReady(f"{where} is a draft ({pull.url})")
        request: dict[str, Any] = {"type": "pullrequestMergeParameters"}
        if method is not None:
            request["merge_strategy"] = method
        what = f"merging pull request #{number}"
        response = await self._http.request(
            "POST",
            f"{self._repo}/pullrequests/{number}/merge",
            what=what,
            json=request,
            expect=(200, 202, 400, 409),
        )
        if response.status_code == 202:
            raise PullRequestNotReady(f"{where} is being merged in the background ({pull.url})")
        if response.status_code != 200:
            error = f"{self._http.error(response, what)} ({pull.url})"
            words = forge_message(response).lower()
            if response.status_code == 409 or any(w in words for w in _NOT_READY_WORDS):
                raise PullRequestNotReady(error)
            raise PullRequestNotMergeable(error)
        merged = await self._convert(response.json())
        if merged.state != "merged":
            raise PullRequestError(f"{where}: still {merged.state} after Bitbucket merged it")
        return merged

    async def _full_hash(self, commit: str) -> str:
        response = await self._http.request(
            "GET", f"{self._repo}/commit/{quote(commit, safe='')}", what=f"commit {commit}"
        )
        return str(response.json()["hash"])

    async def _convert(self, body: dict[str, Any]) -> PullRequest:
        raw = body.get("state")
        state = "open" if raw in _OPEN else "merged" if raw == "MERGED" else "closed"
        merge_commit = _get(body, "merge_commit", "hash") if state == "merged" else None
        if merge_commit:
            merge_commit = await self._full_hash(str(merge_commit))
        closer = body.get("closed_by") if state != "open" else None
        return PullRequest(
            number=int(body["id"]),
            url=str(_get(body, "links", "html", "href") or ""),
            state=state,
            merge_commit=merge_commit or None,
            head_sha=_get(body, "source", "commit", "hash"),
            source_branch=_branch(body, "source") or "",
            target_branch=_branch(body, "destination") or "",
            closed_by=(closer.get("nickname") or closer.get("display_name"))
            if isinstance(closer, dict)
            else None,
        )


def _get(body: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def _branch(body: dict[str, Any], end: str) -> str | None:
    name = _get(body, end, "branch", "name")
    return str(name) if name is not None else None
