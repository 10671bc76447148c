"""Branch names: Freightline's check agrees with git's own (``git check-ref-format --branch``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from freightline.kargo.gitrefs import branch_problem

NAMES = [
    "main",
    "stage/prod",
    "kargo/promotion/p-test-abc",
    "release-1.2",
    "v1.2.3",
    "a@b",
    "-rf",
    "--upload-pack=touch x",
    "x;touch y",
    "line\nbreak",
    "..",
    "../../escape",
    "a..b",
    "refs/heads/../../x",
    "x.lock",
    "a/b.lock/c",
    "sp ace",
    "tab\there",
    "a:b",
    "a~1",
    "a^",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "/lead",
    "trail/",
    "a//b",
    "end.",
    ".hidden",
    "a/.hidden",
    "x@{1}",
    "@",
]


@pytest.mark.parametrize("name", NAMES)
def test_branch_problem_agrees_with_git(name: str, tmp_path: Path) -> None:
    git = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        cwd=tmp_path,  # not a repository: no "@{-1}" or HEAD to resolve
        capture_output=True,
        check=False,
    )
    assert (branch_problem(name) is None) == (git.returncode == 0), (name, git.stderr)
