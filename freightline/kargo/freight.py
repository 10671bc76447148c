"""The Freight ID rule and Freight aliases: the one place that knows them.

A Freight ID is Kargo's (``pkg/api.GenerateFreightID`` at the commit pinned in
REFERENCE.md), so Freight a Kargo user already has keeps its name:

- each artifact becomes one string:

  - commit: ``<normalized git URL>:<tag>:<id>``, or ``<normalized git URL>:<id>``
    when it has no tag (a commit re-tagged later is new Freight);
  - image: ``<repoURL>:<tag>@<digest>`` (both, so a moved tag or a re-tagged
    digest is new Freight; the URL is used as written);
  - chart: ``path.Join(<normalized chart URL>, <name>):<version>``;
  - generic artifact: ``<artifactType>:<subscriptionName>:<version>``;

  and commit, image and chart strings get ``:<subscriptionName>`` appended when
  the artifact names its subscription;
- the strings are sorted, joined with ``|``, prefixed with ``<origin kind>/<origin
  name>:``, and the ID is the hex SHA-1 of that.

URL normalization follows Kargo's ``pkg/urls``: git URLs are lower-cased,
lose user info (http/s), a trailing ``/`` and ``.git``, and SCP-style
``git@host:path`` becomes ``ssh://git@host/path``; chart URLs are lower-cased,
lose ``oci://``, and Docker Hub names lose ``docker.io``/``library/``.

Aliases (``wise-otter``) are derived from the ID by :func:`freight_alias`.

The expression functions over one Freight (``imageFrom``, ``commitFrom``,
``chartFrom``, ``warehouse``) live here too, one implementation for promotion
steps, Freight creation criteria and verification: :func:`artifact_functions`.
Repositories are compared in the normal forms above, one rule per kind
(:func:`same_repository`).
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from freightline.kargo.expressions import Time
from freightline.kargo.resources import (
    ArtifactReference,
    Chart,
    Freight,
    FreightOrigin,
    GitCommit,
    Image,
    ProjectResources,
    Stage,
    Warehouse,
)

__all__ = [
    "freight_alias",
    "freight_id",
    "freight_id_preimage",
    "normalize_chart_url",
    "normalize_git_url",
    "normalize_image_url",
    "requested_origins",
    "subscribed_repositories",
]


# --- the ID ------------------------------------------------------------------------------------


def freight_id(
    freight_or_origin: Freight | FreightOrigin,
    images: Iterable[Image] = (),
    commits: Iterable[GitCommit] = (),
    charts: Iterable[Chart] = (),
    artifacts: Iterable[ArtifactReference] = (),
) -> str:
    """The Freight ID (hex SHA-1) of a Freight, or of an origin plus its artifacts.

    The order of the artifacts does not matter.
    """
    preimage = freight_id_preimage(freight_or_origin, images, commits, charts, artifacts)
    # SHA-1 names Freight (as in Kargo); it is an identifier, not a security measure.
    return hashlib.sha1(preimage.encode("utf-8"), usedforsecurity=False).hexdigest()


def freight_id_preimage(
    freight_or_origin: Freight | FreightOrigin,
    images: Iterable[Image] = (),
    commits: Iterable[GitCommit] = (),
    charts: Iterable[Chart] = (),
    artifacts: Iterable[ArtifactReference] = (),
) -> str:
    """The exact string whose SHA-1 is the Freight ID (useful to explain an ID)."""
    if isinstance(freight_or_origin, Freight):
        freight = freight_or_origin
        origin = freight.origin
        images = freight.images or ()
        commits = freight.commits or ()
        charts = freight.charts or ()
        artifacts = freight.artifacts or ()
    else:
        origin = freight_or_origin
    parts = [_commit_part(c) for c in commits]
    parts += [_image_part(i) for i in images]
    parts += [_chart_part(c) for c in charts]
    parts += [_artifact_part(a) for a in artifacts]
    # Code-point order equals Go's byte order for UTF-8 strings.
    parts.sort()
    return f"{origin.kind}/{origin.name}:{'|'.join(parts)}"


def _with_subscription(base: str, subscription_name: str | None) -> str:
    return f"{base}:{subscription_name}" if subscription_name else base


def _commit_part(commit: GitCommit) -> str:
    url = normalize_git_url(commit.repo_url or "")
    # A tag is part of a commit's identity: re-tagging a commit makes new Freight.
    base = f"{url}:{commit.tag}:{commit.id or ''}" if commit.tag else f"{url}:{commit.id or ''}"
    return _with_subscription(base, commit.subscription_name)


def _image_part(image: Image) -> str:
    base = f"{image.repo_url or ''}:{image.tag or ''}@{image.digest or ''}"
    return _with_subscription(base, image.subscription_name)


def _chart_part(chart: Chart) -> str:
    location = _go_path_join(normalize_chart_url(chart.repo_url or ""), chart.name or "")
    return _with_subscription(f"{location}:{chart.version or ''}", chart.subscription_name)


def _artifact_part(artifact: ArtifactReference) -> str:
    return f"{artifact.artifact_type or ''}:{artifact.subscription_name}:{artifact.version}"


# --- URL normalization (Kargo's pkg/urls) ------------------------------------------------------


def _sanitize(url: str) -> str:
    """Drop non-printable characters anywhere (BOMs, zero-width spaces) and trim."""
    return "".join(ch for ch in url if ch.isprintable()).strip()


_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9\-._~%!$&'()*+,;=]*)(:\d*)?$")
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def _url_parses(netloc: str, rest: str) -> bool:
    """Whether Go's url.Parse would accept a URL with this authority and remainder."""
    host = netloc.rsplit("@", 1)[-1]
    if _HOST.match(host) is None:
        return False
    return _BAD_ESCAPE.search(rest) is None and " " not in rest


