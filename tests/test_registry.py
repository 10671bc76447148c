"""Image discovery against a real registry (Debian's docker-registry, distribution 2.8).

Request counts are taken from the registry's own access log. Link paging is
tested with httpx.MockTransport, because distribution 2.8 ignores ``n`` and
never pages.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from activities.registry import (
    MANIFEST_ACCEPT,
    CredentialProvider,
    DiscoveredImage,
    DiscoverImagesRequest,
    RegistryActivities,
    RegistryClient,
    discover_images,
    parse_repo_url,
)
from freightline.errors import (
    AuthenticationError,
    ConfigError,
    RegistryError,
    RegistryUnavailableError,
)
from freightline.kargo.selection import (
    ImageSelectionPolicy,
    filter_tags,
    order_by_build_date,
    parse_created,
    select_tags,
)
from tests.registry_fixture import (
    Pushed,
    Pusher,
    Registry,
    TokenIssuer,
    TokenServer,
    free_port,
    start_basic_registry,
    start_registry,
)

pytestmark = pytest.mark.integration

SemVer, Lexical, Digest, NewestBuild = "SemVer", "Lexical", "Digest", "NewestBuild"


def policy(**fields: Any) -> ImageSelectionPolicy:
    return ImageSelectionPolicy.model_validate(fields)


@asynccontextmanager
async def registry_client(
    credentials: CredentialProvider | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[RegistryClient]:
    async with httpx.AsyncClient(timeout=10, transport=transport) as http:
        yield RegistryClient(http, credentials)


async def discover(
    repo_url: str,
    selection: ImageSelectionPolicy,
    known_created: dict[str, str] | None = None,
    credentials: CredentialProvider | None = None,
) -> list[DiscoveredImage]:
    async with registry_client(credentials) as client:
        return await discover_images(client, repo_url, selection, known_created)


class Counter:
    """Requests the registry logged between start and stop."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.before = len(registry.settle_requests())

    def requests(self) -> list[tuple[str, str, int]]:
        return self.registry.settle_requests()[self.before :]

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for method, uri, status in self.requests():
            kind = "tags" if "/tags/list" in uri else uri.split("/")[-2]
            key = f"{method} {kind} {status}"
            counts[key] = counts.get(key, 0) + 1
        return counts


# --- the anonymous registry and its images ---------------------------------------------

APP_TAGS = {
    # tag: (created, oci)
    "1.0.0": ("2024-01-01T00:00:00Z", False),
    "1.1.0": ("2024-01-05T00:00:00.123456789Z", True),
    "1.2.0": ("2024-01-03T00:00:00Z", False),
    "v1.3.0": ("2024-01-02T00:00:00Z", True),
    "1.4": ("2024-01-04T00:00:00Z", False),
    "2.0.0": ("2023-12-01T00:00:00Z", False),
    "2.1.0-rc.1": ("2024-01-06T00:00:00Z", False),
    "nightly-b": ("2024-01-07T00:00:00Z", False),
    "nightly-a": ("2024-01-08T00:00:00Z", False),
}


