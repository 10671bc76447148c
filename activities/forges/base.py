"""What every forge client shares: the interface, HTTP with bounded rate-limit retries, and the
mapping of a forge's answers onto Freightline's errors.

Errors, for every provider alike (``freightline.errors``):

* 401, 403 → :class:`CredentialError` (not retried): the token is wrong or may not do it;
* 404 → :class:`NotFoundError` naming the repository (and the pull request);
* 405, 409 on a merge → :class:`PullRequestNotMergeable`; other 4xx → :class:`PullRequestError`
  (as are a merge method the forge lacks and a pull request closed without merging);
* 429, and GitHub's 403 "secondary rate limit" → waited out per ``Retry-After`` (or
  ``X-RateLimit-Reset``), at most :data:`MAX_RATE_LIMIT_WAITS` times and
  :data:`MAX_RETRY_AFTER` seconds each, then :class:`ForgeUnavailableError`;
* 5xx, timeouts, refused connections → :class:`ForgeUnavailableError` (the activity retries).

No message carries the token: errors hold the status, the forge's message and the URL path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from freightline.contracts.pull_requests import PullRequest
from freightline.errors import (
    CredentialError,
    ForgeUnavailableError,
    NotFoundError,
    PullRequestError,
    PullRequestNotMergeable,
)
from freightline.logging import get_logger

__all__ = [
    "MAX_RATE_LIMIT_WAITS",
    "MAX_RETRY_AFTER",
    "Forge",
    "ForgeHttp",
    "PullRequest",
]

MAX_RATE_LIMIT_WAITS = 3
"""How many rate-limit answers one call waits out before giving up (the activity retries)."""
MAX_RETRY_AFTER = 60.0
"""The longest a single wait lasts, whatever the forge asks (longer: give up, retry later)."""
DEFAULT_RETRY_AFTER = 5.0
"""The wait when a rate-limit answer says nothing about when to come back."""

log = get_logger("activities.forges")

_NAMES = {
    "github": "GitHub",
    "gitlab": "GitLab",
    "gitea": "Gitea",
    "bitbucket": "Bitbucket",
    "azure": "Azure DevOps",
}


class Forge(Protocol):
    """A forge's pull requests for one repository."""

    provider: str

    async def open_pull_request(
        self, *, source: str, target: str, title: str, description: str, labels: list[str]
    ) -> PullRequest:
        """Open source → target; if one is already open for that pair, return it instead."""
        ...

    async def get_pull_request(self, number: int) -> PullRequest: ...

    async def find_pull_request(self, *, source: str, target: str) -> PullRequest | None:
        """The newest pull request source → target, open or not (None: there is none)."""
        ...

    async def merge_pull_request(self, number: int, *, method: str | None) -> PullRequest:
        """Merge it (``method``: the forge's merge method, None for its default); one already
        merged is returned with its merge commit."""
        ...


Sleep = Callable[[float], Awaitable[None]]


