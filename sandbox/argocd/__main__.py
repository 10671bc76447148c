"""Command line: ``python -m sandbox.argocd --apps FILE --port N --token T [--repo-map FROM=TO]``.

Prints the base URL on the first line of stdout, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from ._controller import Timing
from ._errors import EmulatorConfigError
from ._server import ArgoCDEmulator


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key:
            raise EmulatorConfigError(f"{flag} {value!r}: expected KEY=VALUE")
        pairs[key] = target
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.argocd", description=__doc__)
    parser.add_argument("--apps", required=True, help="YAML file of Applications / ApplicationSets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--token",
        default=os.environ.get("ARGOCD_AUTH_TOKEN", ""),
        help="bearer token clients must send (default $ARGOCD_AUTH_TOKEN)",
    )
    parser.add_argument(
        "--repo-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="read repoURL FROM at TO (a path or file:// URL); repeatable",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value for ${NAME} in the apps file; repeatable",
    )
    parser.add_argument(
        "--error-ratio",
        action="append",
        default=[],
        metavar="TAG=RATIO",
        help="simulated error ratio for an image tag; repeatable",
    )
    parser.add_argument("--requests-per-second", type=float, default=None)
    parser.add_argument("--sync-duration", type=float, default=Timing.sync_duration)
    parser.add_argument("--progressing-duration", type=float, default=Timing.progressing_duration)
    parser.add_argument("--reconcile-interval", type=float, default=Timing.reconcile_interval)
    parser.add_argument("--instant", action="store_true", help="no artificial delays")
    args = parser.parse_args(argv)
    try:
        if not args.token:
            raise EmulatorConfigError("--token (or $ARGOCD_AUTH_TOKEN) is required")
        ratios = {k: float(v) for k, v in _pairs(args.error_ratio, "--error-ratio").items()}
        timing = (
            Timing.instant()
            if args.instant
            else Timing(
                sync_duration=args.sync_duration,
                progressing_duration=args.progressing_duration,
                reconcile_interval=args.reconcile_interval,
            )
        )
        emulator = ArgoCDEmulator(
            args.apps,
            args.token,
            host=args.host,
            port=args.port,
            repo_map=_pairs(args.repo_map, "--repo-map"),
            variables=_pairs(args.var, "--var"),
            timing=timing,
            error_ratio_by_tag=ratios,
            requests_per_second=args.requests_per_second,
        )
        url = emulator.start()
    except (EmulatorConfigError, ValueError, OSError) as exc:
        print(f"argocd emulator: {exc}", file=sys.stderr)
        return 2
    print(url, flush=True)
    names = ", ".join(emulator.application_names) or "none"
    print(f"Argo CD emulator serving {names} at {url}", file=sys.stderr, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
