"""How a Freightline process connects to Temporal, links into its UI, and exits.

A client connects like the ``temporal`` CLI (``TEMPORAL_ADDRESS`` /
``TEMPORAL_NAMESPACE`` / an envconfig profile, with TLS and API keys handled
by Temporal's own envconfig), with the pydantic data converter. The names
workflows and clients share are ``freightline.contracts.names``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

DEFAULT_ADDRESS = "localhost:7233"
DEV_UI_PORT_OFFSET = 1000
"""``temporal server start-dev`` (and ``freightline dev``) serve the UI on the frontend port + 1000."""
CLOUD_UI_URL = "https://cloud.temporal.io"


async def connect(
    address: str | None = None, namespace: str | None = None, *, runtime: Runtime | None = None
) -> Client:
    """Connect with the pydantic data converter, configured like the ``temporal`` CLI.

    Settings come from Temporal's envconfig (``TEMPORAL_ADDRESS``,
    ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS_*``,
    ``TEMPORAL_PROFILE`` and the config file); explicit arguments win. A worker
    passes its ``runtime`` (``freightline.app.observability.worker_runtime``) so the
    SDK's metrics and Freightline's are served from it.
    """
    config = ClientConfig.load_client_connect_config()
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    return await Client.connect(**config, data_converter=pydantic_data_converter, runtime=runtime)


def configured_address() -> str:
    """The frontend address Temporal's envconfig gives (``TEMPORAL_ADDRESS``, a profile)."""
    return str(ClientConfig.load_client_connect_config().get("target_host") or DEFAULT_ADDRESS)


def ui_url(configured: str | None, address: str) -> str:
    """The Temporal UI links point at: ``FREIGHTLINE_UI_URL`` when set, else derived from the
    frontend ``address`` a client uses.

    Temporal Cloud's frontends (``*.tmprl.cloud``) have their UI at cloud.temporal.io; any
    other is taken for a dev server, whose UI is on the same host at the frontend port + 1000
    (``localhost:7233`` → ``http://localhost:8233``).
    """
    if configured:
        return configured.rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        host, port = address or "localhost", "7233"
    if host.rstrip(".").endswith(".tmprl.cloud"):
        return CLOUD_UI_URL
    return f"http://{host}:{int(port) + DEV_UI_PORT_OFFSET}"


def exit_process(code: int) -> NoReturn:
    """End a process that used a Temporal client, skipping interpreter finalization.

    The SDK's Rust runtime keeps native threads that may still hold a Python thread
    state while CPython finalizes; now and then the process then aborts with "Fatal
    Python error: PyGILState_Release" and exit code -6 after its work succeeded
    (temporalio/sdk-python#300). Every command has finished and cleaned up by the
    time this runs, so the process flushes its output and leaves without
    finalizing.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