def _rebuild(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    out = f"{scheme}:" if scheme else ""
    if scheme or netloc:
        out += f"//{netloc}"
    out += path
    if query:
        out += f"?{query}"
    if fragment:
        out += f"#{fragment}"
    return out


def _trim_repo_path(path: str) -> str:
    return path.removesuffix("/").removesuffix(".git")


_SCP_SYNTAX = re.compile(r"^((?:[\w-]+@)?[\w-]+(?:\.[\w-]+)*)(?::(.*))?$")


def normalize_git_url(repo: str) -> str:
    """Kargo's canonical form of a git URL (``https://github.com/a/b.git/`` -> ``.../a/b``).

    A URL it cannot normalize is returned unchanged.
    """
    original = repo
    repo = _sanitize(repo.lower())
    if repo.startswith(("http://", "https://", "ssh://")):
        parts = urlsplit(repo)
        if parts.query or not _url_parses(parts.netloc, parts.path + parts.fragment):
            return original
        netloc = parts.netloc
        if parts.scheme != "ssh":
            netloc = netloc.rsplit("@", 1)[-1]  # user info is dropped for http(s) only
        path = _trim_repo_path(parts.path)
        return _rebuild(parts.scheme, netloc, path, "", parts.fragment)
    match = _SCP_SYNTAX.match(repo)
    if match is None:
        return original
    user_host, path = match.group(1), match.group(2) or ""
    path_parts = urlsplit(path)
    if not _url_parses(path_parts.netloc, path_parts.path + path_parts.query):
        return original
    trimmed = _rebuild(
        path_parts.scheme,
        path_parts.netloc,
        _trim_repo_path(path_parts.path),
        path_parts.query,
        path_parts.fragment,
    )
    return f"ssh://{user_host}/{trimmed}" if trimmed else f"ssh://{user_host}"


def normalize_chart_url(repo: str) -> str:
    """Kargo's canonical form of a chart repository URL (no ``oci://``, lower case)."""
    sanitized = _sanitize(repo)
    return normalize_image_url(sanitized.lower().removeprefix("oci://"))


_REPOSITORY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-./")
_TAG = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DOCKER_HUB = ("index.docker.io", "registry-1.docker.io")


def normalize_image_url(repo_url: str) -> str:
    """Kargo's canonical form of an image repository (``docker.io/library/nginx`` -> ``nginx``).

    Tags and digests are dropped; a name that does not parse is returned unchanged.
    """
    original = repo_url
    name = _sanitize(repo_url.lower())
    parsed = _parse_image_reference(name)
    if parsed is None:
        return original
    registry, repository = parsed
    if registry in _DOCKER_HUB:
        return repository.removeprefix("library/")
    return f"{registry}/{repository}"


def _parse_image_reference(name: str) -> tuple[str, str] | None:
    """(registry, repository) as go-containerregistry's weak parsing finds them, or None."""
    if "@" in name:
        base, _, digest = name.partition("@")
        if "@" in digest or _DIGEST.match(digest) is None:
            return None
        name = base
    segments = name.split(":")
    if len(segments) > 1 and "/" not in segments[-1]:
        if _TAG.match(segments[-1]) is None:
            return None
        name = ":".join(segments[:-1])
    if not name:
        return None
    registry = ""
    repository = name
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first):
        registry, repository = first, rest
    if not 2 <= len(repository) <= 255 or not set(repository) <= _REPOSITORY_CHARS:
        return None
    if registry and (_HOST.match(registry) is None or "@" in registry):
        return None
    if registry in ("", "docker.io"):
        registry = "index.docker.io"
    if registry == "index.docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _go_path_join(*elements: str) -> str:
    """Go's ``path.Join``: join the non-empty elements with ``/`` and clean the result."""
    joined = "/".join(e for e in elements if e)
    if not joined:
        return ""
    rooted = joined.startswith("/")
    out: list[str] = []
    for segment in joined.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(segment)
    cleaned = ("/" if rooted else "") + "/".join(out)
    return cleaned or "."


