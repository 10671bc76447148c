"""A generated, realistic GitOps monorepo for benchmarks: many application folders, years
of history, made in seconds with ``git fast-import``.

    .venv/bin/python -m bench.gitops_repo [--apps 500] [--files 40] [--commits 5000]

Defaults: 500 folders ``apps/app-NNN`` of 40 YAML files each (20,000 files, ~6 KiB each,
with enough random content that git cannot compress it away), then 5,000 commits, each a
release bumping one application's image tag and one of its config files, as CI does.
The repository is kept on ``/dev/shm`` (memory-backed: no disk in the figures) under a
name that says its shape, and reused by later runs; delete it to make it again.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
from pathlib import Path

SHM = Path("/dev/shm")
IMAGE = "public.ecr.aws/nginx/nginx"


def app_name(index: int) -> str:
    return f"app-{index:03d}"


def _yaml(app: str, name: str, version: int, rng: random.Random) -> bytes:
    noise = "\n".join(f"    k{n}: {rng.randbytes(24).hex()}" for n in range(60))
    if name == "deployment.yaml":
        return (
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n"
            f"  labels:\n    app: {app}\nspec:\n  replicas: {1 + version % 3}\n"
            f"  template:\n    spec:\n      containers:\n      - name: {app}\n"
            f"        image: {IMAGE}:1.{version // 100}.{version % 100}\n"
            f"  annotations:\n{noise}\n"
        ).encode()
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {app}-{name.removesuffix('.yaml')}\n"
        f"data:\n  version: '{version}'\n{noise}\n"
    ).encode()


def _stream(apps: int, files: int, commits: int, out: object) -> None:
    write = out.write  # type: ignore[attr-defined]
    rng = random.Random(42)  # noqa: S311 - reproducible content, not a secret
    names = ["deployment.yaml", *(f"config-{n:02d}.yaml" for n in range(files - 1))]
    when = 1_600_000_000
    mark = 0

    def blob(data: bytes) -> int:
        nonlocal mark
        mark += 1
        write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
        return mark

    def commit(message: str, changes: list[tuple[str, int]], parent: int | None) -> int:
        nonlocal mark, when
        mark += 1
        when += 3600
        text = message.encode()
        write(b"commit refs/heads/main\nmark :%d\n" % mark)
        for role in (b"author", b"committer"):
            write(b"%s CI <ci@example.com> %d +0000\n" % (role, when))
        write(b"data %d\n%s\n" % (len(text), text))
        if parent is not None:
            write(b"from :%d\n" % parent)
        for path, blob_mark in changes:
            write(b"M 100644 :%d %s\n" % (blob_mark, path.encode()))
        return mark

    initial = [
        (f"apps/{app_name(a)}/{name}", blob(_yaml(app_name(a), name, 0, rng)))
        for a in range(apps)
        for name in names
    ]
    readme = blob(b"# The monorepo\n\nOne folder per application under apps/.\n")
    head = commit("initial import", [("README.md", readme), *initial], None)
    for n in range(1, commits):
        app = app_name(rng.randrange(apps))
        config = names[1 + rng.randrange(files - 1)] if files > 1 else names[0]
        changes = [
            (f"apps/{app}/deployment.yaml", blob(_yaml(app, "deployment.yaml", n, rng))),
            (f"apps/{app}/{config}", blob(_yaml(app, config, n, rng))),
        ]
        head = commit(f"release {app} {n}", changes, head)
    write(b"done\n")


def gitops_repo(apps: int = 500, files: int = 40, commits: int = 5000) -> Path:
    """The bare repository (made if missing), on /dev/shm."""
    path = SHM / f"freightline-bench-gitops-{apps}x{files}-{commits}.git"
    if (path / "refs" / "heads" / "main").exists() or (path / "packed-refs").exists():
        return path
    staging = path.with_suffix(".new")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(staging)], check=True, env=env)
    fast_import = subprocess.Popen(
        ["git", "fast-import", "--quiet", "--done"], cwd=staging, stdin=subprocess.PIPE, env=env
    )
    assert fast_import.stdin is not None
    _stream(apps, files, commits, fast_import.stdin)
    fast_import.stdin.close()
    if fast_import.wait() != 0:
        raise RuntimeError("git fast-import failed")
    # As a server would keep it: one pack, deltas found; partial clones allowed (the
    # shell script's sparse variant asks for one).
    subprocess.run(["git", "repack", "-a", "-d", "-q"], cwd=staging, check=True, env=env)
    subprocess.run(
        ["git", "config", "uploadpack.allowFilter", "true"], cwd=staging, check=True, env=env
    )
    staging.rename(path)
    return path


def describe(path: Path) -> str:
    """Files, commits and sizes, for the figures."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, check=True, capture_output=True, text=True
        ).stdout.strip()

    files = len(git("ls-tree", "-r", "--name-only", "main").splitlines())
    commits = git("rev-list", "--count", "main")
    pack = sum(p.stat().st_size for p in (path / "objects" / "pack").glob("*.pack"))
    checkout = sum(
        int(line.split()[3])
        for line in git("ls-tree", "-r", "-l", "main").splitlines()
        if line.split()[3].isdigit()
    )
    return (
        f"{files} files, {commits} commits, pack {pack / 2**20:.0f} MiB, "
        f"checkout {checkout / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--commits", type=int, default=5000)
    arguments = parser.parse_args()
    repo = gitops_repo(arguments.apps, arguments.files, arguments.commits)
    print(f"{repo}: {describe(repo)}")
