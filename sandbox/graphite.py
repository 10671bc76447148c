"""A real Graphite for tests and the demo: Debian's ``graphite-carbon`` and ``graphite-web``.

:class:`GraphiteServer` runs, on free loopback ports and under its own
``workdir`` (whisper files, logs, the web app's SQLite database):

- ``carbon-cache`` (``--nodaemon``) with a generated ``carbon.conf``: the
  plaintext line receiver, the pickle receiver and the cache-query port that
  graphite-web reads unflushed points from; one-second retention (``1s:1h``)
  so a test's points are not averaged away;
- ``graphite-web``'s Django application, under Debian's own Python (the
  package installs it for ``/usr/bin/python3``, not for any virtualenv),
  with a generated settings module pointing at that storage, its database
  migrated once, served by Django's ``runserver --noreload``: graphite-web
  needs nothing more than a WSGI server, and Debian ships no other.

:meth:`GraphiteServer.feed` sends points over the plaintext protocol
(``path value timestamp``), the way an application's statsd or collectd does;
:meth:`GraphiteServer.wait_for_points` waits until the render API serves them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from sandbox.registry import free_port
from sandbox.services import LocalService, stop_process

CARBON_CACHE = "/usr/bin/carbon-cache"
DEBIAN_PYTHON = "/usr/bin/python3"  # graphite-web's Django lives in Debian's dist-packages
GRAPHITE_WEB_PACKAGE = "/usr/lib/python3/dist-packages/graphite"

_SETTINGS_MODULE = "freightline_graphite_settings"


def _carbon_conf(storage: Path, conf: Path, line: int, pickle: int, cache: int) -> str:
    return f"""[cache]
STORAGE_DIR = {storage}/
LOCAL_DATA_DIR = {storage}/whisper/
CONF_DIR = {conf}/
LOG_DIR = {storage}/log/carbon/
PID_DIR = {storage}/
DATABASE = whisper
ENABLE_LOGROTATION = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 500
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {cache}
WHISPER_AUTOFLUSH = True
LOG_LISTENER_CONN_SUCCESS = False
"""


def _web_settings(storage: Path, conf: Path, cache: int) -> str:
    return f"""SECRET_KEY = "freightline-test-graphite"