# --- aliases -----------------------------------------------------------------------------------

_ADJECTIVES = (
    "able", "agile", "amber", "ample", "azure", "balmy", "bold", "brave", "breezy", "bright",
    "brisk", "calm", "candid", "cheery", "civic", "clever", "cosmic", "cozy", "crisp", "curious",
    "dapper", "daring", "deft", "eager", "earnest", "easy", "elated", "epic", "fair", "fancy",
    "fearless", "fierce", "fleet", "fluffy", "frank", "free", "fresh", "friendly", "frosty",
    "gentle", "giddy", "glad", "golden", "graceful", "grand", "hardy", "hasty", "hearty",
    "honest", "humble", "jolly", "jovial", "joyful", "keen", "kind", "lively", "loyal", "lucky",
    "lunar", "mellow", "merry", "mighty", "misty", "modest", "nimble", "noble", "peppy", "perky",
    "plucky", "polite", "proud", "quick", "quiet", "radiant", "rapid", "ready", "regal", "robust",
    "rosy", "rustic", "sage", "serene", "sharp", "shiny", "silent", "sleek", "smart", "snappy",
    "solar", "spry", "steady", "stellar", "sturdy", "sunny", "swift", "tidy", "trusty", "vivid",
    "warm", "witty", "wise", "zesty",
)  # fmt: skip

_ANIMALS = (
    "alpaca", "ant", "badger", "bat", "bear", "beaver", "bison", "bobcat", "buffalo", "camel",
    "caribou", "cat", "cheetah", "chipmunk", "cobra", "condor", "cougar", "coyote", "crab",
    "crane", "crow", "deer", "dingo", "dolphin", "donkey", "dove", "duck", "eagle", "eel",
    "elk", "emu", "falcon", "ferret", "finch", "fox", "frog", "gazelle", "gecko", "gibbon",
    "giraffe", "goat", "goose", "gopher", "gorilla", "hare", "hawk", "hedgehog", "heron",
    "hippo", "horse", "ibex", "ibis", "iguana", "impala", "jackal", "jaguar", "kestrel",
    "kiwi", "koala", "lemur", "leopard", "lion", "llama", "lynx", "magpie", "marmot", "meerkat",
    "mink", "mole", "moose", "narwhal", "newt", "ocelot", "octopus", "orca", "otter", "owl",
    "panda", "panther", "parrot", "pelican", "penguin", "puffin", "quail", "rabbit", "raccoon",
    "raven", "robin", "salmon", "seal", "shark", "sloth", "sparrow", "squid", "stork", "swan",
    "tapir", "tiger", "toucan", "turtle", "walrus", "weasel", "whale", "wolf", "wombat", "yak",
    "zebra",
)  # fmt: skip


