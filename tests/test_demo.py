"""The README's main job, unattended: ``freightline demo --once`` must reach its end state."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.registry import free_port

pytestmark = pytest.mark.integration


CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("command", "provider"),
    [
        # As scripts/demo runs it: the console script, from outside the checkout.
        ([str(Path(sys.executable).parent / "freightline")], "prometheus"),
        # This checkout's code (the console script may be another checkout's editable install).
        ([sys.executable, "-m", "freightline"], "graphite"),
    ],
)
def test_demo_once_runs_the_whole_pipeline_and_stops_everything(
    tmp_path: Path, command: list[str], provider: str
) -> None:
    port, ui_port = free_port(), free_port()
    done = subprocess.run(
        [
            *command,
            "demo",
            *(["--metrics-provider", provider] if provider != "prometheus" else []),
            "--once",
            "--workdir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ],
        cwd=tmp_path if provider == "prometheus" else CHECKOUT,
        capture_output=True,
        text=True,
        timeout=900,  # a loaded CI machine: each of the demo's waits may take up to 240 s
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    if provider != "prometheus":  # the console script may be another checkout's (see above)
        assert f"(verified with {provider.capitalize()})" in out
    assert "uat verified" in out
    assert "failed verification of the bad image" in out
    assert "prod waits for approval" in out
    assert "prod approved, promoted and Healthy" in out
    assert "freightline approve-promotion 'promotion:kargo-demo:prod:" in out
    # The web UI was served, with a login per role, and prod was approved through it.
    served = re.search(r"Freightline UI http://127\.0\.0\.1:(\d+) · sign in as alice / \S+", out)
    assert served, out[:3000]
    assert "prod approved in the web UI as alice" in out
    # People sign in at the sandbox OIDC issuer (the demo's default), alice by her password there.
    issuer = re.search(r"at the sandbox OIDC issuer http://127\.0\.0\.1:(\d+)", out)
    assert issuer, out[:3000]
    # The closing table agrees with the closing line: prod holds the good Freight, Healthy.
    prod = [line for line in out.splitlines() if line.startswith("│ prod ")][-1]
    cells = [cell.strip() for cell in prod.strip("│").split("│")]
    assert cells[1] != "—" and cells[3] == "Healthy", prod
    assert "waiting" not in prod, prod
    # Everything it started is gone: the dev server's port is free again.
    for closed in (port, int(served.group(1)), int(issuer.group(1))):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", closed)) != 0


def test_demo_pr_promotes_prod_through_a_pull_request_the_demo_merges(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "freightline",
            "demo",
            "--once",
            "--pr",
            "--workdir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ],
        cwd=Path(__file__).resolve().parent.parent,  # this checkout's freightline
        capture_output=True,
        text=True,
        timeout=900,  # a loaded CI machine: each of the demo's waits may take up to 240 s
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "test → uat (verified with Prometheus) → prod (through a pull request)" in out
    assert "prod approved in the web UI as alice" in out
    waited = re.search(r"prod waits for its pull request (http://127\.0\.0\.1:\d+/\S+/pull/1)", out)
    assert waited, out[-3000:]
    assert "pull request #1 merged by alice in the forge" in out
    assert "prod approved, promoted and Healthy" in out
    # The forge's webhook woke the waiting promotion (not the 30 s poll).
    log = (tmp_path / "demo" / "worker.log").read_text()
    woken = [line for line in log.splitlines() if '"event": "webhook pull request"' in line]
    assert len(woken) == 1 and "promotion:kargo-demo:prod:" in woken[0], woken
