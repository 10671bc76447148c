"""Freightline workers as subprocesses (``python worker.py``), for tests and benchmarks.

A subprocess is what a crash test kills and what a benchmark measures; these
helpers start one from the repository root with an environment that points it
at one Temporal server and task queue and opens no listeners on fixed ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def worker_env(address: str, queue: str, **extra: str) -> dict[str, str]:
    """This process's environment for a worker on ``address`` and ``queue``, plus ``extra``.

    The health and metrics listeners are off: other workers may hold their
    default ports.
    """
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "FREIGHTLINE_TASK_QUEUE": queue,
        "FREIGHTLINE_HEALTH_ADDRESS": "",
        "FREIGHTLINE_METRICS_ADDRESS": "",
        **extra,
    }


def start_worker(env: Mapping[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """``python worker.py`` with exactly ``env``; output appended to ``log_path`` or dropped."""
    if log_path is None:
        return subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=REPO_ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