GRAPHITE_ROOT = "/usr/share/graphite-web"
STATIC_ROOT = "/usr/share/graphite-web/static"
CONF_DIR = "{conf}"
STORAGE_DIR = "{storage}"
WHISPER_DIR = "{storage}/whisper"
LOG_DIR = "{storage}/log/webapp"
INDEX_FILE = "{storage}/search_index"
CARBONLINK_HOSTS = ["127.0.0.1:{cache}:a"]
DEFAULT_XFILES_FACTOR = 0
LOG_ROTATION = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# Django 3.2 warns about graphite-web's own models on every start; nothing to act on here.
SILENCED_SYSTEM_CHECKS = ["models.W042", "admin.W411"]
"""


class GraphiteServer(LocalService):
    """carbon-cache and graphite-web on free loopback ports; usable as a context manager."""

    name = "graphite"

    def __init__(self, workdir: Path) -> None:
        for path in (CARBON_CACHE, DEBIAN_PYTHON, GRAPHITE_WEB_PACKAGE):
            if not Path(path).exists():
                raise RuntimeError(
                    f"{path} is missing: apt-get install graphite-carbon graphite-web "
                    "(scripts/test does)"
                )
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.conf = workdir / "conf"
        self.line_port = free_port()
        self.pickle_port = free_port()
        self.cache_port = free_port()
        self.web_port = free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.carbon_log = workdir / "carbon.log"
        self.web_log = workdir / "graphite-web.log"
        self._carbon: subprocess.Popen[bytes] | None = None
        self._web: subprocess.Popen[bytes] | None = None
        for directory in (
            self.conf,
            self.storage / "whisper",
            self.storage / "log" / "carbon",
            self.storage / "log" / "webapp",
        ):
            directory.mkdir(parents=True, exist_ok=True)
        (self.conf / "carbon.conf").write_text(
            _carbon_conf(self.storage, self.conf, self.line_port, self.pickle_port, self.cache_port)
        )
        (self.conf / "storage-schemas.conf").write_text(
            "[default]\npattern = .*\nretentions = 1s:1h,1m:1d\n"
        )
        (self.conf / f"{_SETTINGS_MODULE}.py").write_text(
            _web_settings(self.storage, self.conf, self.cache_port)
        )

    # --- lifecycle ------------------------------------------------------------

    def _web_environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(self.conf),
            "DJANGO_SETTINGS_MODULE": "graphite.settings",
            "GRAPHITE_SETTINGS_MODULE": _SETTINGS_MODULE,
            "PYTHONWARNINGS": "ignore",
        }

    def start(self, timeout: float = 60.0) -> None:
        """Start both daemons; return once carbon accepts points and the render API answers."""
        deadline = time.monotonic() + timeout
        if self._carbon is None or self._carbon.poll() is not None:
            with self.carbon_log.open("ab") as log:
                self._carbon = subprocess.Popen(
                    [
                        DEBIAN_PYTHON,
                        CARBON_CACHE,
                        f"--config={self.conf / 'carbon.conf'}",
                        f"--pidfile={self.storage / 'carbon-cache.pid'}",
                        f"--logdir={self.storage / 'log' / 'carbon'}",
                        "--nodaemon",
                        "start",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )
        if self._web is None or self._web.poll() is not None:
            if not (self.storage / "graphite.db").exists():
                # graphite-web keeps its tag database and users in SQLite; an empty one will do.
                with self.web_log.open("ab") as log:
                    subprocess.run(
                        [DEBIAN_PYTHON, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
                        env=self._web_environment(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        check=True,
                        timeout=timeout,
                    )
            with self.web_log.open("ab") as log:
                self._web = subprocess.Popen(
                    [
                        DEBIAN_PYTHON,
                        "-m",
                        "django",
                        "runserver",
                        "--noreload",
                        f"127.0.0.1:{self.web_port}",
                    ],
                    env=self._web_environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
        self.wait_until(lambda: self._listening(self.line_port), deadline, "accept points")
        self.wait_until(self._render_answers, deadline, "answer /render")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop both (SIGTERM, then SIGKILL after ``timeout``); the whisper files stay."""
        web, carbon, self._web, self._carbon = self._web, self._carbon, None, None
        stop_process(web, timeout)
        stop_process(carbon, timeout)

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {"carbon-cache": self._carbon, "graphite-web": self._web}

    # --- data -----------------------------------------------------------------

    def feed(self, path: str, values: Iterable[float], *, end: int | None = None) -> None:
        """Send ``values`` for ``path``, one a second, the last at ``end`` (default: now),
        over carbon's plaintext protocol."""
        points = list(values)
        last = int(time.time()) if end is None else end
        first = last - len(points) + 1
        lines = "".join(f"{path} {value} {first + i}\n" for i, value in enumerate(points))
        with socket.create_connection(("127.0.0.1", self.line_port), timeout=5) as connection:
            connection.sendall(lines.encode())

    def render(self, target: str, since: str = "-5min") -> list[dict[str, Any]]:
        """The render API's JSON for ``target``."""
        response = httpx.get(
            f"{self.url}/render",
            params={"target": target, "from": since, "format": "json"},
            timeout=10,
        )
        response.raise_for_status()
        series: list[dict[str, Any]] = response.json()
        return series

    def wait_for_points(self, target: str, count: int, timeout: float = 30.0) -> None:
        """Wait until ``target``'s first series has at least ``count`` non-null points."""

        def served() -> bool:
            series = self.render(target)
            points = series[0]["datapoints"] if series else []
            return sum(1 for value, _ in points if value is not None) >= count

        self.wait_until(served, time.monotonic() + timeout, f"serve {count} points of {target}")

    # --- internals ------------------------------------------------------------

    @staticmethod
    def _listening(port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        return False

    def _render_answers(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(
                f"{self.url}/render", params={"target": "none", "format": "json"}, timeout=2
            )
            return response.status_code == 200
        return False

    def log_tail(self) -> str:
        tails = []
        for path in (self.carbon_log, self.web_log):
            if path.exists():
                tails.append(f"{path.name}: {path.read_text(errors='replace')[-1500:]}")
        return "\n".join(tails)


@contextlib.contextmanager
def running_graphite(workdir: Path) -> Iterator[GraphiteServer]:
    """A started :class:`GraphiteServer`, stopped on exit."""
    with GraphiteServer(workdir) as server:
        yield server