class Images:
    """What the module's registry holds."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.app: dict[str, Pushed] = {}
        self.multi: dict[str, Pushed] = {}
        self.children: dict[str, dict[str, Pushed]] = {}

    def repo(self, name: str) -> str:
        return f"{self.registry.host}/{name}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def images(registry: Registry) -> Iterator[Images]:
    pushed = Images(registry)
    pusher = Pusher(registry)
    try:
        for tag, (created, oci) in APP_TAGS.items():
            pushed.app[tag] = pusher.image(
                "app",
                tag,
                created=created,
                oci=oci,
                annotations={"org.opencontainers.image.version": tag},
            )
        # "latest" is the same image as 2.0.0: same bytes, same digest.
        pushed.app["latest"] = pusher.image(
            "app",
            "latest",
            created=APP_TAGS["2.0.0"][0],
            salt="2.0.0-linux-amd64",
            annotations={"org.opencontainers.image.version": "2.0.0"},
        )
        assert pushed.app["latest"].digest == pushed.app["2.0.0"].digest
        for tag, platforms in {
            "1.0.0": {
                "linux/amd64": "2024-02-01T00:00:00Z",
                "linux/arm64/v8": "2024-03-01T00:00:00Z",
            },
            "1.1.0": {"linux/amd64": "2024-04-01T00:00:00Z"},
        }.items():
            index, children = pusher.index(
                "multi", tag, platforms, oci=True, annotations={"index": tag}
            )
            pushed.multi[tag], pushed.children[tag] = index, children
        pushed.multi["list-1.2.0"], pushed.children["list-1.2.0"] = pusher.index(
            "multi", "list-1.2.0", {"linux/arm64": "2024-05-01T00:00:00Z"}, oci=False
        )
        pushed.multi["amd64-only"] = pusher.image(
            "multi", "amd64-only", created="2024-06-01T00:00:00Z", architecture="amd64"
        )
        pushed.multi["arm64-only"] = pusher.image(
            "multi",
            "arm64-only",
            created="2024-07-01T00:00:00Z",
            architecture="arm64",
            variant="v8",
        )
        for i in range(30):
            pusher.image("many", f"1.{i}.0", created=f"2024-01-01T00:{i:02d}:00Z")
        yield pushed
    finally:
        pusher.close()


# --- strategies --------------------------------------------------------------------------


async def test_semver_without_constraint_orders_strict_semvers_newest_first(
    images: Images,
) -> None:
    found = await discover(images.repo("app"), policy())
    assert [i.tag for i in found] == ["2.1.0-rc.1", "2.0.0", "v1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    for image in found:
        assert image.digest == images.app[image.tag].digest
        assert image.annotations == {"org.opencontainers.image.version": image.tag}
        assert image.created is None  # not fetched: SemVer does not need it


async def test_semver_constraint_and_strict_semvers(images: Images) -> None:
    strict = await discover(images.repo("app"), policy(constraint="^1.1"))
    assert [i.tag for i in strict] == ["v1.3.0", "1.2.0", "1.1.0"]
    loose = await discover(images.repo("app"), policy(constraint="^1.1", strictSemvers=False))
    assert [i.tag for i in loose] == ["1.4", "v1.3.0", "1.2.0", "1.1.0"]
    pre = await discover(images.repo("app"), policy(constraint=">=2.0.0-0"))
    assert [i.tag for i in pre] == ["2.1.0-rc.1", "2.0.0"]
    ranged = await discover(images.repo("app"), policy(constraint="1.0 - 1.2 || >=2, <3"))
    assert [i.tag for i in ranged] == ["2.0.0", "1.2.0", "1.1.0", "1.0.0"]


async def test_lexical_with_allow_and_ignore_regexes(images: Images) -> None:
    found = await discover(
        images.repo("app"),
        policy(imageSelectionStrategy=Lexical, allowTagsRegexes=["^nightly-", "^1\\."]),
    )
    assert [i.tag for i in found] == ["nightly-b", "nightly-a", "1.4", "1.2.0", "1.1.0", "1.0.0"]
    found = await discover(
        images.repo("app"),
        policy(
            imageSelectionStrategy=Lexical,
            allowTagsRegexes=["^nightly-", "^1\\."],
            ignoreTagsRegexes=["-b$", "^1\\.[01]"],
        ),
    )
    assert [i.tag for i in found] == ["nightly-a", "1.4", "1.2.0"]
    assert all(i.digest == images.app[i.tag].digest for i in found)


async def test_digest_tracks_a_mutable_tag(registry: Registry, images: Images) -> None:
    repo = images.repo("tracked")
    pusher = Pusher(registry)
    try:
        first = pusher.image("tracked", "stable", created="2024-01-01T00:00:00Z", salt="one")
        counter = Counter(registry)
        found = await discover(repo, policy(imageSelectionStrategy=Digest, constraint="stable"))
        assert [(i.tag, i.digest) for i in found] == [("stable", first.digest)]
        # One manifest GET, no tag list.
        assert counter.kinds() == {"GET manifests 200": 1}
        second = pusher.image("tracked", "stable", created="2024-02-01T00:00:00Z", salt="two")
        found = await discover(repo, policy(imageSelectionStrategy=Digest, constraint="stable"))
        assert [(i.tag, i.digest) for i in found] == [("stable", second.digest)]
        assert second.digest != first.digest
    finally:
        pusher.close()
    missing = await discover(repo, policy(imageSelectionStrategy=Digest, constraint="nope"))
    assert missing == []


async def test_newest_build_orders_by_config_created(images: Images) -> None:
    found = await discover(images.repo("app"), policy(imageSelectionStrategy=NewestBuild))
    assert [i.tag for i in found] == [
        "nightly-a",
        "nightly-b",
        "2.1.0-rc.1",
        "1.1.0",
        "1.4",
        "1.2.0",
        "v1.3.0",
        "1.0.0",
        "latest",  # same date as 2.0.0: ties break by descending tag
        "2.0.0",
    ]
    assert found[3].created == parse_created("2024-01-05T00:00:00.123456Z")
    assert all(i.digest == images.app[i.tag].digest for i in found)


async def test_newest_build_request_counts_cold_and_warm(
    registry: Registry, images: Images
) -> None:
    selection = policy(imageSelectionStrategy=NewestBuild, discoveryLimit=5)
    counter = Counter(registry)
    cold = await discover(images.repo("many"), selection)
    assert [i.tag for i in cold] == ["1.29.0", "1.28.0", "1.27.0", "1.26.0", "1.25.0"]
    # Cold: one tag list, then one manifest and one config per tag (30 tags).
    assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 30, "GET blobs 200": 30}

    # The caller keeps what it learned, by digest; a fresh client (another
    # worker) then only lists tags and resolves each tag's digest.
    known = {i.digest: i.created.isoformat() for i in cold if i.created}
    async with registry_client() as client:
        everything = await discover_images(
            client, images.repo("many"), selection.model_copy(update={"discovery_limit": 100})
        )
        known = {i.digest: i.created.isoformat() for i in everything if i.created}
    counter = Counter(registry)
    warm = await discover(images.repo("many"), selection, known_created=known)
    assert warm == cold
    assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 30}


async def test_one_client_fetches_each_config_once(registry: Registry, images: Images) -> None:
    selection = policy(
        imageSelectionStrategy=NewestBuild, allowTagsRegexes=["^(2\\.0\\.0|latest)$"]
    )
    async with registry_client() as client:
        counter = Counter(registry)
        found = await discover_images(client, images.repo("app"), selection)
        assert [i.tag for i in found] == ["latest", "2.0.0"]
        # Two tags, one digest: the config is fetched once, even concurrently.
        assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 2, "GET blobs 200": 1}
        counter = Counter(registry)
        assert await discover_images(client, images.repo("app"), selection) == found
        assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 2}


async def test_cache_by_tag_reads_each_tag_once(registry: Registry, images: Images) -> None:
    """Kargo's cacheByTag: a warm NewestBuild discovery costs the tag list alone."""
    selection = policy(imageSelectionStrategy=NewestBuild, discoveryLimit=5, cacheByTag=True)
    async with registry_client() as client:
        counter = Counter(registry)
        cold = await discover_images(client, images.repo("many"), selection)
        assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 30, "GET blobs 200": 30}
        counter = Counter(registry)
        assert await discover_images(client, images.repo("many"), selection) == cold
        assert counter.kinds() == {"GET tags 200": 1}
        # Without cacheByTag every tag's manifest is read again (tags may move).
        counter = Counter(registry)
        uncached = selection.model_copy(update={"cache_by_tag": False})
        assert await discover_images(client, images.repo("many"), uncached) == cold
        assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 30}