def freight_alias(freight_id: str, taken: Collection[str] = ()) -> str:
    """A human alias like ``wise-otter``, derived from a Freight ID.

    Pure and deterministic. When the alias is in ``taken`` (aliases already used
    in the project), the next candidate in a fixed sequence is tried, so
    Freight created in the same order always gets the same aliases.
    """
    attempt = 0
    while True:
        seed = freight_id if attempt == 0 else f"{freight_id}#{attempt}"
        digest = hashlib.sha256(seed.encode("utf-8")).digest()
        adjective = _ADJECTIVES[int.from_bytes(digest[:8], "big") % len(_ADJECTIVES)]
        animal = _ANIMALS[int.from_bytes(digest[8:16], "big") % len(_ANIMALS)]
        alias = f"{adjective}-{animal}"
        if attempt >= 100:
            # 10,000 words pairs can run out in a large project: number the alias.
            alias = f"{alias}-{attempt}"
        if alias not in taken:
            return alias
        attempt += 1


RepositoryKind = Literal["git", "image", "chart"]
_NORMALIZERS: dict[RepositoryKind, Callable[[str], str]] = {
    "git": normalize_git_url,
    "image": normalize_image_url,
    "chart": normalize_chart_url,
}


def same_repository(kind: RepositoryKind, a: str | None, b: str | None) -> bool:
    """Whether two URLs name the same git repository, image repository or chart repository,
    compared in Kargo's normal form of that kind (the one rule everywhere URLs are matched)."""
    if a is None or b is None:
        return False
    normalize = _NORMALIZERS[kind]
    return normalize(a.strip()) == normalize(b.strip())


@dataclass(frozen=True, slots=True)
class FreightOriginView:
    """What ``warehouse(name)`` gives: Kargo's ``FreightOrigin`` (``Kind``, ``Name``)."""

    Kind: str
    Name: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.Kind, "name": self.Name}


@dataclass(frozen=True, slots=True)
class ImageView:
    """What ``imageFrom()`` gives: Kargo's ``Image`` fields; an unknown field is an error."""

    RepoURL: str | None
    Tag: str | None
    Digest: str | None
    Annotations: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "repoURL": self.RepoURL,
            "tag": self.Tag,
            "digest": self.Digest,
            "annotations": self.Annotations,
        }


@dataclass(frozen=True, slots=True)
class CommitView:
    """What ``commitFrom()`` gives, in every context.

    Kargo gives a ``GitCommit`` (``Message``) in promotions and verification and a
    ``DiscoveredCommit`` (``Subject``, ``CreatorDate``) in Freight creation criteria;
    this object answers both names, so an expression copied from either page works
    anywhere. ``Message`` and ``Subject`` are both the commit's first line.
    """

    RepoURL: str | None
    ID: str | None
    Branch: str | None
    Tag: str | None
    Message: str | None
    Subject: str | None
    Author: str | None
    Committer: str | None
    CreatorDate: Time | None

    def to_json(self) -> dict[str, Any]:
        return {
            "repoURL": self.RepoURL,
            "id": self.ID,
            "branch": self.Branch,
            "tag": self.Tag,
            "message": self.Message,
            "author": self.Author,
            "committer": self.Committer,
        }


@dataclass(frozen=True, slots=True)
class ChartView:
    """What ``chartFrom()`` gives: Kargo's ``Chart`` fields."""

    RepoURL: str | None
    Name: str | None
    Version: str | None

    def to_json(self) -> dict[str, Any]:
        return {"repoURL": self.RepoURL, "name": self.Name, "version": self.Version}


@dataclass(frozen=True, slots=True)
class ArtifactView:
    """What ``artifactFrom()`` gives: Kargo's generic ``ArtifactReference``."""

    ArtifactType: str | None
    SubscriptionName: str
    Version: str
    Metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "artifactType": self.ArtifactType,
            "subscriptionName": self.SubscriptionName,
            "version": self.Version,
            "metadata": self.Metadata,
        }


