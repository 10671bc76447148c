"""What every metric provider shares: the failure it raises, the worker's secrets, safe URLs.

A provider module exposes ``query(spec, secrets) -> value``: the value Argo
Rollouts hands that provider's ``successCondition`` as ``result``. It raises

- :class:`MeasurementFailed` for a failure while measuring (unreachable, a
  non-2xx answer, a 429, a query the provider rejects, an empty result where
  Argo Rollouts calls that an error): an Error measurement, counted against
  ``consecutiveErrorLimit``;
- :class:`MeasurementDecided` where Argo Rollouts decides the phase itself
  without the conditions (New Relic's empty result is Failed);
- ``ConfigError`` / ``CredentialError`` for misconfiguration no retry can fix.

Credentials are the worker's, by reference (:class:`WorkerSecrets`): Argo
Rollouts reads a provider's Kubernetes Secret (``datadog``, ``newrelic``,
``influxdb``, ...) by name and key; Freightline reads the worker's
environment variable named after both: Secret ``datadog`` key ``api-key`` is
``FREIGHTLINE_METRIC_DATADOG_API_KEY``. Every value read is remembered so that
messages can be scrubbed of it before they leave the activity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from freightline.errors import ConfigError, CredentialError
from freightline.kargo.analysis import MeasurementPhase
from freightline.settings import METRIC_HEADER_ENV_PREFIX

__all__ = [
    "ENV_TAG",
    "REDACTED",
    "MeasurementDecided",
    "MeasurementFailed",
    "WorkerSecrets",
    "check_url",
    "connection_reason",
    "display_url",
    "http_failure",
    "secret_variable",
]

REDACTED: Final = "*****"
ENV_TAG: Final = re.compile(r"\{\{\s*env\.([^{}\s]*)\s*\}\}")
"""``{{env.NAME}}``: a worker variable, by reference, in a header or a password."""
# Header names whose values are credentials even when written literally in the template.
_SENSITIVE_HEADER = re.compile(r"auth|token|key|secret|password|cookie|session", re.IGNORECASE)


class MeasurementFailed(Exception):
    """A measurement that could not be taken: becomes an Error-phase Measurement."""


class MeasurementDecided(Exception):
    """A measurement whose phase the provider decides itself, as Argo Rollouts does."""

    def __init__(self, phase: MeasurementPhase, message: str, value: object = None) -> None:
        super().__init__(message)
        self.phase = phase
        self.value = value


def secret_variable(secret: str, key: str) -> str:
    """The worker variable holding key ``key`` of Secret ``secret``:
    ``FREIGHTLINE_METRIC_`` + both upper-cased, anything but letters and digits as ``_``."""
    name = re.sub(r"[^A-Za-z0-9]", "_", f"{secret}_{key}").upper()
    return f"{METRIC_HEADER_ENV_PREFIX}{name}"


class WorkerSecrets:
    """The worker's ``FREIGHTLINE_METRIC_*`` values, read by Secret name and key.

    Every value handed out is remembered (:attr:`used`) so that the activity
    scrubs it from whatever it returns or logs.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.used: list[str] = []

    def setting(self, secret: str, key: str) -> str | None:
        """A value that is no credential (an address, an account ID): not scrubbed."""
        return self._environ.get(secret_variable(secret, key)) or None

    def get(self, secret: str, key: str) -> str | None:
        """The value, or None when the worker has none."""
        value = self._environ.get(secret_variable(secret, key))
        if value:
            self.used.append(value)
        return value or None

    def require(self, secret: str, key: str, provider: str) -> str:
        """The value; a :class:`CredentialError` naming the variable when the worker has none."""
        value = self.get(secret, key)
        if value is None:
            raise CredentialError(
                f'{provider}: the worker has no "{key}" in secret "{secret}": set '
                f"{secret_variable(secret, key)} in the worker's environment"
            )
        return value

    def environment(self, name: str) -> str | None:
        """A ``FREIGHTLINE_METRIC_*`` variable by its full name (web headers' ``{{env.NAME}}``)."""
        value = self._environ.get(name)
        if value is not None:
            self.used.append(value)
        return value

    def resolve_env(self, text: str, where: str) -> str:
        """``text`` with each ``{{env.NAME}}`` replaced by the worker's variable ``NAME``, which
        must be a ``FREIGHTLINE_METRIC_*`` one (so that a template cannot make the worker send
        its other secrets, such as its git password, to an arbitrary URL)."""

        def resolve(match: re.Match[str]) -> str:
            name = match.group(1)
            if not name.startswith(METRIC_HEADER_ENV_PREFIX) or name == METRIC_HEADER_ENV_PREFIX:
                raise ConfigError(
                    f"{where}: {{{{env.{name}}}}}: only worker environment variables "
                    f"named {METRIC_HEADER_ENV_PREFIX}* may be sent"
                )
            value = self.environment(name)
            if value is None:
                raise CredentialError(
                    f"{where} needs the environment variable {name} on the worker, which is not set"
                )
            return value

        return ENV_TAG.sub(resolve, text)

    def headers(self, headers: Iterable[Any], where: str) -> dict[str, str]:
        """HTTP headers (``key``/``value`` items) with ``{{env.NAME}}`` resolved; a value under
        a credential-like name is scrubbed even when the template writes it literally."""
        resolved: dict[str, str] = {}
        for header in headers:
            value = self.resolve_env(header.value, f'{where} "{header.key}"')
            if _SENSITIVE_HEADER.search(header.key):
                self.remember(value)
            resolved[header.key] = value
        return resolved

    def remember(self, value: str) -> None:
        """Scrub ``value`` too (a header written literally under a credential's name)."""
        self.used.append(value)

    def scrub(self, text: str) -> str:
        """``text`` with every value handed out replaced by ``*****``."""
        for secret in sorted(self.used, key=len, reverse=True):
            if secret:
                text = text.replace(secret, REDACTED)
        return text