async def test_discovery_limit(registry: Registry, images: Images) -> None:
    counter = Counter(registry)
    found = await discover(images.repo("many"), policy(discoveryLimit=3))
    assert [i.tag for i in found] == ["1.29.0", "1.28.0", "1.27.0"]
    assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 3}
    default = await discover(images.repo("many"), policy())
    assert len(default) == 20 and default[-1].tag == "1.10.0"
    assert len(await discover(images.repo("many"), policy(discoveryLimit=100))) == 30


# --- platforms -----------------------------------------------------------------------------


async def test_platform_picks_from_indexes_and_filters_single_images(images: Images) -> None:
    arm = await discover(
        images.repo("multi"), policy(imageSelectionStrategy=Lexical, platform="linux/arm64")
    )
    assert [i.tag for i in arm] == ["list-1.2.0", "arm64-only", "1.0.0"]
    by_tag = {i.tag: i for i in arm}
    # An index is recorded by its own digest, with its own annotations.
    assert by_tag["1.0.0"].digest == images.multi["1.0.0"].digest
    assert by_tag["1.0.0"].annotations == {"index": "1.0.0"}
    assert by_tag["arm64-only"].digest == images.multi["arm64-only"].digest

    amd = await discover(
        images.repo("multi"), policy(imageSelectionStrategy=Lexical, platform="linux/amd64")
    )
    assert [i.tag for i in amd] == ["amd64-only", "1.1.0", "1.0.0"]
    variant = await discover(
        images.repo("multi"), policy(imageSelectionStrategy=Lexical, platform="linux/arm64/v8")
    )
    assert [i.tag for i in variant] == ["arm64-only", "1.0.0"]
    assert await discover(images.repo("multi"), policy(platform="linux/s390x")) == []


