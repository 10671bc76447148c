"""Kargo's webhook receivers as pure rules: receiver URLs, each provider's check, what an event names.

A ``ProjectConfig.spec.webhookReceivers[]`` entry names a provider and a
Secret. Its URL path is Kargo's (``pkg/webhook/external/receiver.go``): the
receiver type, then the hex SHA-256 of project name + receiver name + the
Secret's value, so a receiver moved from Kargo keeps its URL::

    /github/3f1c...e9   = "/" + type + "/" + sha256(project + name + secret)

The Secret's key each provider reads, and what it checks (Kargo v1.11):

==============  ================  ===========================================================
provider        Secret key        check
==============  ================  ===========================================================
github          ``secret``        ``X-Hub-Signature-256``: HMAC-SHA256 of the body
gitea           ``secret``        ``X-Hub-Signature-256``: HMAC-SHA256 of the body
bitbucket       ``secret``        ``X-Hub-Signature``: ``sha256=`` HMAC of the body
gitlab          ``secret-token``  ``X-Gitlab-Token`` equals the token
artifactory     ``secret-token``  ``X-Jfrog-Event-Auth``: hex HMAC-SHA256 of the body
harbor          ``auth-header``   ``Authorization`` equals the configured auth header
dockerhub       ``secret``        none: the hard-to-guess URL is the shared secret
quay            ``secret``        none: likewise
azure           ``secret``        none: likewise (ACR and Azure DevOps, told apart by
                                  ``User-Agent``)
generic         ``secret``        none: likewise; ``actions`` select the targets
==============  ================  ===========================================================

:func:`read_event` checks a request and turns it into a :class:`WebhookEvent`:
the repositories a push names, a pull request's URL, a ping, something to
ignore, or a refusal with its HTTP status. Nothing here does I/O;
``freightline.app.webhooks`` serves it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from freightline.errors import ExpressionError
from freightline.kargo.expressions import evaluate, render_string
from freightline.kargo.freight import normalize_chart_url, normalize_git_url, normalize_image_url
from freightline.kargo.resources import (
    ArtifactoryReceiver,
    ClusterConfig,
    GenericReceiver,
    GenericTargetSelection,
    ProjectResources,
    RepoSubscription,
    WebhookReceiver,
    labels_match,
)

__all__ = [
    "CLUSTER_PROJECT",
    "MAX_BODY_BYTES",
    "SECRET_KEYS",
    "BoundReceiver",
    "GenericResult",
    "WebhookEvent",
    "bind_cluster_receivers",
    "bind_receivers",
    "generic_targets",
    "hmac_sha256",
    "matching_warehouses",
    "read_event",
    "receiver_path",
    "repository_forms",
    "subscribed_url",
]

MAX_BODY_BYTES: Final = 2 << 20
"""Kargo's limit for a receiver's body (2 MiB)."""

SECRET_KEYS: Final = {
    "github": "secret",
    "gitlab": "secret-token",
    "bitbucket": "secret",
    "dockerhub": "secret",
    "quay": "secret",
    "harbor": "auth-header",
    "artifactory": "secret-token",
    "azure": "secret",
    "gitea": "secret",
    "generic": "secret",
}
"""The key of the receiver's Secret that each provider reads (and hashes into its URL)."""


def receiver_path(project: str, receiver_type: str, receiver_name: str, secret: str) -> str:
    """Kargo's URL path for a receiver; changing it would break every URL a sender holds."""
    digest = hashlib.sha256((project + receiver_name + secret).encode()).hexdigest()
    return f"/{receiver_type}/{digest}"


