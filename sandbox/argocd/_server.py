"""The HTTP side of the emulator: routing, bearer-token auth, faults, and ``ArgoCDEmulator``."""

from __future__ import annotations

import hmac
import json
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from ._apps import AppsDocument, load_apps_file, load_documents
from ._controller import Controller, Timing, to_json
from ._errors import NO_SESSION, ApiError, Code, EmulatorConfigError
from ._git import Repositories
from ._render import Renderer

_API = "/api/v1/applications"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    emulator: ArgoCDEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    _raw_body = b""
    server_version = "argocd-emulator"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and the demo read the API, not an access log

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # plumbing ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, value: Any) -> None:
        self._send(200, to_json(value))

    def _send_error(self, error: ApiError) -> None:
        self._send(error.http_status, to_json(error.body()))

    def _body(self) -> dict[str, Any]:
        raw = self._raw_body
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ApiError(
                Code.INVALID_ARGUMENT, f"invalid character in request body: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(Code.INVALID_ARGUMENT, "request body must be a JSON object")
        return body

    def _authenticate(self) -> None:
        token = ""
        header = self.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        if not token:
            # The UI and `argocd` CLI may send the session as the argocd.token cookie.
            for part in self.headers.get("Cookie", "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == "argocd.token":
                    token = value
        if not token:
            raise ApiError(Code.UNAUTHENTICATED, NO_SESSION)
        if not hmac.compare_digest(token.encode(), self.server.emulator.token.encode()):
            if token.count(".") != 2:
                detail = "token is malformed: token contains an invalid number of segments"
            else:
                detail = "token signature is invalid: signature is invalid"
            raise ApiError(Code.UNAUTHENTICATED, f"invalid session: {detail}")

    def _dispatch(self, method: str) -> None:
        # Read the whole body first, so that an early answer leaves the connection reusable.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw_body = self.rfile.read(length) if length > 0 else b""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        controller = self.server.emulator.controller
        try:
            if method == "GET" and parts == ["metrics"]:
                self._send(
                    200, controller.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8"
                )
                return
            if method == "GET" and parts == ["healthz"]:
                self._send(200, b"ok", "text/plain")
                return
            self._authenticate()
            if parts[:1] == ["admin"]:
                self._admin(method, parts[1:], self._body())
                return
            if parts[:3] != ["api", "v1", "applications"]:
                raise ApiError(Code.NOT_FOUND, "Not Found")
            fault = controller.take_fault(parts[3] if len(parts) > 3 else None)
            if fault is not None and self._fault(fault):
                return
            self._api(method, parts[3:], query)
        except ApiError as error:
            self._send_error(error)
        except Exception as exc:  # an emulator bug must still answer in Argo CD's shape
            self._send_error(ApiError(Code.INTERNAL, f"emulator error: {exc}"))

    def _fault(self, fault: Any) -> bool:
        if fault.mode == "hang":
            # Hold the request without answering, then drop the connection.
            self.server.emulator.controller.stopping.wait(fault.hang_seconds)
            self.close_connection = True
            return True
        code = Code.INTERNAL if fault.mode == "500" else Code.UNAVAILABLE
        self._send_error(ApiError(code, f"emulated fault: HTTP {fault.mode}"))
        return True

    # Argo CD API -----------------------------------------------------------------------------

    def _api(self, method: str, rest: list[str], query: dict[str, list[str]]) -> None:
        controller = self.server.emulator.controller

        def one(key: str) -> str:
            values = query.get(key) or [""]
            return values[0]

        projects = (query.get("projects") or []) + (query.get("project") or [])
        if not rest:
            if method != "GET":
                raise ApiError(Code.UNIMPLEMENTED, f"method {method} is not emulated")
            names = query.get("name")
            self._send_json(
                controller.list_apps(
                    selector=one("selector"),
                    name=names[0] if names else None,
                    projects=projects,
                    repo=one("repo"),
                )
            )
            return
        name = rest[0]
        if len(rest) == 1 and method == "GET":
            if len(projects) > 1:
                raise ApiError(
                    Code.INVALID_ARGUMENT,
                    "multiple projects specified - the get endpoint accepts either zero or one "
                    "project",
                )
            refresh = query.get("refresh")
            self._send_json(
                controller.get(
                    name,
                    project=projects[0] if projects else "",
                    refresh=refresh[0] if refresh else None,
                )
            )
        elif len(rest) == 1 and method == "PATCH":
            body = self._body()
            self._send_json(
                controller.patch(
                    name,
                    patch=str(body.get("patch") or ""),
                    patch_type=str(body.get("patchType") or ""),
                    project=str(body.get("project") or ""),
                )
            )
        elif rest[1:] == ["sync"] and method == "POST":
            self._send_json(controller.sync(name, self._body()))
        else:
            raise ApiError(Code.UNIMPLEMENTED, f"{method} {self.path} is not emulated")

    # admin knobs -------------------------------------------------------------------------------

    def _admin(self, method: str, rest: list[str], body: dict[str, Any]) -> None:
        controller = self.server.emulator.controller
        if method != "POST":
            raise ApiError(Code.UNIMPLEMENTED, "admin endpoints take POST")
        if rest == ["fault"]:
            controller.inject_fault(
                None,
                str(body.get("mode", "500")),
                int(body.get("count", 1)),
                float(body.get("hangSeconds", 30)),
            )
        elif len(rest) == 3 and rest[0] == "apps":
            name, knob = rest[1], rest[2]
            if knob == "health":
                status = body.get("status")
                controller.set_health(
                    name, str(status) if status else None, str(body.get("message") or "")
                )
            elif knob == "fault":
                controller.record(name)
                controller.inject_fault(
                    name,
                    str(body.get("mode", "500")),
                    int(body.get("count", 1)),
                    float(body.get("hangSeconds", 30)),
                )
            elif knob == "fail-sync":
                controller.fail_next_syncs(
                    name, int(body.get("count", 1)), str(body.get("message") or "")
                )
            elif knob == "sync-window":
                controller.set_sync_window(name, bool(body.get("open", True)))
            elif knob == "traffic":
                ratio = body.get("errorRatio")
                controller.set_error_ratio(name, None if ratio is None else float(ratio))
            else:
                raise ApiError(Code.NOT_FOUND, f"unknown admin knob {knob!r}")
        else:
            raise ApiError(Code.NOT_FOUND, "Not Found")
        self._send_json({})


class ArgoCDEmulator:
    """An Argo CD API server on loopback, backed by real git repositories.

    ``apps`` is an apps file path or a list of parsed manifests (see the package docstring).
    Use ``start()``/``stop()`` or a ``with`` block; ``base_url`` is set once started.
    """

    def __init__(
        self,
        apps: str | Path | Sequence[Mapping[str, Any]],
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        repo_map: Mapping[str, str] | None = None,
        variables: Mapping[str, str] | None = None,
        timing: Timing | None = None,
        error_ratio_by_tag: Mapping[str, float] | None = None,
        requests_per_second: float | None = None,
        username: str = "admin",
    ) -> None:
        if not token:
            raise EmulatorConfigError("a bearer token is required")
        document: AppsDocument = (
            load_apps_file(apps, variables)
            if isinstance(apps, str | Path)
            else load_documents(apps, variables)
        )
        settings = document.settings
        ratios = {str(k): float(v) for k, v in (settings.get("errorRatioByTag") or {}).items()}
        ratios.update({str(k): float(v) for k, v in (error_ratio_by_tag or {}).items()})
        for key, ratio in ratios.items():
            if not 0.0 <= ratio <= 1.0:
                raise EmulatorConfigError(
                    f"errorRatioByTag[{key!r}] = {ratio} is not between 0 and 1"
                )
        rate = float(
            requests_per_second
            if requests_per_second is not None
            else settings.get("requestsPerSecond", 10.0)
        )
        self.token = token
        self.host = host
        self.port = port
        self.base_url = ""
        self._work_dir = Path(tempfile.mkdtemp(prefix="argocd-emulator-"))
        repositories = Repositories(
            self._work_dir, {**(settings.get("repoMap") or {}), **(repo_map or {})}
        )
        self.controller = Controller(
            document.applications,
            repositories=repositories,
            renderer=Renderer(repositories, self._work_dir),
            timing=timing or Timing(),
            username=username,
            error_ratio_by_tag=ratios,
            requests_per_second=rate,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def application_names(self) -> list[str]:
        return self.controller.names()

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._server is not None:
            return self.base_url
        self.controller.start()
        server = _Server((self.host, self.port), _Handler)
        server.emulator = self
        self._server = server
        self.port = server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever, name="argocd-emulator-http", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and remove the emulator's scratch directory."""
        self.controller.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> ArgoCDEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
