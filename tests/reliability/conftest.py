"""Fixtures of the reliability suite: worker subprocesses that can be killed, the emulator."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sandbox.workers import WORKER_ARGS, start_worker

SCAN_LAST = "scan_last"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{SCAN_LAST}: run after every other test of the session (the secrets scan)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets scan reads every history the session made: run it after everything else."""
    last = [item for item in items if item.get_closest_marker(SCAN_LAST)]
    items[:] = [item for item in items if not item.get_closest_marker(SCAN_LAST)] + last


class WorkerProcess:
    """``python worker.py`` in a subprocess, its log in a file; killable like a real pod."""

    def __init__(
        self, env: dict[str, str], log_path: Path, args: Sequence[str] = WORKER_ARGS
    ) -> None:
        self.log_path = log_path
        self.process = start_worker(env, log_path, args=args)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Worker subprocesses a test started; every one still running is stopped at the end."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()


def spawn_worker(
    started: list[WorkerProcess],
    env: dict[str, str],
    log_dir: Path,
    name: str,
    args: Sequence[str] = WORKER_ARGS,
) -> WorkerProcess:
    process = WorkerProcess(env, log_dir / f"worker-{name}.log", args)
    started.append(process)
    return process
