"""The ``newRelic`` provider: an NRQL query through NerdGraph, New Relic's GraphQL API.

As in Argo Rollouts: the query Argo Rollouts sends (``actor { account(id) {
nrql(query, timeout) { results } } }``), ``timeout`` in seconds (default 5);
one result row is the value as a map (``result['average.duration'] < 0.5``),
several rows a list of maps. No rows, or one empty row, is a **Failed**
measurement ("no results returned from NRQL query"), as Argo Rollouts decides
it without the conditions. GraphQL errors (an NRQL syntax error, an account
the key cannot read), a non-2xx answer (a 429 with its ``Retry-After``), an
unreachable API are Error measurements.

There is no well-kept Python NerdGraph client; the query is one POST (httpx).

Credentials: Argo Rollouts reads Secret ``newrelic`` (or ``profile``), keys
``personal-api-key``, ``account-id``, ``region`` (``us``, ``eu``) and
``base-url-nerdgraph``; the worker reads ``FREIGHTLINE_METRIC_NEWRELIC_PERSONAL_API_KEY``,
``..._ACCOUNT_ID``, ``..._REGION``, ``..._BASE_URL_NERDGRAPH``.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from activities.providers.measuring import (
    MeasurementDecided,
    MeasurementFailed,
    WorkerSecrets,
    check_url,
    display_url,
    json_answer,
)
from freightline.errors import ConfigError
from freightline.kargo.analysis import provider_timeout_seconds
from freightline.kargo.resources import NewRelicMetric

__all__ = ["DEFAULT_SECRET", "NRQL_QUERY", "query"]

DEFAULT_SECRET: Final = "newrelic"  # noqa: S105 - a Secret's name
_NERDGRAPH: Final = {
    "us": "https://api.newrelic.com/graphql",
    "eu": "https://api.eu.newrelic.com/graphql",
}
# Argo Rollouts' document, unchanged, so that NerdGraph sees what it would see from Rollouts.
NRQL_QUERY: Final = """query (
  $query: Nrql!,
  $accountId: Int!,
  $timeout: Seconds!
)
{
  actor {
    account(id: $accountId) {
      nrql(query: $query, timeout: $timeout) {
        results
      }
    }
  }
}
"""
# NerdGraph ends an NRQL query at `timeout`; the HTTP request may take a little longer.
_HTTP_MARGIN_SECONDS: Final = 5.0


def query(spec: NewRelicMetric, secrets: WorkerSecrets) -> Any:
    """One result row (a map), or a list of them; raises MeasurementFailed / MeasurementDecided."""
    secret = spec.profile or DEFAULT_SECRET
    api_key = secrets.require(secret, "personal-api-key", "newRelic")
    account_text = secrets.setting(secret, "account-id")
    if account_text is None or not account_text.strip().isdigit():
        raise ConfigError(
            f'newRelic: secret "{secret}" needs a numeric "account-id" on the worker'
            + ("" if account_text is None else f' (got "{account_text[:20]}")')
        )
    region = (secrets.setting(secret, "region") or "us").lower()
    url = secrets.setting(secret, "base-url-nerdgraph") or _NERDGRAPH.get(region)
    if url is None:
        raise ConfigError(f'newRelic: region "{region}" is neither us nor eu')
    check_url(url, f'newRelic base-url-nerdgraph (secret "{secret}")')
    nrql_timeout = provider_timeout_seconds(spec)
    where = f"NerdGraph at {display_url(url)}"
    body = json_answer(
        lambda: httpx.post(
            url,
            json={
                "query": NRQL_QUERY,
                "variables": {
                    "query": spec.query,
                    "accountId": int(account_text),
                    "timeout": int(nrql_timeout),
                },
            },
            headers={"API-Key": api_key},
            timeout=nrql_timeout + _HTTP_MARGIN_SECONDS,
        ),
        where,
        nrql_timeout + _HTTP_MARGIN_SECONDS,
    )
    return _value(body, where)


def _value(body: Any, where: str) -> Any:
    if not isinstance(body, dict):
        raise MeasurementFailed(f"{where}: the answer is not a GraphQL response")
    errors = body.get("errors")
    if errors:
        messages = "; ".join(
            str(error.get("message") if isinstance(error, dict) else error)[:200]
            for error in errors[:3]
        )
        raise MeasurementFailed(f"{where}: {messages}")
    try:
        results = body["data"]["actor"]["account"]["nrql"]["results"]
    except (KeyError, TypeError):
        raise MeasurementFailed(f"{where}: the answer holds no NRQL results") from None
    if not isinstance(results, list):
        raise MeasurementFailed(f"{where}: the NRQL results are not a list")
    if not results or (len(results) == 1 and not results[0]):
        raise MeasurementDecided("Failed", "no results returned from NRQL query")
    return results[0] if len(results) == 1 else results