async def test_newest_build_dates_an_index_by_its_platform(images: Images) -> None:
    arm = await discover(
        images.repo("multi"), policy(imageSelectionStrategy=NewestBuild, platform="linux/arm64")
    )
    assert [(i.tag, i.created and i.created.isoformat()) for i in arm] == [
        ("arm64-only", "2024-07-01T00:00:00+00:00"),
        ("list-1.2.0", "2024-05-01T00:00:00+00:00"),
        ("1.0.0", "2024-03-01T00:00:00+00:00"),
    ]
    amd = await discover(
        images.repo("multi"),
        policy(imageSelectionStrategy=NewestBuild, platform="linux/amd64", allowTagsRegexes=["^1"]),
    )
    assert [(i.tag, i.created and i.created.month) for i in amd] == [("1.1.0", 4), ("1.0.0", 2)]
    # Without a platform, an index is as new as its newest image (as Kargo).
    anything = await discover(
        images.repo("multi"), policy(imageSelectionStrategy=NewestBuild, allowTagsRegexes=["^1"])
    )
    assert [(i.tag, i.created and i.created.month) for i in anything] == [
        ("1.1.0", 4),
        ("1.0.0", 3),
    ]


async def test_platform_in_digest_strategy(images: Images) -> None:
    found = await discover(
        images.repo("multi"),
        policy(imageSelectionStrategy=Digest, constraint="1.1.0", platform="linux/arm64"),
    )
    assert found == []


async def test_head_resolves_digests_of_every_manifest_kind(images: Images) -> None:
    async with registry_client() as client:
        repo = parse_repo_url(images.repo("multi"))
        for tag in ("1.0.0", "list-1.2.0", "amd64-only"):
            assert await client.head_manifest(repo, tag) == images.multi[tag].digest
        assert await client.head_manifest(repo, "missing") is None


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_repository_is_a_registry_error(images: Images) -> None:
    with pytest.raises(RegistryError, match="not found"):
        await discover(images.repo("does-not-exist"), policy())


async def test_unreachable_registry_is_unavailable() -> None:
    with pytest.raises(RegistryUnavailableError, match="unreachable"):
        await discover(f"127.0.0.1:{free_port()}/app", policy())


async def test_repository_with_no_tags_left_is_empty(registry: Registry, images: Images) -> None:
    pusher = Pusher(registry)
    try:
        pushed = pusher.image("emptied", "only", salt="emptied")
        pusher.client.delete(f"/v2/emptied/manifests/{pushed.digest}").raise_for_status()
        raw = pusher.client.get("/v2/emptied/tags/list").json()
    finally:
        pusher.close()
    assert raw["tags"] is None  # what distribution 2.8 really says
    assert await discover(images.repo("emptied"), policy()) == []


@pytest.mark.parametrize(
    ("repo_url", "registry", "name", "url"),
    [
        ("nginx", "docker.io", "library/nginx", "https://registry-1.docker.io/v2/library/nginx"),
        ("docker.io/org/app", "docker.io", "org/app", "https://registry-1.docker.io/v2/org/app"),
        ("ghcr.io/org/app/sub", "ghcr.io", "org/app/sub", "https://ghcr.io/v2/org/app/sub"),
        ("localhost:5000/app", "localhost:5000", "app", "http://localhost:5000/v2/app"),
        ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "http://127.0.0.1:5000/v2/a/b"),
        ("https://127.0.0.1:5000/a", "127.0.0.1:5000", "a", "https://127.0.0.1:5000/v2/a"),
    ],
)
def test_repo_url(repo_url: str, registry: str, name: str, url: str) -> None:
    repo = parse_repo_url(repo_url)
    assert (repo.registry, repo.name, repo.base_url) == (registry, name, url)


@pytest.mark.parametrize("repo_url", ["nginx:1.25", "ghcr.io/a/b@sha256:abc", "Upper/Case", ""])
def test_bad_repo_url(repo_url: str) -> None:
    with pytest.raises(ConfigError, match="invalid image repoURL"):
        parse_repo_url(repo_url)


# --- authentication ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_basic_registry(tmp_path_factory.mktemp("basic-registry"), "robot", "s3cret") as reg:
        pusher = Pusher(reg)
        for tag in ("1.0.0", "1.1.0", "2.0.0"):
            pusher.image("app", tag)
        pusher.close()
        yield reg


