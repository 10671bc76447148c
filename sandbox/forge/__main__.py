"""Command line: ``python -m sandbox.forge --kind github --root DIR --repo acme/gitops
[--port N] [--token T] [--webhook-url URL --webhook-secret S]``.

Creates each ``--repo`` (seeded from the kargo-demo fixture, branch main) unless it is already
under ``--root``, prints the base URL on the first line of stdout and each repository's clone
URL after it, then serves until interrupted (pull requests live in memory: a restart forgets
them, the repositories stay). Tests act as people through :class:`ForgeEmulator` itself.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from sandbox.forge import ForgeEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.forge", description=__doc__)
    parser.add_argument(
        "--kind", choices=["github", "gitlab", "gitea", "bitbucket", "azure"], default="github"
    )
    parser.add_argument("--root", required=True, type=Path, help="where the bare repos live")
    parser.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default="forge-token")
    parser.add_argument("--user", default="freightline-bot", help="who the token is")
    parser.add_argument("--webhook-url")
    parser.add_argument("--webhook-secret")
    args = parser.parse_args(argv)
    forge = ForgeEmulator(
        args.kind,
        args.root,
        token=args.token,
        user=args.user,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        port=args.port,
    )
    for project in args.repo:
        if (args.root / f"{project}.git").exists():
            forge.store.repos[project] = args.root / f"{project}.git"
            forge.store.pulls.setdefault(project, [])
        else:
            forge.add_repo(project)
    print(forge.url, flush=True)
    for project in args.repo:
        print(forge.repo_url(project), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    forge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