def _creator_date(
    commit_id: str | None, dates: Mapping[str, datetime.datetime] | None
) -> Time | None:
    moment = (dates or {}).get(commit_id or "")
    return None if moment is None else Time(moment)


def _origin_of(function: str, origin: Any) -> str | None:
    """The Warehouse name an optional ``warehouse("name")`` argument asks for."""
    if origin is None:
        return None
    if isinstance(origin, FreightOriginView):
        return origin.Name
    if isinstance(origin, dict) and isinstance(origin.get("name"), str):
        return str(origin["name"])  # the map form older Freightline documented
    raise ValueError(
        f"{function}: the origin argument must come from warehouse(name), "
        f"not {type(origin).__name__}"
    )


def _ambiguous(function: str, url: str, origins: list[str]) -> str:
    return (
        f"more than one Warehouse of the Stage's Freight could provide {url} "
        f"({', '.join(origins)}): name the origin, e.g. "
        f'{function}("{url}", warehouse("{origins[0]}"))'
    )


def _has(freight: Freight, kind: RepositoryKind, url: str, name: str | None) -> bool:
    if kind == "image":
        return any(same_repository("image", i.repo_url, url) for i in freight.images or ())
    if kind == "git":
        return any(same_repository("git", c.repo_url, url) for c in freight.commits or ())
    return any(
        same_repository("chart", c.repo_url, url) and (name is None or c.name == name)
        for c in freight.charts or ()
    )