def display_url(url: str) -> str:
    """``url`` without credentials or query: safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def check_url(url: str, field: str) -> None:
    """A ``ConfigError`` unless ``url`` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = display_url(url) if parts.hostname else url
        raise ConfigError(f'{field} "{shown}" is not an http(s) URL')


def connection_reason(err: BaseException) -> str:
    """The OS-level reason of a connection failure ("Connection refused"), else the error."""
    text = str(err)
    match = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if match:
        return match.group(1).strip()
    return type(err).__name__


def http_failure(where: str, status: int, reason: str, retry_after: str | None = None) -> str:
    """The message of a non-2xx answer, in Argo Rollouts' words; a 429 says when the
    provider asked to be retried (the next measurement is ``interval`` later regardless)."""
    message = f"{where}: received non 2xx response code: {status} {reason}"
    if status == 429 and retry_after:
        message += f" (Retry-After: {retry_after.strip()[:40]})"
    return message


def json_answer(
    send: Callable[[], httpx.Response],
    where: str,
    timeout: float,
    detail: Callable[[httpx.Response], str] = lambda _response: "",
) -> Any:
    """The JSON body of one HTTP call to a provider (``send``, bounded by ``timeout``
    seconds); a timeout, an unreachable provider, a non-2xx answer (``detail`` adds the
    provider's own message) or a body that is no JSON is a :class:`MeasurementFailed`
    naming ``where``, in Argo Rollouts' words."""
    try:
        response = send()
    except httpx.TimeoutException:
        raise MeasurementFailed(f"{where} did not answer within {timeout:g}s") from None
    except httpx.ConnectError as err:
        raise MeasurementFailed(f"could not reach {where}: {connection_reason(err)}") from None
    except httpx.HTTPError as err:
        raise MeasurementFailed(f"{where} failed: {type(err).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise MeasurementFailed(
            http_failure(
                where,
                response.status_code,
                response.reason_phrase,
                response.headers.get("Retry-After"),
            )
            + detail(response)
        )
    try:
        return response.json()
    except ValueError:
        raise MeasurementFailed(f"{where}: the answer is not JSON") from None
