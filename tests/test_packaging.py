"""The built wheel holds what its entry points need, and nothing of the sandbox or the tests.

The wheel is built from this checkout (pip builds it in an isolated environment,
as a user's ``pip install .`` would), installed without dependencies into a fresh
virtualenv that borrows this environment's dependencies (no network needed for
them), and run from a directory outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the fresh virtualenv it is installed in)."""
    root = tmp_path_factory.mktemp("packaging")
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = root / "source"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".freightline", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("freightline-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    # The dependencies come from this environment's site-packages, listed as a plain path:
    # the .pth files there (this checkout's editable install among them) are not run.
    (purelib / "borrowed-dependencies.pth").write_text(
        "\n".join(p for p in site.getsitepackages() if "site-packages" in p) + "\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return wheel, venv


def test_the_wheel_holds_the_worker_and_the_cli_and_no_sandbox_or_tests(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == {"freightline", "workflows", "activities", "worker.py"}
    # The web UI's templates and static files travel with it (package data).
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("templates/project.html", "static/ui.js", "static/ui.css"):
        assert f"freightline/app/web/{name}" in names


def test_the_installed_entry_points_run_outside_the_checkout(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, venv = installed

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "COLUMNS": "500"},  # one line per message
        )

    where = run(
        str(venv / "bin" / "python"),
        "-c",
        "import freightline, worker, workflows.promotion, activities.argocd;"
        "print(freightline.__file__); print(worker.__file__)",
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split())

    helped = run(str(venv / "bin" / "freightline"), "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("apply", "worker", "promote", "status", "demo", "ui"):
        assert command in helped.stdout

    demo = run(str(venv / "bin" / "freightline"), "demo", "--once")
    assert demo.returncode == 1
    (line,) = demo.stderr.strip().splitlines()
    assert "runs from a checkout" in line
