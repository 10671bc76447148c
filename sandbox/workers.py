"""Freightline workers as subprocesses (``python worker.py``), for tests and benchmarks.

A subprocess is what a crash test kills and what a benchmark measures; these
helpers start one from the repository root with an environment that points it
at one Temporal server and task queue and opens no listeners on fixed ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_ARGS = ("worker.py",)
"""The interpreter arguments of the worker: ``python worker.py``."""


def worker_env(address: str, queue: str, **extra: str) -> dict[str, str]:
    """This process's environment for a worker on ``address`` and ``queue``, plus ``extra``.

    The health and metrics listeners are off: other workers may hold their
    default ports. Local repositories are allowed: the sandbox's are bare
    repositories on disk.
    """
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "FREIGHTLINE_TASK_QUEUE": queue,
        "FREIGHTLINE_HEALTH_ADDRESS": "",
        "FREIGHTLINE_METRICS_ADDRESS": "",
        "FREIGHTLINE_ALLOW_LOCAL_REPOSITORIES": "true",
        **extra,
    }


def start_worker(
    env: Mapping[str, str], log_path: Path | None = None, *, args: Sequence[str] = WORKER_ARGS
) -> subprocess.Popen[bytes]:
    """``python worker.py`` (or ``python *args``) with exactly ``env``; output to ``log_path``.

    Without ``log_path`` the output is dropped. Tests start a worker of their own
    making with ``args`` (``tests/crash_worker.py``).
    """
    if log_path is None:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
