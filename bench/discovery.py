"""Discovery: SemVer over 5,000 tags against ``skopeo list-tags``; NewestBuild over 500 tags,
cold and warm.

    .venv/bin/python -m bench.discovery [--tags 5000] [--builds 500] [--runs 5]

A local docker-registry (distribution 2.8) holds ``app`` with ``tags`` tags (90% SemVer,
the rest not) all pointing at one image, and ``builds`` with ``builds`` distinct images
whose build dates differ. Freightline's discovery (``discover_images``: list every tag,
select, resolve the newest 20 to digests) is timed with a fresh registry client per run;
``skopeo list-tags`` only lists, so it is the floor for the listing part. NewestBuild must
read every image's config for its build date: cold with a fresh client, warm with the
same client (the worker keeps config summaries by digest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from activities.registry import RegistryClient, discover_images, parse_repo_url
from bench.harness import machine, median, now, workdir
from freightline.kargo.selection import ImageSelectionPolicy, select_tags
from freightline.kargo.semver import try_parse_version
from tests.registry_fixture import Pusher, Registry, start_registry


def semver_tags(count: int) -> list[str]:
    tags = []
    for n in range(count):
        if n % 10 == 9:
            tags.append(f"build-{n:05d}")
        else:
            tags.append(f"{n // 1000}.{(n // 100) % 10}.{n % 100}")
    return tags


def push_tags(registry: Registry, repo: str, tags: list[str]) -> None:
    """One image, tagged ``tags`` times (manifest PUTs, 8 at a time)."""
    pusher = Pusher(registry)
    pushed = pusher.image(repo, tags[0], salt="one")
    body = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{pushed.digest}",
        headers={"Accept": pushed.media_type},
        timeout=10,
    ).content
    pusher.close()

    def put(tag: str) -> None:
        response = httpx.put(
            f"{registry.url}/v2/{repo}/manifests/{tag}",
            content=body,
            headers={"Content-Type": pushed.media_type},
            timeout=30,
        )
        response.raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, tags[1:]))


def push_builds(registry: Registry, repo: str, count: int) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    pusher = Pusher(registry)

    def push(n: int) -> None:
        created = (start + timedelta(hours=n * 7 % count)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pusher.image(repo, f"b{n:04d}", created=created, salt=f"build-{n}")

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(push, range(count)))
    finally:
        pusher.close()


async def freightline_discovery(
    client: RegistryClient, repo_url: str, policy: ImageSelectionPolicy
) -> tuple[float, int]:
    started = now()
    images = await discover_images(client, repo_url, policy)
    return now() - started, len(images)


async def freightline_listing(
    client: RegistryClient, repo_url: str, policy: ImageSelectionPolicy
) -> float:
    """Only what ``skopeo list-tags`` does plus the selection: list every tag, order them."""
    started = now()
    tags = await client.list_tags(parse_repo_url(repo_url, {}))
    assert select_tags(policy, tags)
    return now() - started


async def freightline_listing_cold_and_warm(
    client: RegistryClient, repo_url: str, policy: ImageSelectionPolicy
) -> tuple[float, float]:
    """The listing as a new worker does it, then as every later discovery does (tags parsed
    before are remembered)."""
    try_parse_version.cache_clear()
    cold = await freightline_listing(client, repo_url, policy)
    return cold, await freightline_listing(client, repo_url, policy)


def skopeo(repo_url: str) -> float:
    started = now()
    out = subprocess.run(
        ["skopeo", "list-tags", "--tls-verify=false", f"docker://{repo_url}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    elapsed = now() - started
    assert json.loads(out)["Tags"]
    return elapsed


async def main(tag_count: int, build_count: int, runs: int) -> None:
    with workdir("discovery") as scratch:
        registry = start_registry(scratch / "registry")
        try:
            began = now()
            push_tags(registry, "app", semver_tags(tag_count))
            push_builds(registry, "builds", build_count)
            seeded = now() - began
            app, builds = f"{registry.host}/app", f"{registry.host}/builds"
            semver = ImageSelectionPolicy.model_validate({"imageSelectionStrategy": "SemVer"})
            newest = ImageSelectionPolicy.model_validate({"imageSelectionStrategy": "NewestBuild"})

            semver_times, listing_times, warm_listing_times = [], [], []
            async with httpx.AsyncClient(timeout=60) as http:
                for _ in range(runs):
                    try_parse_version.cache_clear()
                    elapsed, found = await freightline_discovery(RegistryClient(http), app, semver)
                    semver_times.append(elapsed)
                    cold, warm = await freightline_listing_cold_and_warm(
                        RegistryClient(http), app, semver
                    )
                    listing_times.append(cold)
                    warm_listing_times.append(warm)
                skopeo_times = [skopeo(app) for _ in range(runs)] if shutil.which("skopeo") else []

                cold_times, warm_times = [], []
                for _ in range(runs):
                    client = RegistryClient(http)
                    cold, newest_found = await freightline_discovery(client, builds, newest)
                    warm, _ = await freightline_discovery(client, builds, newest)
                    cold_times.append(cold)
                    warm_times.append(warm)
        finally:
            registry.stop()

    print(f"machine: {machine()}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"registry seeded in {seeded:.1f} s: {tag_count} tags on app, {build_count} images on builds"
    )
    print(f"medians of {runs} runs:")
    print(
        f"SemVer over {tag_count} tags (list, select, resolve {found}): {median(semver_times) * 1000:.0f} ms"
    )
    print(f"  of which listing and selecting only: {median(listing_times) * 1000:.0f} ms")
    print(
        "  listing and selecting again (tags parsed before remembered): "
        f"{median(warm_listing_times) * 1000:.0f} ms"
    )
    if skopeo_times:
        print(
            f"skopeo list-tags over {tag_count} tags (list only): {median(skopeo_times) * 1000:.0f} ms"
        )
        print(
            f"  ratio Freightline / skopeo: {median(semver_times) / median(skopeo_times):.2f}x "
            f"whole discovery, {median(listing_times) / median(skopeo_times):.2f}x listing and "
            f"selecting, {median(warm_listing_times) / median(skopeo_times):.2f}x again"
        )
    else:
        print("skopeo: not installed (apt-get install skopeo)")
    cold_ms = median(cold_times) * 1000
    print(f"NewestBuild over {build_count} tags, cold: {cold_ms:.0f} ms ({newest_found} returned)")
    print(f"NewestBuild over {build_count} tags, warm: {median(warm_times) * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tags", type=int, default=5000)
    parser.add_argument("--builds", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.tags, arguments.builds, arguments.runs))
