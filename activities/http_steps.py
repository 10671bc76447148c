"""The ``http`` and ``http-download`` steps, as Kargo's (v1.11).

Both run in the worktree activity: ``http-download`` writes into the work tree,
and ``http``'s outputs feed the steps after it. What a retry of that activity
repeats is what Kargo repeats too: Kargo sends an ``http`` step's request again
on every reconciliation until the step ends, so the request may reach the
server more than once either way (make it idempotent, as Kargo's docs advise
for polling).

``http`` decides as Kargo does: ``failureExpression`` true ends it Failed (with
``errorExpression``'s message when it gives one); ``successExpression`` true
succeeds; neither defined, a 2xx succeeds; any other answer (an unmet
``successExpression``, a non-2xx without expressions) is asked again every
``pollInterval`` (at least 10 s, Kargo's lower bound) until the step's
``retry.timeout``, then the step ends Errored. Kargo without a ``retry.timeout``
asks forever; here the step runs inside the clone-to-push activity, so it asks
for at most :data:`DEFAULT_WAIT` and refuses a ``retry.timeout`` beyond
:data:`MAX_WAIT`. An abort ends the wait at once.

Responses are read up to 2 MiB (``http``, Kargo's limit) or 100 MiB
(``http-download``); more is an error, not a truncation. As Kargo's safe
transport does, neither step connects to a link-local address (cloud metadata
endpoints). A network failure or timeout is retried by the activity
(``EndpointUnavailableError``), and so is a 429 or 5xx for ``http-download``;
for ``http`` a 5xx is an answer its expressions decide on.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.step_context import StepConfig, StepContext
from freightline.errors import (
    ConfigError,
    EndpointUnavailableError,
    ExpressionError,
    FreightlineError,
    StepError,
)
from freightline.kargo.expressions import evaluate, parse
from freightline.kargo.resources import parse_duration

__all__ = [
    "HTTPConfig",
    "HTTPDownloadConfig",
    "http_download",
    "http_request",
    "refuse_link_local",
    "save_stream",
]

GO_DURATION = r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$"
MAX_RESPONSE_BYTES = 2 << 20
"""What ``http`` reads of a response body (Kargo's ``maxResponseBytes``)."""
MAX_DOWNLOAD_BYTES = 100 << 20
"""What ``http-download`` writes at most (Kargo's ``maxDownloadSize``)."""
REQUEST_TIMEOUT = timedelta(seconds=10)
DOWNLOAD_TIMEOUT = timedelta(minutes=5)
POLL_INTERVAL = timedelta(seconds=30)
MIN_POLL_INTERVAL = timedelta(seconds=10)
"""Kargo's lower bound on ``pollInterval``."""
DEFAULT_WAIT = timedelta(minutes=5)
"""How long ``http`` keeps asking without a ``retry.timeout`` (Kargo: forever)."""
MAX_WAIT = timedelta(minutes=20)
"""The longest ``retry.timeout`` ``http`` takes: it must end inside its activity's 30 minutes."""
CHUNK = 64 * 1024


class NameValue(StepConfig):
    name: str = Field(min_length=1)
    value: str = Field(min_length=1)


class HTTPOutput(StepConfig):
    name: str = Field(min_length=1)
    from_expression: str = Field(min_length=1)


class HTTPConfig(StepConfig):
    method: Literal["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"] = "GET"
    url: str = Field(min_length=1)
    headers: list[NameValue] = Field(default_factory=list)
    query_params: list[NameValue] = Field(default_factory=list)
    body: str = ""
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")
    proxy: str | None = Field(default=None, pattern=r"^https?://.*$")
    timeout: str | None = Field(default=None, pattern=GO_DURATION)
    poll_interval: str | None = Field(default=None, pattern=GO_DURATION)
    response_content_type: Literal["application/json", "application/yaml", "text/plain"] | None = (
        None
    )
    outputs: list[HTTPOutput] = Field(default_factory=list)
    success_expression: str = ""
    failure_expression: str = ""
    error_expression: str = ""


class HTTPDownloadConfig(StepConfig):
    url: str = Field(min_length=1)
    out_path: str = Field(min_length=1)
    allow_overwrite: bool = False
    headers: list[NameValue] = Field(default_factory=list)
    query_params: list[NameValue] = Field(default_factory=list)
    insecure_skip_tls_verify: bool = Field(default=False, alias="insecureSkipTLSVerify")
    timeout: str | None = Field(default=None, pattern=GO_DURATION)


# --- http --------------------------------------------------------------------------------------


def http_request(ctx: StepContext, config: HTTPConfig) -> dict[str, Any]:
    """Send the request until its answer succeeds or fails (Kargo's ``http``); its outputs."""
    where = ctx.describe()
    poll = max(_duration(config.poll_interval, POLL_INTERVAL, "pollInterval"), MIN_POLL_INTERVAL)
    wait = _wait_limit(ctx)
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        done, outputs, status = _ask(where, config)
        if done:
            return outputs
        if time.monotonic() + poll.total_seconds() > deadline:
            raise FreightlineError(
                f"{where}: timed out after {_shown_duration(wait)}: the last answer "
                f"(HTTP {status}) met neither the success nor the failure criteria"
            )
        _pause(poll)


def _ask(where: str, config: HTTPConfig) -> tuple[bool, dict[str, Any], int]:
    """One request: (finished, outputs, status). Raises when the step ends otherwise."""
    timeout = _duration(config.timeout, REQUEST_TIMEOUT, "timeout")
    body = config.body.encode() if config.body else None
    with (
        _client(config.insecure_skip_tls_verify, timeout, config.proxy, where) as client,
        _send(
            client, where, config.method, config.url, config.headers, config.query_params, body,
            what="sending the HTTP request",
        ) as response,
    ):  # fmt: skip
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise FreightlineError(
                f"{where}: response body size {declared} exceeds limit of "
                f"{MAX_RESPONSE_BYTES} bytes"
            )
        data = _read_limited(response, MAX_RESPONSE_BYTES, where)
        env = {"response": _response_env(response, data, config.response_content_type, where)}
    status = response.status_code
    success = _criterion(config.success_expression, env, "success")
    failure = _criterion(config.failure_expression, env, "failure")
    if failure:
        message = _error_message(config.error_expression, env)
        detail = f": {json.dumps(message)}" if message else ""
        raise StepError(f"{where}: HTTP ({status}) response met failure criteria{detail}")
    if success or (success is None and failure is None and 200 <= status < 300):
        outputs = {}
        for output in config.outputs:
            try:
                outputs[output.name] = _plain(evaluate(output.from_expression, env))
            except ExpressionError as err:
                raise ExpressionError(
                    f'{where}: error evaluating output expression "{output.name}": {err}'
                ) from None
        return True, outputs, status
    return False, {}, status


def _criterion(expression: str, env: Mapping[str, Any], kind: str) -> bool | None:
    if not expression:
        return None
    result = evaluate(expression, env)
    if not isinstance(result, bool):
        raise ExpressionError(
            f"{kind} expression {json.dumps(expression)} did not evaluate to a boolean "
            f"(got {type(result).__name__})"
        )
    return result


def _error_message(expression: str, env: Mapping[str, Any]) -> str:
    """Kargo's errorExpression: best effort; a response shaped otherwise gives no message,
    but a malformed expression is the configuration's error."""
    if not expression:
        return ""
    try:
        message = evaluate(expression, env)
    except ExpressionError:
        parse(expression)  # raises ExpressionError for a malformed expression
        return ""
    return message if isinstance(message, str) else ""


def _response_env(
    response: httpx.Response, data: bytes, content_type: str | None, where: str
) -> dict[str, Any]:
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        headers.setdefault(_canonical(name), []).append(value)

    def header(name: str) -> str:
        values = headers.get(_canonical(name))
        return values[0] if values else ""

    body: Any = {}
    if content_type is None:
        raw = response.headers.get("Content-Type", "")
        message = Message()
        message["Content-Type"] = raw
        content_type = message.get_content_type() if raw else ""
    if data:
        kind = content_type.lower()
        if kind in ("application/yaml", "text/yaml", "application/x-yaml"):
            try:
                body = YAML(typ="safe").load(data.decode())
            except (YAMLError, UnicodeDecodeError) as err:
                raise StepError(f"{where}: failed to parse YAML response: {err}") from None
        elif kind == "text/plain":
            body = data.decode(errors="replace")
        else:
            # JSON, or any other type that happens to be JSON (Kargo's fallback).
            try:
                body = json.loads(data)
            except ValueError as err:
                if kind == "application/json":
                    raise StepError(f"{where}: failed to parse JSON response: {err}") from None
    return {"status": response.status_code, "header": header, "headers": headers, "body": body}


def _canonical(name: str) -> str:
    """Go's canonical header key: ``content-type`` -> ``Content-Type``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _plain(value: Any) -> Any:
    """An output as JSON holds it (a header function cannot be an output)."""
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        raise ExpressionError(f"a {type(value).__name__} cannot be an output") from None


def _wait_limit(ctx: StepContext) -> timedelta:
    text = ctx.step.retry_timeout if ctx.step else None
    wait = _duration(text, DEFAULT_WAIT, "retry.timeout")
    if wait <= timedelta(0):
        return DEFAULT_WAIT
    if wait > MAX_WAIT:
        raise ConfigError(
            f"{ctx.describe()}: retry.timeout {text} is longer than the "
            f"{_shown_duration(MAX_WAIT)} an http step may wait here "
            "(it runs inside the clone-to-push activity)"
        )
    return wait


def _pause(interval: timedelta) -> None:
    """Wait before asking again; an abort (the activity cancelled) ends the wait at once."""
    activity.wait_for_cancelled_sync(interval.total_seconds())
    if activity.is_cancelled():
        raise CancelledError("the promotion was aborted while the http step was waiting")


# --- http-download -----------------------------------------------------------------------------


def http_download(ctx: StepContext, config: HTTPDownloadConfig) -> dict[str, Any]:
    """Download a URL to a file of the work tree (Kargo's ``http-download``)."""
    where = ctx.describe()
    target = ctx.workspace.resolve(config.out_path, field="outPath")
    if os.path.lexists(target) and not config.allow_overwrite:
        raise ConfigError(
            f"{where}: file already exists at {config.out_path} and overwrite is not allowed"
        )
    if target.is_dir():
        raise ConfigError(f'{where}: outPath "{config.out_path}" is a directory')
    timeout = _duration(config.timeout, DOWNLOAD_TIMEOUT, "timeout")
    with (
        _client(config.insecure_skip_tls_verify, timeout, None, where) as client,
        _send(
            client, where, "GET", config.url, config.headers, config.query_params, None,
            what="downloading",
        ) as response,
    ):  # fmt: skip
        status = response.status_code
        if not 200 <= status < 300:
            text = f"{where}: HTTP request failed with status {status}"
            if status == 429 or status >= 500:
                raise EndpointUnavailableError(text)
            raise StepError(text)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
            raise StepError(f"{where}: download exceeds limit of {MAX_DOWNLOAD_BYTES} bytes")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_stream(response.iter_bytes(CHUNK), target, MAX_DOWNLOAD_BYTES, where)
    return {}


def save_stream(chunks: Iterator[bytes], target: Path, limit: int, where: str) -> int:
    """Write ``chunks`` to ``target`` through a temporary file beside it, then move it into
    place (a link at ``target`` is replaced, never followed); more than ``limit`` bytes is
    an error and leaves ``target`` as it was. Returns the size written."""
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise FreightlineError(f"{where}: download exceeds limit of {limit} bytes")
                out.write(chunk)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size


# --- shared ------------------------------------------------------------------------------------


@contextmanager
def _client(
    insecure: bool, timeout: timedelta, proxy: str | None, where: str
) -> Iterator[httpx.Client]:
    def no_link_local(request: httpx.Request) -> None:
        # A request hook runs for every request, each redirect included (as Kargo's dialer).
        refuse_link_local(request.url.host, where)

    with httpx.Client(
        verify=not insecure,
        timeout=timeout.total_seconds(),
        proxy=proxy,
        follow_redirects=True,
        event_hooks={"request": [no_link_local]},
    ) as client:
        yield client


@contextmanager
def _send(
    client: httpx.Client,
    where: str,
    method: str,
    url: str,
    headers: list[NameValue],
    query: list[NameValue],
    body: bytes | None,
    *,
    what: str,
) -> Iterator[httpx.Response]:
    """Stream one request's response; a transport failure is retryable, a bad URL is not."""
    try:
        request = client.build_request(
            method,
            httpx.URL(url).copy_merge_params([(q.name, q.value) for q in query]),
            headers=[(h.name, h.value) for h in headers],
            content=body,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as err:
        raise ConfigError(f"{where}: error building HTTP request: {err}") from None
    if request.url.scheme not in ("http", "https"):
        raise ConfigError(f'{where}: url "{url}": only http and https URLs are supported')
    try:
        response = client.send(request, stream=True)
    except httpx.TimeoutException as err:
        raise EndpointUnavailableError(f"{where}: timed out {what} ({url})") from err
    except httpx.TransportError as err:
        raise EndpointUnavailableError(f"{where}: error {what} ({url}): {err}") from err
    try:
        yield response
    except httpx.TransportError as err:
        raise EndpointUnavailableError(
            f"{where}: error reading the response ({url}): {err}"
        ) from err
    finally:
        response.close()


def _read_limited(response: httpx.Response, limit: int, where: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes(CHUNK):
        data += chunk
        if len(data) > limit:
            raise FreightlineError(f"{where}: response body exceeds limit of {limit} bytes")
    return bytes(data)


def refuse_link_local(host: str, where: str) -> None:
    """Refuse a host that is, or resolves to, a link-local address (169.254.0.0/16, fe80::/10):
    cloud metadata endpoints live there, and a step's URL is user input."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return  # the request itself reports an unresolvable host
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address.is_link_local:
            raise ConfigError(
                f'{where}: "{host}" is a link-local address, which steps may not reach'
            )


def _duration(text: str | None, default: timedelta, field: str) -> timedelta:
    if not text:
        return default
    try:
        return parse_duration(text)
    except ValueError as err:
        raise ConfigError(f"{field}: {err}") from None


def _shown_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m" if seconds % 60 == 0 and seconds >= 60 else f"{seconds}s"