async def test_basic_auth(basic_registry: Registry) -> None:
    repo = f"{basic_registry.host}/app"

    def good(host: str) -> tuple[str, str] | None:
        assert host == basic_registry.host
        return ("robot", "s3cret")

    with pytest.raises(AuthenticationError, match="none configured"):
        await discover(repo, policy())
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        await discover(repo, policy(), credentials=lambda _h: ("robot", "wrong"))

    counter = Counter(basic_registry)
    async with registry_client(good) as client:
        found = await discover_images(client, repo, policy())
        assert [i.tag for i in found] == ["2.0.0", "1.1.0", "1.0.0"]
        # One 401 for the first request; credentials go up front after that.
        assert counter.kinds() == {"GET tags 401": 1, "GET tags 200": 1, "GET manifests 200": 3}
        counter = Counter(basic_registry)
        await discover_images(client, repo, policy())
        assert counter.kinds() == {"GET tags 200": 1, "GET manifests 200": 3}


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    issuer = TokenIssuer(tmp_path_factory.mktemp("token-issuer"))
    server = TokenServer(issuer=issuer, service="test-registry", users={"robot": "t0ken"})
    with server.running():
        yield server


@pytest.fixture(scope="module")
def token_registry(token_server: TokenServer) -> Iterator[Registry]:
    workdir = token_server.issuer.key_path.parent / "registry"
    reg = start_registry(
        workdir,
        auth={
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer.name,
                "rootcertbundle": str(token_server.issuer.cert_path),
            }
        },
    )
    push_token = token_server.issue(["repository:app:pull,push"], subject="pusher")
    reg.headers = {"Authorization": f"Bearer {push_token}"}
    pusher = Pusher(reg)
    try:
        for tag in ("1.0.0", "1.1.0"):
            pusher.image("app", tag, oci=True)
        pusher.close()
        yield reg
    finally:
        reg.stop()


async def test_bearer_token_flow(token_server: TokenServer, token_registry: Registry) -> None:
    repo = f"{token_registry.host}/app"
    with pytest.raises(AuthenticationError, match="refused anonymous access"):
        await discover(repo, policy())
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        await discover(repo, policy(), credentials=lambda _h: ("robot", "nope"))

    token_server.requests.clear()
    counter = Counter(token_registry)
    async with registry_client(lambda _h: ("robot", "t0ken")) as client:
        found = await discover_images(client, repo, policy(imageSelectionStrategy=NewestBuild))
        assert {i.tag for i in found} == {"1.1.0", "1.0.0"}  # same build date: by tag
        assert [i.tag for i in found] == ["1.1.0", "1.0.0"]
        await discover_images(client, repo, policy())
    # One challenge, one token for the scope, then the cached token up front.
    assert [r["scopes"] for r in token_server.requests] == [["repository:app:pull"]]
    assert token_server.requests[0]["user"] == "robot"
    assert token_server.requests[0]["query"]["service"] == ["test-registry"]
    assert counter.kinds() == {
        "GET tags 401": 1,
        "GET tags 200": 2,
        "GET manifests 200": 4,
        "GET blobs 200": 2,
    }


async def test_bearer_token_as_access_token(
    token_server: TokenServer, token_registry: Registry
) -> None:
    token_server.token_key = "access_token"
    try:
        found = await discover(
            f"{token_registry.host}/app", policy(), credentials=lambda _h: ("robot", "t0ken")
        )
    finally:
        token_server.token_key = "token"
    assert [i.tag for i in found] == ["1.1.0", "1.0.0"]


# --- Link paging, which distribution 2.8 does not do: a MockTransport speaking the API ----


