"""What the sandbox's local service processes share: start in ``with``, stop with SIGTERM
then SIGKILL, and wait for a condition while watching that the processes still run.

:class:`LocalService` is the base of the real daemons the tests and the demo start on
loopback (``sandbox.prometheus``, ``sandbox.graphite``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

__all__ = ["LocalService", "stop_process"]


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """End ``process`` (SIGTERM, then SIGKILL after ``timeout``); nothing if it has ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalService:
    """A service of one or more local processes; a context manager that starts and stops it.

    Subclasses give ``start``, ``stop``, ``processes`` (by name, for messages) and
    ``log_tail`` (what the processes last logged)."""

    name = "service"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def processes(self) -> Mapping[str, subprocess.Popen[bytes] | None]:
        raise NotImplementedError

    def log_tail(self) -> str:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # one process may be up when another fails: leave none behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_until(self, condition: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail at once if a process exits, and with the
        logs' tail after ``deadline`` (``time.monotonic()``)."""
        while True:
            for name, process in self.processes().items():
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.log_tail()}")
            if condition():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not {what} in time: {self.log_tail()}")
            time.sleep(0.1)
