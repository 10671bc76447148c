"""What every benchmark needs: the machine's description, a Temporal dev server with a
SQLite file (as ``freightline dev`` runs it), a worker subprocess whose memory is sampled,
and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from freightline.app.devserver import DevServer
from sandbox.registry import quiet_port
from sandbox.workers import start_worker, worker_env


def machine() -> str:
    """``uname -a``, CPUs and memory, for the figures table."""
    memory_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return (
        f"{' '.join(platform.uname())}; nproc {os.cpu_count()}; "
        f"memory {memory_kb / 1024 / 1024:.1f} GiB; Python {platform.python_version()}"
    )


@contextlib.asynccontextmanager
async def dev_server(workdir: Path) -> AsyncIterator[tuple[DevServer, Client]]:
    """A dev server on free ports with its SQLite file in ``workdir``, and a client."""
    server = DevServer(
        db_file=workdir / "temporal.db",
        port=quiet_port(),
        ui_port=quiet_port(),
        log_file=workdir / "devserver.log",
    )
    server.start()
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        yield server, client
    finally:
        server.stop()


@dataclass
class WorkerProcess:
    """``python worker.py`` in a subprocess, its resident memory sampled every 0.2s."""

    address: str
    queue: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    samples: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = worker_env(self.address, self.queue, **self.extra_env)
        self.process = start_worker(env, self.log_path)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _status(self, key: str) -> int:
        with contextlib.suppress(OSError), open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._status("VmRSS"))

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        """The kernel's high-water mark of the worker's resident set."""
        return max(self._status("VmHWM"), *self.samples, 0)

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def workdir(prefix: str, under: Path | None = None) -> Iterator[Path]:
    """A scratch directory (under ``under``, e.g. /dev/shm, or the system's temporary one)."""
    with tempfile.TemporaryDirectory(prefix=f"freightline-bench-{prefix}-", dir=under) as tmp:
        yield Path(tmp)


def queue_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:.0f} MiB"


async def until(check: Callable[[], Awaitable[bool]], limit: float = 600) -> None:
    """Poll ``check`` until it holds (or fail after ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached within {limit:.0f}s")
        await asyncio.sleep(0.5)


def now() -> float:
    return time.perf_counter()


@dataclass(frozen=True)
class CpuTimes:
    """A process's CPU seconds (user + system): its own, and its waited-for children's."""

    own: float
    children: float

    @classmethod
    def of(cls, pid: int) -> CpuTimes:
        """Read from ``/proc/PID/stat`` (zero when the process is gone)."""
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return cls(0.0, 0.0)
        tick = os.sysconf("SC_CLK_TCK")
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        return cls((utime + stime) / tick, (cutime + cstime) / tick)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own - other.own, self.children - other.children)
