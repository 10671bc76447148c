"""The ``freightline`` command: the dev server, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from freightline.app.devserver import port_open, temporal_binary
from freightline.kargo.config import MAX_ALIAS_VALUES, MAX_DOCUMENTS, MAX_FILE_BYTES
from freightline.settings import ALLOW_LOCAL_REPOSITORIES_ENV
from sandbox.gitops import create_bare_repo
from sandbox.registry import free_port

pytestmark = pytest.mark.integration


def freightline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freightline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_dev_starts_server_with_search_attributes_and_a_worker_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port, ui_port, metrics_port = free_port(), free_port(), free_port()
    db = tmp_path / "state" / "temporal.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "freightline",
            "dev",
            "--db",
            str(db),
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Not told to allow local repositories: `dev` allows them itself.
        env={
            **{k: v for k, v in os.environ.items() if k != ALLOW_LOCAL_REPOSITORIES_ENV},
            "FREIGHTLINE_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        },
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_open("127.0.0.1", port) and port_open("127.0.0.1", ui_port)):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the dev server did not start"
            time.sleep(0.2)
        listed = subprocess.run(
            [
                temporal_binary(),
                "operator",
                "search-attribute",
                "list",
                "--address",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in (
            "FreightlineProject",
            "FreightlineStage",
            "FreightlineFreight",
            "FreightlineWarehouse",
        ):
            assert name in listed
        # The worker answers: an apply needs it to accept the Project update.
        pipeline = tmp_path / "project.yaml"
        repo = create_bare_repo(tmp_path / "code.git")
        pipeline.write_text(
            "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: p\n---\n"
            "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata:\n  name: code\n"
            f"spec:\n  subscriptions:\n  - git:\n      repoURL: {repo.as_uri()}\n"
        )
        at_dev = {"TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}
        applied = freightline("apply", "-f", str(pipeline), env=at_dev)
        assert applied.returncode == 0, applied.stderr
        # A developer's bare repository on disk is discovered: `dev` allows local repositories.
        deadline = time.monotonic() + 60
        while True:
            listed = freightline("get", "warehouses", "-p", "p", "-o", "json", env=at_dev).stdout
            (warehouse,) = json.loads(listed)
            status = warehouse["status"] or {}
            if status.get("freightCount") == 1:
                break
            assert time.monotonic() < deadline, warehouse
            time.sleep(0.5)
        assert status["lastError"] is None
        # The worker serves the SDK's metrics, as `freightline worker` does.
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "temporal_workflow_task_execution_latency" in metrics.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert not port_open("127.0.0.1", port)
    assert db.exists()  # persistent: kept for the next run


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["apply", "-f", "/no/such/file.yaml"], "/no/such/file.yaml"),
        (["promote", "--stage", "test", "--project", "p"], "exactly one of --freight"),
        (["get", "stages", "--project", "p"], "cannot reach Temporal"),
    ],
)
def test_bad_input_is_one_line_and_exit_one(args: list[str], expected: str) -> None:
    done = freightline(*args, env={"TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 1
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_a_config_error_names_file_document_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata:\n  name: w\n"
        "  namespace: p\nspec:\n  subscriptions:\n  - image:\n      repoURL: x\n"
        "      discoveryLimit: 500\n"
    )
    done = freightline("apply", "-f", str(bad))
    assert done.returncode == 1
    assert "bad.yaml" in done.stderr and "discoveryLimit" in done.stderr
    assert "Traceback" not in done.stderr


def test_dev_with_a_busy_metrics_port_says_so_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = freightline(
            "dev",
            "--db",
            str(tmp_path / "temporal.db"),
            "--port",
            str(port),
            "--metrics-address",
            f"127.0.0.1:{taken}",
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on '127.0.0.1:{taken}'" in done.stderr
    assert "--metrics-address" in done.stderr
    assert not port_open("127.0.0.1", port)
    assert not (tmp_path / "temporal.db").exists()


def apply_with_a_listening_temporal(path: Path) -> subprocess.CompletedProcess[str]:
    """``freightline apply -f path`` against a socket that notes whether anything connected."""
    with socket.socket() as temporal:
        temporal.bind(("127.0.0.1", 0))
        temporal.listen()
        temporal.setblocking(False)
        done = freightline(
            "apply",
            "-f",
            str(path),
            env={"TEMPORAL_ADDRESS": f"127.0.0.1:{temporal.getsockname()[1]}"},
        )
        with pytest.raises(BlockingIOError):  # nothing was sent to Temporal
            temporal.accept()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done


def test_apply_refuses_a_file_over_the_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as out:  # valid YAML all the way: only its size is wrong
        out.write("apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: p\n")
        out.write("  labels:\n" + "".join(f"    l{i}: {'x' * 60}\n" for i in range(70_000)))
    assert big.stat().st_size > MAX_FILE_BYTES
    done = apply_with_a_listening_temporal(big)
    assert "over the limit of 4 MiB" in done.stderr
    assert "Temporal's own gRPC limit" in done.stderr


def test_apply_refuses_too_many_documents(tmp_path: Path) -> None:
    many = tmp_path / "many.yaml"
    project = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: p\n"
    many.write_text("---\n".join([project] * (MAX_DOCUMENTS + 1)))
    done = apply_with_a_listening_temporal(many)
    assert f"more than {MAX_DOCUMENTS} YAML documents" in done.stderr


def test_apply_refuses_an_alias_bomb_quickly(tmp_path: Path) -> None:
    # Billion laughs: 9 levels of 9 aliases, 9**9 values once expanded; a few hundred bytes.
    lines = ["apiVersion: kargo.akuity.io/v1alpha1", "kind: Project", "metadata:", "  name: p"]
    lines += ["  labels:", '    a0: &a0 ["lol"]']
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = apply_with_a_listening_temporal(bomb)
    # A loose bound (the CLI's start-up included), not a speed: unbounded, this ran for minutes.
    assert time.monotonic() - started < 10
    assert f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values" in done.stderr
    assert 'bomb.yaml:1: document 1 (Project "p")' in done.stderr


def test_apply_refuses_aliases_of_a_long_string_past_the_size_limit(tmp_path: Path) -> None:
    # 50 KB on disk, 5 MB once expanded: one alias is one value, but not one byte.
    lines = ["apiVersion: kargo.akuity.io/v1alpha1", "kind: Project", "metadata:", "  name: p"]
    lines += ["  annotations:", f'    a0: &long "{"x" * 50_000}"']
    lines += [f"    a{i}: *long" for i in range(1, 100)]
    swollen = tmp_path / "swollen.yaml"
    swollen.write_text("\n".join(lines) + "\n")
    done = apply_with_a_listening_temporal(swollen)
    assert "with its YAML aliases expanded the file is over the limit of 4 MiB" in done.stderr