def _repo_arg(function: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{function}: first argument must be a string, not {type(value).__name__}")
    return value


def subscribed_repositories(warehouse: Warehouse) -> tuple[str, ...]:
    """What a Warehouse subscribes to, as the keys :func:`artifact_functions` compares
    (``image:<url>``, ``git:<url>``, ``chart:<url>#<name>``, URLs in their normal form)."""
    keys = []
    for subscription in warehouse.spec.subscriptions:
        if subscription.image is not None:
            keys.append(_repository_key("image", subscription.image.repo_url))
        elif subscription.git is not None:
            keys.append(_repository_key("git", subscription.git.repo_url))
        elif subscription.chart is not None:
            chart = subscription.chart
            keys.append(_repository_key("chart", chart.repo_url, chart.name or ""))
    return tuple(keys)


def requested_origins(resources: ProjectResources, stage: Stage) -> dict[str, tuple[str, ...]]:
    """Each Warehouse a Stage fed by several requests Freight from → what it subscribes to:
    what :func:`artifact_functions` needs to pick an origin (empty for a single origin,
    which needs no choosing)."""
    if len(stage.spec.requested_freight) < 2:
        return {}
    origins = {}
    for request in stage.spec.requested_freight:
        warehouse = resources.warehouses.get(request.origin.name)
        if warehouse is not None:
            origins[request.origin.name] = subscribed_repositories(warehouse)
    return origins


def _repository_key(kind: RepositoryKind, url: str, name: str | None = None) -> str:
    key = f"{kind}:{_NORMALIZERS[kind](url.strip())}"
    return key if name is None else f"{key}#{name}"


def _provides(keys: Collection[str], kind: RepositoryKind, url: str, name: str | None) -> bool:
    if kind != "chart":
        return _repository_key(kind, url) in keys
    prefix = _repository_key("chart", url, "")
    return any(k.startswith(prefix) and (name is None or k == prefix + name) for k in keys)


def artifact_functions(
    freight: Freight | Iterable[Freight],
    *,
    commit_dates: Mapping[str, datetime.datetime] | None = None,
    subscriptions: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Callable[..., Any]]:
    """Kargo's expression functions over a Stage's Freight (one Freight, or one per origin):
    ``imageFrom(repoURL[, origin])``, ``commitFrom(repoURL[, origin])``,
    ``chartFrom(repoURL[, name][, origin])``, ``artifactFrom(subscription[, origin])`` (each
    nil when no Freight has such an artifact) and ``warehouse(name)`` (an origin).

    The one implementation for promotion steps, Freight creation criteria and
    verification: the same call gives the same answer everywhere. ``commit_dates`` (commit
    ID to its creator date, known right after discovery) fills ``CreatorDate``.

    Without an origin argument, Kargo's rule picks the origin over a Stage's Freight
    collection: ``subscriptions`` (each requested Warehouse to
    :func:`subscribed_repositories`) names the one Warehouse that subscribes to the
    repository; two that do are ambiguous, an error asking for ``warehouse(name)``. When no
    requested Warehouse subscribes to it (Freight applied by hand, a subscription since
    removed; Kargo gives nil there), the Freight of the collection that has it answers, and
    two origins that have it are ambiguous too.
    """
    collection = [freight] if isinstance(freight, Freight) else list(freight)

    def candidates(
        function: str,
        origin: Any,
        kind: RepositoryKind | None = None,
        url: str = "",
        name: str | None = None,
    ) -> list[Freight]:
        wanted = _origin_of(function, origin)
        if wanted is None and kind is not None and len(subscriptions or ()) > 1:
            providers = sorted(
                o for o, keys in (subscriptions or {}).items() if _provides(keys, kind, url, name)
            )
            if len(providers) > 1:
                raise ValueError(_ambiguous(function, url, providers))
            if providers:
                wanted = providers[0]
        found = [f for f in collection if wanted is None or f.origin.name == wanted]
        if wanted is None and kind is not None and len(collection) > 1:
            having = sorted({f.origin.name for f in found if _has(f, kind, url, name)})
            if len(having) > 1:
                raise ValueError(_ambiguous(function, url, having))
        return found

    def image_from(repo_url: Any, origin: Any = None) -> ImageView | None:
        url = _repo_arg("imageFrom", repo_url)
        for held in candidates("imageFrom", origin, "image", url):
            for image in held.images or ():
                if same_repository("image", image.repo_url, url):
                    return ImageView(
                        image.repo_url, image.tag, image.digest, dict(image.annotations or {})
                    )
        return None

    def commit_from(repo_url: Any, origin: Any = None) -> CommitView | None:
        url = _repo_arg("commitFrom", repo_url)
        for held in candidates("commitFrom", origin, "git", url):
            for commit in held.commits or ():
                if same_repository("git", commit.repo_url, url):
                    return CommitView(
                        RepoURL=commit.repo_url,
                        ID=commit.id,
                        Branch=commit.branch,
                        Tag=commit.tag,
                        Message=commit.message,
                        Subject=commit.message,
                        Author=commit.author,
                        Committer=commit.committer,
                        CreatorDate=_creator_date(commit.id, commit_dates),
                    )
        return None

    def chart_from(repo_url: Any, *rest: Any) -> ChartView | None:
        # chartFrom(repoURL), (repoURL, name), (repoURL, origin) or (repoURL, name, origin).
        url = _repo_arg("chartFrom", repo_url)
        if len(rest) > 2:
            raise ValueError(f"chartFrom: expected 1 to 3 arguments, got {len(rest) + 1}")
        name = rest[0] if rest and isinstance(rest[0], str) else None
        origins = [arg for arg in rest if not isinstance(arg, str)]
        for held in candidates("chartFrom", origins[0] if origins else None, "chart", url, name):
            for chart in held.charts or ():
                if same_repository("chart", chart.repo_url, url) and (
                    name is None or chart.name == name
                ):
                    return ChartView(chart.repo_url, chart.name, chart.version)
        return None

    def artifact_from(subscription: Any, origin: Any = None) -> ArtifactView | None:
        wanted = _repo_arg("artifactFrom", subscription)
        for held in candidates("artifactFrom", origin):
            for artifact in held.artifacts or ():
                if artifact.subscription_name == wanted:
                    return ArtifactView(
                        artifact.artifact_type,
                        artifact.subscription_name,
                        artifact.version,
                        dict(artifact.metadata or {}),
                    )
        return None

    def warehouse(name: Any) -> FreightOriginView:
        if not isinstance(name, str) or not name:
            raise ValueError("warehouse: the name must be a non-empty string")
        return FreightOriginView("Warehouse", name)

    return {
        "imageFrom": image_from,
        "commitFrom": commit_from,
        "chartFrom": chart_from,
        "artifactFrom": artifact_from,
        "warehouse": warehouse,
    }