def hmac_sha256(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body``: GitHub's and Gitea's signature after ``sha256=``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebhookEvent:
    """What one checked request asks for.

    ``refresh``: the Warehouses subscribed to ``repo_urls``; ``pull-request``: the
    promotions waiting on ``pr_url``; ``generic``: run the receiver's actions on
    ``body``; ``ping`` and ``ignored``: nothing; ``refused``: answer ``status``.
    """

    kind: Literal["refresh", "pull-request", "generic", "ping", "ignored", "refused"]
    reason: str = ""
    status: int = 200
    repo_urls: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    pr_url: str | None = None
    sender: str | None = None
    """Who the event says acted (a pull request's merger or closer), when it says."""
    delivery: str | None = None
    body: Any = None


def _refused(status: int, reason: str) -> WebhookEvent:
    return WebhookEvent("refused", reason, status)


def _refresh(body: Any, urls: Iterable[Any], refs: Iterable[Any] = ()) -> WebhookEvent:
    return WebhookEvent(
        "refresh",
        repo_urls=tuple(sorted({u for u in urls if isinstance(u, str) and u})),
        refs=tuple(r for r in refs if isinstance(r, str) and r),
        body=body,
    )


def _pull_request(body: Any, url: Any, sender: Any = None) -> WebhookEvent:
    if not isinstance(url, str) or not url:
        return _ignored(body, "the pull request event names no URL")
    who = sender if isinstance(sender, str) and sender else None
    return WebhookEvent("pull-request", pr_url=url, sender=who, body=body)


def _ignored(body: Any, reason: str) -> WebhookEvent:
    return WebhookEvent("ignored", reason, body=body)


def _get(value: Any, *path: str | int) -> Any:
    """``value[path[0]][path[1]]...``, or None where a step is missing or of another type."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(value, list) or len(value) <= key:
                return None
            value = value[key]
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_DIGESTS: Final = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _signed(given: str, secret: str, body: bytes) -> bool:
    """``sha256=<hex>`` (or ``sha1=``/``sha512=``, as go-github accepts) over ``body``."""
    algorithm, _, signature = given.partition("=")
    digest = _DIGESTS.get(algorithm)
    if digest is None or not signature or not secret:
        return False
    expected = hmac.new(secret.encode(), body, digest).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


def _same(given: str, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def read_event(
    receiver: WebhookReceiver, secret: str, headers: Mapping[str, str], body: bytes
) -> WebhookEvent:
    """Check a request to ``receiver`` (``headers`` with lower-case names) and read it."""
    event = _READERS[receiver.receiver_type](receiver, secret, headers, body)
    if event.kind == "refused":
        return event
    return dataclasses.replace(event, delivery=_delivery(receiver.receiver_type, headers, event))


class _Invalid:
    pass


_INVALID: Final = _Invalid()


def _object(raw: bytes) -> dict[str, Any] | _Invalid:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return _INVALID
    return body if isinstance(body, dict) else _INVALID


_DELIVERY_HEADERS: Final = {
    "github": ("x-github-delivery",),
    "gitea": ("x-gitea-delivery",),
    "gitlab": ("x-gitlab-event-uuid",),
    "bitbucket": ("x-request-uuid", "x-request-id"),
}


def _delivery(receiver_type: str, headers: Mapping[str, str], event: WebhookEvent) -> str | None:
    """The sender's ID of this delivery, for refusing a replay; None when it sends none.

    Senders without one (Docker Hub, Quay, Harbor, Artifactory, generic) may send
    the same body twice for two real pushes of one tag, so their bodies are not
    deduplicated: a repeated refresh only runs discovery again.
    """
    for name in _DELIVERY_HEADERS.get(receiver_type, ()):
        if headers.get(name):
            return headers[name]
    delivery = _get(event.body, "id")
    if receiver_type == "azure" and isinstance(delivery, str) and delivery:
        return delivery
    return None


# --- the providers ----------------------------------------------------------------------------

Reader = Callable[[WebhookReceiver, str, Mapping[str, str], bytes], WebhookEvent]
_BAD_BODY: Final = WebhookEvent("refused", "invalid request body: not a JSON object", 400)


def _github(
    _: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes
) -> WebhookEvent:
    event = headers.get("x-github-event", "")
    if event not in ("package", "ping", "pull_request", "push", "registry_package"):
        return _refused(400, f"event type {event!r} is not supported")
    if not _signed(headers.get("x-hub-signature-256", ""), secret, raw):
        return _refused(401, "missing or wrong X-Hub-Signature-256")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if event == "ping":
        return WebhookEvent("ping", body=body)
    if event == "pull_request":
        if body.get("action") != "closed":
            return _ignored(body, f"pull request {body.get('action')}")
        sender = _get(body, "sender", "login")
        return _pull_request(body, _get(body, "pull_request", "html_url"), sender)
    if event == "push":
        repository = body.get("repository")
        urls = [_get(repository, k) for k in ("clone_url", "ssh_url", "html_url")]
        return _refresh(body, urls, [body.get("ref")])
    package = body.get("package" if event == "package" else "registry_package")
    if body.get("action") not in ("published", "updated"):
        return _ignored(body, f"package {body.get('action')}")
    version = _get(package, "package_version")
    if not isinstance(version, dict):
        return _refused(400, "invalid request body: no package_version")
    if _get(package, "package_type") not in ("CONTAINER", "docker"):
        return _ignored(body, f"package type {_get(package, 'package_type')}")
    url = str(version.get("package_url") or "").removesuffix(":")
    return _refresh(body, [url], [_get(version, "container_metadata", "tag", "name")])


def _gitlab(
    _: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes
) -> WebhookEvent:
    if not _same(headers.get("x-gitlab-token", ""), secret):
        return _refused(401, "missing or wrong X-Gitlab-Token")
    event = headers.get("x-gitlab-event", "")
    if event not in ("Push Hook", "Tag Push Hook", "Merge Request Hook"):
        return _refused(400, f"event type {event!r} is not supported")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if event == "Merge Request Hook":
        action = _get(body, "object_attributes", "action")
        if action not in ("close", "merge"):
            return _ignored(body, f"merge request {action}")
        sender = _get(body, "user", "username")
        return _pull_request(body, _get(body, "object_attributes", "url"), sender)
    repository = body.get("repository")
    urls = [_get(repository, "git_http_url"), _get(repository, "git_ssh_url")]
    return _refresh(body, urls, [body.get("ref")])


_BITBUCKET_EVENTS: Final = (
    "repo:push",
    "repo:refs_changed",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "pr:merged",
    "pr:declined",
)


def _bitbucket(
    _: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes
) -> WebhookEvent:
    event = headers.get("x-event-key", "")
    if event not in _BITBUCKET_EVENTS:
        return _refused(400, f"event type {event!r} is not supported")
    if not _signed(headers.get("x-hub-signature", ""), secret, raw):
        return _refused(401, "missing or wrong X-Hub-Signature")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if event == "repo:push":  # Bitbucket Cloud
        refs = []
        for change in _list(_get(body, "push", "changes")):
            new = _get(change, "new")
            if isinstance(_get(new, "name"), str):
                prefix = "refs/tags/" if _get(new, "type") == "tag" else "refs/heads/"
                refs.append(prefix + new["name"])
        return _refresh(body, [_get(body, "repository", "links", "html", "href")], refs)
    if event == "repo:refs_changed":  # Bitbucket Data Center
        clones = _list(_get(body, "repository", "links", "clone"))
        refs = [_get(change, "ref", "id") for change in _list(body.get("changes"))]
        return _refresh(body, [_get(c, "href") for c in clones], refs)
    if event.startswith("pullrequest:"):
        return _pull_request(body, _get(body, "pullrequest", "links", "html", "href"))
    return _pull_request(body, _get(body, "pullRequest", "links", "self", 0, "href"))


def _dockerhub(_: WebhookReceiver, __: str, ___: Mapping[str, str], raw: bytes) -> WebhookEvent:
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    name = _get(body, "repository", "repo_name")
    return _refresh(body, [name], [_get(body, "push_data", "tag")])


def _quay(_: WebhookReceiver, __: str, ___: Mapping[str, str], raw: bytes) -> WebhookEvent:
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    return _refresh(body, [body.get("docker_url")], _list(body.get("updated_tags")))


def _harbor(
    _: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes
) -> WebhookEvent:
    if not _same(headers.get("authorization", ""), secret):
        return _refused(401, "missing or wrong Authorization header")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if body.get("type") != "PUSH_ARTIFACT":
        return _refused(400, f"event type {body.get('type')!r} is not supported")
    resources = _list(_get(body, "event_data", "resources"))
    url = _get(resources, 0, "resource_url")
    return _refresh(body, [url], [_get(r, "tag") for r in resources])


def _artifactory(
    receiver: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes
) -> WebhookEvent:
    if not secret or not _same(headers.get("x-jfrog-event-auth", ""), hmac_sha256(secret, raw)):
        return _refused(401, "missing or wrong X-Jfrog-Event-Auth")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if body.get("event_type") != "pushed" or body.get("domain") != "docker":
        return _refused(501, "event type must be 'pushed' and domain must be 'docker'")
    data = body.get("data")
    image_type = _get(data, "image_type")
    if image_type not in ("docker", "oci"):
        return _refused(501, f"unsupported image type {image_type!r}")
    host = urlsplit(str(body.get("jpd_origin") or "")).netloc
    sections = str(_get(data, "path") or "").split("/")
    if not host or len(sections) < 2:
        return _refused(400, "invalid jpd_origin or data.path in the payload")
    config = receiver.config
    assert isinstance(config, ArtifactoryReceiver)
    repo = config.virtual_repo_name or str(_get(data, "repo_key") or "")
    url = "/".join([host, repo, *sections[:-2]])
    return _refresh(body, [url], [_get(data, "tag")])


def _azure(_: WebhookReceiver, __: str, headers: Mapping[str, str], raw: bytes) -> WebhookEvent:
    agent = headers.get("user-agent", "")
    if not agent.startswith(("AzureContainerRegistry", "VSServices")):
        return _refused(400, "request does not appear to have come from a supported service")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if agent.startswith("AzureContainerRegistry"):
        action = body.get("action")
        if action == "ping":
            return WebhookEvent("ping", body=body)
        if action != "push":
            return _refused(400, f"event type {action!r} is not supported")
        url = f"{_get(body, 'request', 'host')}/{_get(body, 'target', 'repository')}"
        return _refresh(body, [url], [_get(body, "target", "tag")])
    event = body.get("eventType")
    resource = body.get("resource")
    if event == "git.push":
        refs = [_get(u, "name") for u in _list(_get(resource, "refUpdates"))]
        return _refresh(body, [_get(resource, "repository", "remoteUrl")], refs)
    if event == "git.pullrequest.merged" or (
        event == "git.pullrequest.updated" and _get(resource, "status") == "abandoned"
    ):
        return _pull_request(body, _get(resource, "_links", "web", "href"))
    if event == "git.pullrequest.updated":
        return _ignored(body, "pull request updated")
    return _refused(400, f"event type {event!r} is not supported")


def _gitea(_: WebhookReceiver, secret: str, headers: Mapping[str, str], raw: bytes) -> WebhookEvent:
    event = headers.get("x-gitea-event", "")
    if event not in ("push", "pull_request"):
        return _refused(501, f"event type {event!r} is not supported")
    if not _signed(headers.get("x-hub-signature-256", ""), secret, raw):
        return _refused(401, "missing or wrong X-Hub-Signature-256")
    body = _object(raw)
    if isinstance(body, _Invalid):
        return _BAD_BODY
    if event == "pull_request":
        if body.get("action") != "closed":
            return _ignored(body, f"pull request {body.get('action')}")
        sender = _get(body, "sender", "login")
        return _pull_request(body, _get(body, "pull_request", "html_url"), sender)
    return _refresh(body, [_get(body, "repository", "clone_url")], [body.get("ref")])


def _generic(_: WebhookReceiver, __: str, ___: Mapping[str, str], raw: bytes) -> WebhookEvent:
    if not raw.strip():
        return WebhookEvent("generic")
    try:
        return WebhookEvent("generic", body=json.loads(raw))
    except ValueError:
        return _refused(400, "invalid request body: not JSON")


_READERS: Final[dict[str, Reader]] = {
    "github": _github,
    "gitlab": _gitlab,
    "bitbucket": _bitbucket,
    "dockerhub": _dockerhub,
    "quay": _quay,
    "harbor": _harbor,
    "artifactory": _artifactory,
    "azure": _azure,
    "gitea": _gitea,
    "generic": _generic,
}


# --- which Warehouses -------------------------------------------------------------------------


def repository_forms(url: str) -> set[str]:
    """``url`` in each of Kargo's normal forms (git, image, chart): an event rarely says which."""
    return {normalize_image_url(url), normalize_git_url(url), normalize_chart_url(url)}


def subscribed_url(subscription: RepoSubscription) -> str:
    """The normal form of the repository a subscription watches (Kargo's ``subscribedURLs``)."""
    if subscription.image is not None:
        return normalize_image_url(subscription.image.repo_url)
    if subscription.git is not None:
        return normalize_git_url(subscription.git.repo_url)
    assert subscription.chart is not None
    chart = subscription.chart
    url = chart.repo_url
    if url.startswith("oci://") and chart.name:
        url = f"{url.rstrip('/')}/{chart.name}"
    return normalize_chart_url(url)


def matching_warehouses(resources: ProjectResources, repo_urls: Iterable[str]) -> list[str]:
    """The project's Warehouses with a subscription to any of ``repo_urls``, sorted."""
    wanted = set().union(*(repository_forms(u) for u in repo_urls))
    return sorted(
        name
        for name, warehouse in resources.warehouses.items()
        if any(subscribed_url(s) in wanted for s in warehouse.spec.subscriptions)
    )


# --- the generic receiver ---------------------------------------------------------------------


@dataclass
class GenericResult:
    """One action's outcome, after Kargo's ``results[]`` entry."""

    action: str
    matched_when_expression: bool
    result: Literal["Success", "NotApplicable", "Error"]
    summary: str = ""
    warehouses: list[str] = field(default_factory=list)
    pull_requests: list[str] = field(default_factory=list)


def _base_env(headers: Mapping[str, str], query: Mapping[str, str], body: Any) -> dict[str, Any]:
    def header(name: Any) -> str:
        return headers.get(str(name).lower(), "")

    def header_values(name: Any) -> list[str]:
        value = headers.get(str(name).lower())
        return [value] if value is not None else []

    def param(name: Any) -> str:
        return query.get(str(name), "")

    return {
        "normalizeGit": normalize_git_url,
        "normalizeImage": normalize_image_url,
        "normalizeChart": normalize_chart_url,
        "request": {"header": header, "headers": header_values, "body": body, "params": param},
    }


def _as_string(template: str, env: Mapping[str, Any]) -> str:
    value = render_string(template, env)
    if not isinstance(value, str):
        raise ExpressionError(f"{template!r} gave {type(value).__name__}, not a string")
    return value


def _select_warehouses(
    criteria: GenericTargetSelection, resources: ProjectResources, env: Mapping[str, Any]
) -> list[str]:
    name = _as_string(criteria.name, env) if criteria.name else None
    selector = criteria.label_selector
    match_labels = (
        {key: _as_string(value, env) for key, value in (selector.match_labels or {}).items()}
        if selector
        else {}
    )
    requirements = [
        (r.key, r.operator, _as_string(r.value, env))
        for r in (criteria.index_selector.match_indices or () if criteria.index_selector else ())
    ]
    for key, _, _ in requirements:
        if key != "subscribedURLs":
            raise ExpressionError(f"index {key!r} is not one a Warehouse has (subscribedURLs)")
    chosen = []
    for warehouse_name, warehouse in resources.warehouses.items():
        if name is not None and warehouse_name != name:
            continue
        labels = dict(warehouse.metadata.labels or {})
        if selector and not labels_match(match_labels, selector.match_expressions, labels):
            continue
        urls = {subscribed_url(s) for s in warehouse.spec.subscriptions}
        if all((value in urls) == (op == "Equals") for _, op, value in requirements):
            chosen.append(warehouse_name)
    return chosen


def _pull_request_urls(criteria: GenericTargetSelection, env: Mapping[str, Any]) -> list[str]:
    indices = criteria.index_selector.match_indices if criteria.index_selector else None
    return [
        _as_string(r.value, env)
        for r in indices or ()
        if r.key == "pullRequestURL" and r.operator == "Equals"
    ]


def generic_targets(
    config: GenericReceiver,
    resources: ProjectResources,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: Any,
) -> list[GenericResult]:
    """Each action of a generic receiver: whether it applies, and the Warehouses it refreshes.

    Kargo's environment: ``request.header(name)``, ``request.headers(name)``,
    ``request.body``, ``request.params(name)``, ``params`` (the action's
    ``parameters``) and ``normalizeGit``/``normalizeImage``/``normalizeChart``.
    Promotion targets (index ``pullRequestURL``) land in ``pull_requests``.
    """
    base = _base_env(headers, query, body)
    results = []
    for action in config.actions or ():
        env = {**base, "params": dict(action.parameters or {})}
        try:
            met: Any = True
            if action.when_expression:
                met = evaluate(action.when_expression, env)
            if not isinstance(met, bool):
                raise ExpressionError(f"whenExpression gave {type(met).__name__}, not a bool")
        except ExpressionError as err:
            results.append(GenericResult(action.action, False, "Error", f"whenExpression: {err}"))
            continue
        if not met:
            results.append(
                GenericResult(action.action, False, "NotApplicable", "no whenExpression match")
            )
            continue
        result = GenericResult(action.action, True, "Success")
        try:
            for criteria in action.target_selection_criteria or ():
                if criteria.kind == "Warehouse":
                    result.warehouses.extend(_select_warehouses(criteria, resources, env))
                else:
                    result.pull_requests.extend(_pull_request_urls(criteria, env))
        except ExpressionError as err:
            results.append(GenericResult(action.action, True, "Error", f"targets: {err}"))
            continue
        result.warehouses = sorted(set(result.warehouses))
        results.append(result)
    return results


# --- receivers and their secrets --------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class BoundReceiver:
    """A project's receiver with its Secret's value, or the reason it has none."""

    project: str
    receiver: WebhookReceiver
    secret: str = ""
    path: str | None = None
    problem: str | None = None

    def __repr__(self) -> str:  # the secret, and the path derived from it, stay out of logs
        return f"BoundReceiver({self.project}/{self.receiver.name}, problem={self.problem!r})"


def bind_receivers(
    resources: ProjectResources, secret: Callable[[str, str], Mapping[str, str] | None]
) -> list[BoundReceiver]:
    """Each of the project's receivers, with its path when ``secret(project, name)`` holds
    the key its provider needs."""
    config = resources.project_config
    receivers = (config.spec.webhook_receivers or ()) if config else ()
    return _bind(resources.name, receivers, secret)


def bind_cluster_receivers(
    config: ClusterConfig | None, secret: Callable[[str, str], Mapping[str, str] | None]
) -> list[BoundReceiver]:
    """The ClusterConfig's receivers (project ``""``, as Kargo builds their paths: the hash of
    the receiver's name and secret alone); their Secrets are the ones serving every project
    (no ``namespace``), as Kargo reads them from its cluster Secrets namespace."""
    receivers = (config.spec.webhook_receivers or ()) if config else ()
    return _bind(CLUSTER_PROJECT, receivers, secret)


CLUSTER_PROJECT = ""
"""The project of a cluster receiver: none (its events reach every project's Warehouses)."""


def _bind(
    project: str,
    receivers: Iterable[WebhookReceiver],
    secret: Callable[[str, str], Mapping[str, str] | None],
) -> list[BoundReceiver]:
    bound = []
    for receiver in receivers:
        secret_name = receiver.config.secret_ref.name
        key = SECRET_KEYS[receiver.receiver_type]
        data = secret(project, secret_name)
        if data is None:
            problem = f"Secret {secret_name!r} is not in the credentials file"
        elif not data.get(key):
            problem = f"Secret {secret_name!r} has no {key!r} key"
        else:
            value = data[key]
            path = receiver_path(project, receiver.receiver_type, receiver.name, value)
            bound.append(BoundReceiver(project, receiver, value, path))
            continue
        bound.append(BoundReceiver(project, receiver, problem=problem))
    return bound
