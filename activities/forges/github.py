"""GitHub's (and GitHub Enterprise Server's) pull requests over its REST API.

As Kargo's provider: open with ``POST /repos/{owner}/{repo}/pulls`` then add the labels
(``POST .../issues/{n}/labels``); find with ``GET .../pulls?head=owner:branch&base=...``;
merge with ``PUT .../pulls/{n}/merge`` (``merge_method`` merge, squash or rebase, with the
head commit the worker saw as ``sha``, so a push in between is GitHub's 409, not a merge of
something nobody reviewed). Who closed a pull request without merging is the issue's
``closed_by``.

The git database calls (``/git/ref``, ``/git/refs``, ``/git/commits``) are ``github-push``'s
(:mod:`activities.github_push`): a ref in a path is one percent-encoded segment
(``heads%2Fmain``), as Octokit sends it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from activities.forges.base import ForgeHttp, forge_message
from freightline.contracts.pull_requests import PullRequest
from freightline.errors import PullRequestNotMergeable, PullRequestNotReady

__all__ = ["GitHub"]

MERGE_METHODS = ("merge", "squash", "rebase")
_NOT_READY = ("blocked", "behind", "draft")
"""``mergeable_state`` values that clear by themselves (Kargo's "not ready")."""
_TRANSIENT_405 = ("Base branch was modified", "review", "status check")


class GitHub:
    """One GitHub repository ``owner/name`` through ``http``."""

    provider = "github"

    def __init__(self, http: ForgeHttp, owner: str, name: str) -> None:
        self._http = http
        self.owner = owner
        self.name = name
        self._repo = f"/repos/{owner}/{name}"

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        response = await self._http.request(
            "POST",
            f"{self._repo}/pulls",
            what=f"opening a pull request {source} → {target}",
            json={"title": title, "head": source, "base": target, "body": description},
            expect=(201, 422),
        )
        body = response.json()
        if response.status_code == 422:
            existing = None
            if "already exists" in str(body):
                existing = await self._find(source=source, target=target, state="open")
            if existing is None:
                raise self._http.error(response, f"opening a pull request {source} → {target}")
            return existing
        if labels:
            await self._http.request(
                "POST",
                f"{self._repo}/issues/{body['number']}/labels",
                what=f"labelling pull request #{body['number']}",
                json={"labels": labels},
            )
        return self._convert(body, closed_by=None)

    async def get_pull_request(self, number: int) -> PullRequest:
        return (await self._read(number))[0]

    async def _read(self, number: int) -> tuple[PullRequest, str | None]:
        """The pull request and its ``mergeable_state`` (clean, dirty, blocked, ...)."""
        response = await self._http.request(
            "GET", f"{self._repo}/pulls/{number}", what=f"pull request #{number}"
        )
        body = response.json()
        closed_by = None
        if body.get("merged_by"):
            closed_by = body["merged_by"]["login"]
        elif body["state"] == "closed":
            issue = await self._http.request(
                "GET", f"{self._repo}/issues/{number}", what=f"pull request #{number}"
            )
            closer = issue.json().get("closed_by")
            closed_by = closer["login"] if closer else None
        return self._convert(body, closed_by=closed_by), body.get("mergeable_state")

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        return await self._find(source=source, target=target, state="all")

    async def _find(self, *, source: str, target: str, state: str) -> PullRequest | None:
        response = await self._http.request(
            "GET",
            f"{self._repo}/pulls",
            what=f"pull requests {source} → {target}",
            params={"head": f"{self.owner}:{source}", "base": target, "state": state},
        )
        found = response.json()
        if not found:
            return None
        newest = max(found, key=lambda pull: int(pull["number"]))
        return await self.get_pull_request(int(newest["number"]))

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        self._http.check_merge_method(method, MERGE_METHODS)
        pull, mergeable_state = await self._read(number)
        if pull.state == "merged":
            return pull
        self._http.refuse_closed(pull, f"pull request #{number}")
        where = f"{self._http.where}: pull request #{number}"
        if mergeable_state == "dirty":
            raise PullRequestNotMergeable(
                f"{where} has conflicts with {pull.target_branch} ({pull.url})"
            )
        if mergeable_state in _NOT_READY:
            raise PullRequestNotReady(
                f"{where} is not ready to merge: {mergeable_state} ({pull.url})"
            )
        request: dict[str, Any] = {"sha": pull.head_sha}
        if method is not None:
            request["merge_method"] = method
        what = f"merging pull request #{number}"
        response = await self._http.request(
            "PUT",
            f"{self._repo}/pulls/{number}/merge",
            what=what,
            json=request,
            expect=(200, 405, 409),
        )
        if response.status_code != 200:
            error = f"{self._http.error(response, what)} ({pull.url})"
            message = forge_message(response)
            # A 405 that clears by itself (Kargo retries "Base branch was modified" too): a
            # base that moved under the merge, a missing review or status check.
            if response.status_code == 405 and any(m in message for m in _TRANSIENT_405):
                raise PullRequestNotReady(error)
            raise PullRequestNotMergeable(error)
        return await self.get_pull_request(number)

    # --- the git database (github-push) ----------------------------------------

    async def ref_head(self, ref: str) -> str | None:
        """The commit ``ref`` (``heads/main``) names now, or None if there is no such ref."""
        response = await self._http.request(
            "GET",
            f"{self._repo}/git/ref/{quote(ref, safe='')}",
            what=f"ref {ref}",
            expect=(200, 404),
        )
        if response.status_code == 404:
            return None
        return str(response.json()["object"]["sha"])

    async def create_commit(
        self,
        *,
        tree: str,
        parents: list[str],
        message: str,
        author: dict[str, str] | None = None,
        committer: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A commit of ``tree`` on ``parents``: GitHub's answer (``sha``, ``verification``).
        Without ``author`` and ``committer`` GitHub attributes it to the token's account and
        signs it."""
        request: dict[str, Any] = {"message": message, "tree": tree, "parents": parents}
        if author is not None:
            request["author"] = author
        if committer is not None:
            request["committer"] = committer
        response = await self._http.request(
            "POST", f"{self._repo}/git/commits", what=f"a commit of tree {tree}", json=request
        )
        body: dict[str, Any] = response.json()
        return body

    async def create_ref(self, ref: str, sha: str) -> bool:
        """Create ``ref`` (``refs/heads/x``) at ``sha``; False if it exists already (422)."""
        response = await self._http.request(
            "POST",
            f"{self._repo}/git/refs",
            what=f"creating {ref}",
            json={"ref": ref, "sha": sha},
            expect=(201, 422),
        )
        return response.status_code == 201

    async def update_ref(self, ref: str, sha: str, *, force: bool) -> bool:
        """Move ``ref`` (``heads/x``) to ``sha``; False if GitHub refuses a move that is not a
        fast-forward (422) or the ref is gone."""
        response = await self._http.request(
            "PATCH",
            f"{self._repo}/git/refs/{quote(ref, safe='')}",
            what=f"updating {ref}",
            json={"sha": sha, "force": force},
            expect=(200, 422),
        )
        return response.status_code == 200

    async def delete_ref(self, ref: str) -> None:
        """Delete ``ref`` (``kargo/staging/x``); one already gone is fine (GitHub's 422)."""
        await self._http.request(
            "DELETE",
            f"{self._repo}/git/refs/{quote(ref, safe='')}",
            what=f"deleting {ref}",
            expect=(204, 422),
        )

    @staticmethod
    def _convert(body: dict[str, Any], *, closed_by: str | None) -> PullRequest:
        merged = bool(body.get("merged") or body.get("merged_at"))
        state = "merged" if merged else "open" if body["state"] == "open" else "closed"
        return PullRequest(
            number=int(body["number"]),
            url=str(body["html_url"]),
            state=state,
            merge_commit=body.get("merge_commit_sha") if merged else None,
            head_sha=body["head"]["sha"],
            source_branch=body["head"]["ref"],
            target_branch=body["base"]["ref"],
            closed_by=closed_by,
            mergeable=(
                bool(body.get("mergeable")) and body.get("mergeable_state") not in _NOT_READY
                if state == "open" and body.get("mergeable") is not None
                else None
            ),
        )
