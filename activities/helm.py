"""Chart subscriptions: versions of a Helm chart, from an HTTP repository or an OCI registry.

- ``https://...`` (or ``http://``) with ``name``: ``GET <repoURL>/index.yaml``
  and read ``entries.<name>[].version`` (download ``urls`` may be relative
  to the repository and are resolved against it).
- ``oci://<registry>/<path>``: the repository's tag list through
  :class:`~activities.registry.RegistryClient` (Basic and Bearer auth
  included); OCI tags cannot hold ``+``, so Helm stores it as ``_`` and it
  is read back as ``+``.

Versions that parse as semantic versions (leniently, as Helm does) and
satisfy ``semverConstraint`` are returned highest first, at most
``discoveryLimit``. Credentials (``kargo.akuity.io/cred-type: helm``) come
from the worker's credential store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.registry import RegistryClient, parse_repo_url
from freightline.contracts.warehouse import DiscoveredChart
from freightline.errors import ConfigError, DiscoveryError, RegistryUnavailableError
from freightline.kargo.resources import ChartSubscription
from freightline.kargo.semver import Constraint, parse_constraint, try_parse_version

__all__ = ["discover_charts", "oci_repository"]

BasicCredentials = Callable[[str], tuple[str, str] | None]
"""repoURL -> (username, password) or None."""


def oci_repository(subscription: ChartSubscription) -> str:
    """``registry/path[/name]`` of an ``oci://`` chart subscription."""
    base = subscription.repo_url.removeprefix("oci://").rstrip("/")
    return f"{base}/{subscription.name}" if subscription.name else base


async def discover_charts(
    subscription: ChartSubscription,
    *,
    http: httpx.AsyncClient,
    registry: RegistryClient | None = None,
    credentials: BasicCredentials | None = None,
) -> list[DiscoveredChart]:
    """Up to ``discoveryLimit`` versions of the subscribed chart, highest first.

    ``registry`` serves ``oci://`` subscriptions. Raises ConfigError (bad
    constraint, no chart name), DiscoveryError (no index, no such chart),
    RegistryError (OCI registry failures).
    """
    constraint = (
        parse_constraint(subscription.semver_constraint) if subscription.semver_constraint else None
    )
    if subscription.repo_url.startswith("oci://"):
        if registry is None:
            raise ConfigError("OCI chart subscriptions need a registry client")
        tags = await registry.list_tags(
            parse_repo_url(oci_repository(subscription), registry.mirrors)
        )
        candidates: dict[str, str | None] = {tag.replace("_", "+"): None for tag in tags}
    else:
        candidates = await _index_versions(subscription, http, credentials)
    return _select(candidates, constraint, subscription.discovery_limit)


def _select(
    candidates: dict[str, str | None], constraint: Constraint | None, limit: int
) -> list[DiscoveredChart]:
    versions = []
    for text in candidates:
        version = try_parse_version(text, strict=False)
        if version is not None and (constraint is None or constraint.matches(version)):
            versions.append((version, text))
    versions.sort(reverse=True)
    return [DiscoveredChart(version=text, url=candidates[text]) for _, text in versions[:limit]]


async def _index_versions(
    subscription: ChartSubscription,
    http: httpx.AsyncClient,
    credentials: BasicCredentials | None,
) -> dict[str, str | None]:
    """Version -> download URL (absolute), from the repository's index.yaml."""
    repo = subscription.repo_url
    if not subscription.name:
        raise ConfigError(f"chart subscription {repo}: an HTTP repository needs a chart name")
    index_url = repo.rstrip("/") + "/index.yaml"
    auth = credentials(repo) if credentials else None
    try:
        response = await http.get(index_url, auth=auth)
    except httpx.TimeoutException as err:
        raise RegistryUnavailableError(f"chart repository {repo} timed out") from err
    except httpx.TransportError as err:
        raise RegistryUnavailableError(f"chart repository {repo} unreachable: {err}") from err
    if response.status_code in (401, 403):
        raise DiscoveryError(
            f"chart repository {repo} refused access ({response.status_code}): "
            "check the worker's helm credentials"
        )
    if response.status_code == 429 or response.status_code >= 500:
        raise RegistryUnavailableError(f"chart repository {repo} answered {response.status_code}")
    if response.status_code != 200:
        raise DiscoveryError(
            f"chart repository {repo}: {index_url} answered {response.status_code}"
        )
    try:
        index: Any = YAML(typ="safe").load(response.text)
    except YAMLError as err:
        raise DiscoveryError(f"chart repository {repo}: index.yaml is not YAML: {err}") from None
    entries = index.get("entries") if isinstance(index, dict) else None
    charts = entries.get(subscription.name) if isinstance(entries, dict) else None
    if not isinstance(charts, list):
        raise DiscoveryError(f'chart repository {repo} has no chart "{subscription.name}"')
    versions: dict[str, str | None] = {}
    base = httpx.URL(repo.rstrip("/") + "/")
    for entry in charts:
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
            continue
        urls = entry.get("urls") or []
        url = str(base.join(str(urls[0]))) if urls else None
        versions.setdefault(entry["version"], url)
    return versions
