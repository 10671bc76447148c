"""The ``discover_warehouse`` activity: every subscription of one Warehouse, in one run.

Images go through :mod:`activities.registry`, git through
:mod:`activities.git_discovery`, charts through :mod:`activities.helm`.
Subscriptions are discovered concurrently; the first failure fails the
activity with a message naming the subscription. Whether a retry can help
is the error class's to say (``freightline/errors.py``): a bad regex or
constraint, a missing repository or refused credentials are final; a
registry's timeouts and 5xx are retried.

Credentials are looked up here, from the worker's store, per subscription
URL; results carry artifacts only. Registry clients (and their caches of
tokens and image build dates by digest) live as long as the worker, one per
subscribed repository, so a warm NewestBuild costs the tag list and the
manifests only, even beyond the build dates the workflow carries.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import timedelta

import httpx
from pydantic import ValidationError

from activities import boundary
from activities.git_discovery import discover_commits
from activities.helm import discover_charts, oci_repository
from activities.registry import RegistryClient, discover_images
from activities.registry_identity import registry_login
from activities.repository_cache import RepositoryCache
from freightline.contracts.warehouse import (
    DiscoveredImageRef,
    DiscoveryRequest,
    DiscoveryResult,
    SubscriptionDiscovery,
    subscription_label,
)
from freightline.errors import ConfigError, FreightlineError
from freightline.kargo.credentials import CredentialStore
from freightline.kargo.resources import RepoSubscription
from freightline.kargo.selection import ImageSelectionPolicy

__all__ = ["DiscoveryActivities", "image_policy"]

HTTP_TIMEOUT = timedelta(seconds=10)
# Registry clients kept per worker (least recently used dropped beyond this).
MAX_CLIENTS = 256


def image_policy(subscription: RepoSubscription) -> ImageSelectionPolicy:
    """The selection policy of an image subscription; ConfigError names what is wrong."""
    image = subscription.image
    assert image is not None
    allow = [*(image.allow_tags_regexes or ()), *filter(None, [image.allow_tags])]
    ignore = [*(image.ignore_tags_regexes or ())]
    ignore += [f"^{re.escape(tag)}$" for tag in image.ignore_tags or ()]
    try:
        return ImageSelectionPolicy(
            strategy=image.image_selection_strategy,
            constraint=image.constraint or "",
            strict_semvers=image.strict_semvers,
            allow_tags_regexes=tuple(allow),
            ignore_tags_regexes=tuple(ignore),
            platform=image.platform or "",
            discovery_limit=image.discovery_limit,
            cache_by_tag=image.cache_by_tag,
        )
    except ValidationError as err:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ConfigError(problems) from None


class DiscoveryActivities:
    """Discovery with the worker's credentials and long-lived registry clients."""

    def __init__(
        self,
        credentials: CredentialStore,
        *,
        http_timeout: timedelta = HTTP_TIMEOUT,
        mirrors: Mapping[str, str] | None = None,
        allow_local_repositories: bool = False,
        environ: Mapping[str, str] | None = None,
        repository_cache: RepositoryCache | None = None,
    ) -> None:
        self.credentials = credentials
        # The worker's process environment, for its workload identity (AZURE_*), as the cloud
        # SDKs read it: handed in by the edge, none in tests unless they give one.
        self.environ: Mapping[str, str] = environ or {}
        self.repository_cache = repository_cache  # the worker's mirrors, shared with promotions
        self.allow_local_repositories = allow_local_repositories  # the worker's settings
        self.mirrors = dict(mirrors or {})  # the worker's registry mirrors (its settings)
        self.http_timeout = http_timeout
        self._http: httpx.AsyncClient | None = None
        self._insecure_http: httpx.AsyncClient | None = None
        self._clients: OrderedDict[tuple[str, str, str, bool], RegistryClient] = OrderedDict()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.http_timeout.total_seconds())
        return self._http

    @property
    def insecure_http(self) -> httpx.AsyncClient:
        """The client of subscriptions with ``insecureSkipTLSVerify``: no certificate checks."""
        if self._insecure_http is None:
            self._insecure_http = httpx.AsyncClient(
                timeout=self.http_timeout.total_seconds(),
                verify=False,  # noqa: S501 - the subscription asked for it (insecureSkipTLSVerify)
            )
        return self._insecure_http

    def http_for(self, insecure_skip_tls_verify: bool | None) -> httpx.AsyncClient:
        return self.insecure_http if insecure_skip_tls_verify else self.http

    async def aclose(self) -> None:
        for client in (self._http, self._insecure_http):
            if client is not None:
                await client.aclose()
        self._http = self._insecure_http = None
        self._clients.clear()

    def registry_client(
        self,
        cred_type: str,
        repo_url: str,
        project: str = "",
        *,
        insecure_skip_tls_verify: bool | None = None,
    ) -> RegistryClient:
        """One client per subscribed repository (and project: a workload identity's login is
        the project's), its credentials bound to that repository."""
        key = (cred_type, repo_url, project, bool(insecure_skip_tls_verify))
        client = self._clients.get(key)
        if client is None:

            def provider(host: str) -> tuple[str, str] | None:
                return self._login(cred_type, repo_url, host, project)

            client = self._clients[key] = RegistryClient(
                self.http_for(insecure_skip_tls_verify), provider, mirrors=self.mirrors
            )
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(key)
        return client

    def _login(
        self, cred_type: str, repo_url: str, host: str, project: str = ""
    ) -> tuple[str, str] | None:
        """A registry login for ``repo_url``: a Secret's username and password, the login its
        cloud identity or the worker's workload identity buys (cached; blocking I/O the first
        time, see :meth:`_prime`)."""
        return registry_login(
            self.credentials, cred_type, repo_url, self.environ, project
        ) or registry_login(self.credentials, cred_type, host, self.environ, project)

    async def _prime(self, cred_type: str, repo_url: str, project: str) -> None:
        """Buy a cloud identity's login off the event loop, before the registry client asks."""
        await asyncio.to_thread(
            registry_login, self.credentials, cred_type, repo_url, self.environ, project
        )

    @boundary.defn(name="discover_warehouse")
    async def discover_warehouse(self, request: DiscoveryRequest) -> DiscoveryResult:
        """Discover every subscription of a Warehouse (artifacts newest first)."""
        failures: list[FreightlineError] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._discover(index, subscription, request.known_created, request.project)
                    )
                    for index, subscription in enumerate(request.subscriptions)
                ]
        except* FreightlineError as errors:
            failures.extend(_leaves(errors))
        if failures:
            raise failures[0]  # the first: the others were cancelled or failed alike
        return DiscoveryResult(subscriptions=tuple(task.result() for task in tasks))

    async def _discover(
        self,
        index: int,
        subscription: RepoSubscription,
        known_created: dict[str, str],
        project: str,
    ) -> SubscriptionDiscovery:
        label = subscription_label(index, subscription)
        try:
            return await self._discover_one(subscription, known_created, project)
        except FreightlineError as err:
            err.locate(label)
            raise

    async def _discover_one(
        self, subscription: RepoSubscription, known_created: dict[str, str], project: str
    ) -> SubscriptionDiscovery:
        if subscription.image is not None:
            repo_url = subscription.image.repo_url
            await self._prime("image", repo_url, project)
            images = await discover_images(
                self.registry_client(
                    "image",
                    repo_url,
                    project,
                    insecure_skip_tls_verify=subscription.image.insecure_skip_tls_verify,
                ),
                repo_url,
                image_policy(subscription),
                known_created,
            )
            return SubscriptionDiscovery(
                kind="image",
                repo_url=repo_url,
                images=tuple(
                    DiscoveredImageRef(
                        tag=i.tag, digest=i.digest, created_at=i.created, annotations=i.annotations
                    )
                    for i in images
                ),
            )
        if subscription.git is not None:
            git = subscription.git
            credentials = self.credentials.git(git.repo_url)
            commits = await asyncio.to_thread(
                discover_commits,
                git,
                credentials,
                allow_local=self.allow_local_repositories,
                cache=self.repository_cache,
            )
            return SubscriptionDiscovery(kind="git", repo_url=git.repo_url, commits=tuple(commits))
        chart = subscription.chart
        assert chart is not None
        oci = chart.repo_url.startswith("oci://")
        insecure = chart.insecure_skip_tls_verify
        if oci:
            await self._prime("helm", chart.repo_url, project)
        charts = await discover_charts(
            chart,
            http=self.http_for(insecure),
            registry=(
                self.registry_client(
                    "helm", chart.repo_url, project, insecure_skip_tls_verify=insecure
                )
                if oci
                else None
            ),
            credentials=lambda url: self.credentials.basic("helm", url),
        )
        return SubscriptionDiscovery(
            kind="chart",
            # Kargo records an OCI chart by its full repository and no name.
            repo_url=f"oci://{oci_repository(chart)}" if oci else chart.repo_url,
            name=None if oci else chart.name,
            charts=tuple(charts),
        )


def _leaves(group: BaseExceptionGroup[FreightlineError]) -> list[FreightlineError]:
    leaves: list[FreightlineError] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves
