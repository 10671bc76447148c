"""A real Prometheus for tests: Debian's ``prometheus`` on a free loopback port.

:class:`PrometheusServer` writes a config scraping the given targets every
second, keeps its TSDB in a temporary directory, and starts the binary with
``--web.enable-lifecycle``. ``start()`` waits for ``/-/ready`` and for every
target to be up; ``stop()`` ends it with SIGTERM (SIGKILL after a deadline);
both can be called again mid-test, and a restart keeps the same port and data.

Debian may run its packaged prometheus service on :9090; this one never uses
that port, so the two do not meet.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from sandbox.registry import free_port
from sandbox.services import LocalService, stop_process

PROMETHEUS_BINARY = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"


def _scrape_config(index: int, target: str) -> dict[str, Any]:
    """A scrape job for ``target``: ``host:port`` or a URL naming the metrics path."""
    if "://" not in target:
        target = f"http://{target}/metrics"
    parts = urlsplit(target)
    return {
        "job_name": f"target-{index}",
        "scrape_interval": SCRAPE_INTERVAL,
        "scrape_timeout": SCRAPE_INTERVAL,
        "scheme": parts.scheme,
        "metrics_path": parts.path or "/metrics",
        "static_configs": [{"targets": [parts.netloc]}],
    }


class PrometheusServer(LocalService):
    """One prometheus process scraping ``targets``; usable as a context manager."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: Sequence[str]) -> None:
        if not Path(PROMETHEUS_BINARY).exists():
            raise RuntimeError(
                "prometheus is not installed: apt-get install prometheus (scripts/test does)"
            )
        self.workdir = workdir
        self.targets = list(targets)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "scrape_configs": [_scrape_config(i, t) for i, t in enumerate(self.targets)],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML

    # --- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) the server; return once it is ready and every target is up."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS_BINARY,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        self.wait_until(self._ready, deadline, "answer /-/ready")
        if self.targets:
            self.wait_until(self._targets_up, deadline, "see every target up")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); the data stays."""
        process, self.process = self.process, None
        stop_process(process, timeout)

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {"prometheus": self.process}

    # --- queries --------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` gives now (raises on a refused query)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for_value(
        self, promql: str, predicate: Callable[[float], bool], timeout: float = 30.0
    ) -> float:
        """Poll until ``promql`` gives a first sample whose value satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []

        def holds() -> bool:
            nonlocal last
            last = self.query(promql)
            return bool(last) and predicate(float(last[0]["value"][1]))

        self.wait_until(holds, deadline, f"give a matching value for {promql} (last: {last})")
        return float(last[0]["value"][1])

    # --- internals ------------------------------------------------------------

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        return False

    def _targets_up(self) -> bool:
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=2)
        active = response.json()["data"]["activeTargets"]
        return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: Sequence[str]) -> Iterator[PrometheusServer]:
    """A started :class:`PrometheusServer`, stopped on exit."""
    with PrometheusServer(workdir, targets) as server:
        yield server