def paging_registry(pages: dict[str, tuple[list[str] | None, str | None]]) -> httpx.MockTransport:
    """Serves ``pages`` (query string -> (tags, next link)) and a manifest for any tag."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/tags/list"):
            tags, link = pages[request.url.query.decode()]
            headers = {"Link": f'<{link}>; rel="next"'} if link else {}
            return httpx.Response(200, json={"name": "app", "tags": tags}, headers=headers)
        tag = request.url.path.rsplit("/", 1)[1]
        assert request.headers["Accept"] == MANIFEST_ACCEPT
        body = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:c"}, "tag": tag})
        return httpx.Response(
            200,
            content=body.encode(),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )

    transport = httpx.MockTransport(handle)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


async def test_tag_list_follows_link_pages() -> None:
    transport = paging_registry(
        {
            "": (["1.0.0", "3.0.0"], "/v2/app/tags/list?last=3.0.0&n=2"),
            "last=3.0.0&n=2": (None, "http://127.0.0.1:9/v2/app/tags/list?last=x"),
            "last=x": (["2.0.0", "latest"], None),
        }
    )
    async with registry_client(transport=transport) as client:
        found = await discover_images(client, "127.0.0.1:9/app", policy())
        assert [i.tag for i in found] == ["3.0.0", "2.0.0", "1.0.0"]
        # Without a Docker-Content-Digest header the digest is the body's sha256.
        assert all(i.digest.startswith("sha256:") and len(i.digest) == 71 for i in found)
        tags = await client.list_tags(parse_repo_url("127.0.0.1:9/app"))
        assert tags == ["1.0.0", "3.0.0", "2.0.0", "latest"]


async def test_tag_list_link_to_another_host_is_refused() -> None:
    transport = paging_registry({"": (["1.0.0"], "http://elsewhere.invalid/v2/app/tags/list")})
    async with registry_client(transport=transport) as client:
        with pytest.raises(RegistryError, match="links to another host"):
            await client.list_tags(parse_repo_url("127.0.0.1:9/app"))


async def test_tag_list_link_loop_ends() -> None:
    transport = paging_registry({"": (["1.0.0"], "/v2/app/tags/list"), "n=1": ([], None)})
    async with registry_client(transport=transport) as client:
        assert await client.list_tags(parse_repo_url("127.0.0.1:9/app")) == ["1.0.0"]


# --- the activity and the policy model --------------------------------------------------------


async def test_activity_takes_kargo_shaped_json(images: Images) -> None:
    request = DiscoverImagesRequest.model_validate(
        {
            "repoURL": images.repo("app"),
            "policy": {
                "imageSelectionStrategy": "SemVer",
                "constraint": "~1.2",
                "discoveryLimit": 1,
            },
        }
    )
    async with registry_client() as client:
        found = await RegistryActivities(client).discover_images(request)
    assert [i.tag for i in found] == ["1.2.0"]
    assert found[0].model_dump(mode="json")["createdAt"] is None


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"constraint": ">>1"}, "invalid semver constraint '>>1'"),
        ({"allowTagsRegexes": ["("]}, "invalid regex '('"),
        ({"ignoreTagsRegexes": ["[a-"]}, "invalid regex"),
        ({"platform": "linux"}, "invalid platform 'linux'"),
        ({"discoveryLimit": 0}, "greater than or equal to 1"),
        ({"discoveryLimit": 101}, "less than or equal to 100"),
        ({"imageSelectionStrategy": "Digest"}, "needs a constraint"),
        ({"imageSelectionStrategy": "Newest"}, "SemVer"),
    ],
)
def test_policy_validation(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace("[", r"\[")):
        ImageSelectionPolicy.model_validate(fields)


def test_policy_round_trips_in_kargo_names() -> None:
    selection = policy(
        imageSelectionStrategy="Lexical", strictSemvers=False, platform="linux/arm64"
    )
    dumped = selection.model_dump(mode="json")
    assert dumped["imageSelectionStrategy"] == "Lexical"
    assert dumped["strictSemvers"] is False
    assert ImageSelectionPolicy.model_validate(dumped) == selection
    assert ImageSelectionPolicy(strategy="Lexical") == policy(imageSelectionStrategy="Lexical")


def test_pure_selection_never_trusts_input_order() -> None:
    tags = ["1.10.0", "1.9.0", "v1.11.0", "1.2", "latest", "1.9.0", "1.0.0+build"]
    assert select_tags(policy(), tags) == ["v1.11.0", "1.10.0", "1.9.0", "1.0.0+build"]
    assert select_tags(policy(strictSemvers=False), tags)[-2:] == ["1.2", "1.0.0+build"]
    assert select_tags(policy(imageSelectionStrategy=Lexical), tags) == sorted(
        set(tags), reverse=True
    )
    assert select_tags(policy(imageSelectionStrategy=Digest, constraint="latest"), tags) == [
        "latest"
    ]
    assert filter_tags(policy(ignoreTagsRegexes=["\\."]), tags) == ["latest"]
    created = {
        "a": parse_created("2024-01-01T00:00:00Z"),
        "b": parse_created("2024-01-01T00:00:00+00:00"),
        "c": None,
        "d": parse_created("2025-01-01T00:00:00+01:00"),
    }
    assert order_by_build_date(created) == ["d", "b", "a", "c"]