class ForgeHttp:
    """Requests to one forge API with one token: rate limits waited out, errors mapped."""

    def __init__(
        self,
        *,
        provider: str,
        api_url: str,
        headers: dict[str, str],
        auth: Callable[[], dict[str, str]],
        repository: str,
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        timeout: float = 30.0,
    ) -> None:
        self.provider = provider
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._headers = headers
        self._auth = auth
        self._auth_headers: dict[str, str] | None = None
        self._http = http
        self._sleep = sleep
        self._timeout = timeout

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        """``method path``; an answer in ``expect`` is returned, any other one handled as the
        module says (``what`` names the object in errors: "pull request #3")."""
        url = f"{self.api_url}{path}"
        waits = 0
        while True:
            try:
                response = await self._send(method, url, json=json, params=params)
            except httpx.TimeoutException:
                raise ForgeUnavailableError(
                    f"{self.provider} API {self.api_url}: timed out ({method} {what})"
                ) from None
            except httpx.TransportError as err:
                raise ForgeUnavailableError(
                    f"{self.provider} API {self.api_url}: unreachable ({type(err).__name__})"
                ) from None
            if response.status_code in expect:
                return response
            delay = rate_limit_delay(response)
            if delay is None:
                raise self.error(response, what)
            if waits >= MAX_RATE_LIMIT_WAITS or delay > MAX_RETRY_AFTER:
                raise ForgeUnavailableError(
                    f"{self.provider} API {self.api_url}: rate limited ({response.status_code}) "
                    f"after {waits} waits; retry after {delay:.0f}s"
                )
            waits += 1
            log.info(
                "forge rate limit",
                provider=self.provider,
                status=response.status_code,
                retry_after=delay,
                attempt=waits,
            )
            await self._sleep(delay)

    async def _send(
        self, method: str, url: str, *, json: Any, params: dict[str, Any] | None
    ) -> httpx.Response:
        if self._auth_headers is None:
            # Resolving may mint a GitHub App token (blocking HTTPS): off the event loop.
            self._auth_headers = await asyncio.to_thread(self._auth)
        headers = {**self._headers, **self._auth_headers}
        if self._http is not None:
            return await self._http.request(method, url, json=json, params=params, headers=headers)
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            return await client.request(method, url, json=json, params=params, headers=headers)

    @property
    def where(self) -> str:
        """The repository as errors name it: "github repository acme/gitops"."""
        return f"{self.provider} repository {self.repository}"

    def check_merge_method(self, method: str | None, methods: tuple[str, ...]) -> None:
        """:class:`PullRequestError` for a merge ``method`` not among the forge's ``methods``
        (None: the forge's default, always fine)."""
        if method is not None and method not in methods:
            raise PullRequestError(
                f"{self.where}: merge method {method!r} is not one of "
                f"{_NAMES[self.provider]}'s ({', '.join(methods)})"
            )

    def refuse_closed(self, pull: PullRequest, what: str) -> None:
        """:class:`PullRequestNotMergeable` if ``pull`` (``what``: "pull request #3") was
        closed without merging: no retry merges it."""
        if pull.state == "closed":
            by = f" by {pull.closed_by}" if pull.closed_by else ""
            raise PullRequestNotMergeable(
                f"{self.where}: {what} was closed{by} without merging ({pull.url})"
            )

    def error(self, response: httpx.Response, what: str) -> Exception:
        """The Freightline error for a forge's error answer (never the token)."""
        status = response.status_code
        message = forge_message(response)
        where = self.where
        detail = f"{status} {message}".strip()
        if status == 401:
            return CredentialError(
                f"{where}: the forge refused the worker's token for {what} ({detail})"
            )
        if status == 403:
            return CredentialError(
                f"{where}: the worker's token may not do that: {what} ({detail})"
            )
        if status == 404:
            return NotFoundError(f"{where}: {what} not found ({detail})")
        if status >= 500:
            return ForgeUnavailableError(f"{where}: {what}: the forge answered {detail}")
        return PullRequestError(f"{where}: {what}: {detail}")


def forge_message(response: httpx.Response) -> str:
    """The forge's words: GitHub's and Gitea's ``message`` (with GitHub's ``errors``),
    GitLab's ``message`` or ``error`` (a string, a list or a field map), Bitbucket's
    ``error.message`` (with its ``detail``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    message = body.get("message", body.get("error", ""))
    if isinstance(message, dict) and isinstance(message.get("message"), str):
        detail = message.get("detail")
        message = message["message"] + (f": {detail}" if isinstance(detail, str) else "")
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    elif isinstance(message, dict):
        message = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in message.items())
    errors = body.get("errors")
    if isinstance(errors, list):
        details = [str(e.get("message") or e.get("code")) for e in errors if isinstance(e, dict)]
        if details:
            message = f"{message}: {'; '.join(details)}"
    return str(message)[:500]


def rate_limit_delay(
    response: httpx.Response, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait if ``response`` is a rate limit, else None.

    429 is one on every forge; GitHub also answers 403 for its secondary rate limit (with
    ``Retry-After``, or a message saying so) and for its primary one
    (``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset``).
    """
    status = response.status_code
    if status not in (403, 429):
        return None
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return DEFAULT_RETRY_AFTER  # an HTTP date: rare from forges; wait the default
    if response.headers.get("X-RateLimit-Remaining") == "0":
        reset = response.headers.get("X-RateLimit-Reset", "")
        if reset.isdigit():
            return max(0.0, int(reset) - now())
        return DEFAULT_RETRY_AFTER
    if status == 429 or "rate limit" in forge_message(response).lower():
        return DEFAULT_RETRY_AFTER
    return None
