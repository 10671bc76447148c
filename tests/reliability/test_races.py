"""Races: 20 promotions across 10 Stages push to one branch at once, with an outside committer.

Every Stage edits its own files on ``main`` (``yaml-update``), two Freight each, all
twenty started together; meanwhile a person pushes ten commits of their own to the same
branch with ``git pull --rebase`` on rejection. Every commit must land: the count is
exact and every file holds what its last writer wrote.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project
from freightline.contracts.promotion import PromotionPhase
from sandbox.gitops import commit_count, git, show_file
from tests.pipelines import IMAGE, freight_for, single_stage_project, with_freight
from tests.test_promotion import CLONE, COMMIT, PUSH, promote

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

STAGES = tuple(f"s{n:02d}" for n in range(10))
TAGS = ("3.0.0", "3.1.0")
OUTSIDE_COMMITS = 10


def outside_committer(repo: Path, workdir: Path, done: list[str]) -> None:
    """A person committing to main by hand, rebasing when the push is rejected."""
    git("clone", "--quiet", repo.as_uri(), str(workdir))
    for n in range(OUTSIDE_COMMITS):
        (workdir / "outside").mkdir(exist_ok=True)
        (workdir / "outside" / f"{n}.txt").write_text(f"outside {n}\n")
        git("add", "--all", cwd=workdir)
        git("commit", "--quiet", "-m", f"outside {n}", cwd=workdir)
        for _ in range(50):
            try:
                git("push", "--quiet", "origin", "HEAD:main", cwd=workdir)
                break
            except RuntimeError:
                git("pull", "--quiet", "--rebase", "origin", "main", cwd=workdir)
        else:
            raise AssertionError(f"outside commit {n} never landed")
        done.append(str(n))


async def test_twenty_promotions_and_an_outside_committer_lose_nothing(
    client: Client, worker: Worker, gitops_repo: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    git("clone", "--quiet", gitops_repo.as_uri(), str(seed))
    for stage in STAGES:
        (seed / "stages" / stage).mkdir(parents=True)
        for tag in TAGS:
            (seed / "stages" / stage / f"{tag}.yaml").write_text("image: none\n")
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "stage files", cwd=seed)
    git("push", "--quiet", "origin", "main", cwd=seed)
    steps = [
        CLONE,
        {
            "uses": "yaml-update",
            "config": {
                "path": "./src/stages/${{ ctx.stage }}/${{ imageFrom('" + IMAGE + "').Tag }}.yaml",
                "updates": [
                    {
                        "key": "image",
                        "value": "${{ ctx.stage }}:${{ imageFrom('" + IMAGE + "').Tag }}",
                    }
                ],
            },
        },
        COMMIT,
        PUSH,
    ]
    freights = [freight_for(tag) for tag in TAGS]
    await apply_project(
        client, with_freight(single_stage_project(gitops_repo, steps, stages=STAGES), *freights)
    )
    before = commit_count(gitops_repo, "main")

    landed: list[str] = []
    person = threading.Thread(
        target=outside_committer, args=(gitops_repo, tmp_path / "person", landed)
    )
    person.start()
    try:
        results = await asyncio.gather(
            *(
                promote(client, "p", stage, freight.metadata.name)
                for stage in STAGES
                for freight in freights
            )
        )
    finally:
        await asyncio.to_thread(person.join, 120)

    assert [r.phase for r in results] == [PromotionPhase.SUCCEEDED] * 20, [
        r.message for r in results if r.phase is not PromotionPhase.SUCCEEDED
    ]
    assert len(landed) == OUTSIDE_COMMITS
    assert commit_count(gitops_repo, "main") == before + 20 + OUTSIDE_COMMITS
    for stage in STAGES:
        for tag in TAGS:
            content = show_file(gitops_repo, "main", f"stages/{stage}/{tag}.yaml").strip()
            assert content == f"image: {stage}:{tag}"
    for n in range(OUTSIDE_COMMITS):
        assert show_file(gitops_repo, "main", f"outside/{n}.txt") == f"outside {n}"
    # Every promotion's pushed commit is on main (none was replaced by a later push).
    history = set(git("rev-list", "refs/heads/main", cwd=gitops_repo).split())
    for result in results:
        assert result.outputs["step-3"]["commit"] in history
