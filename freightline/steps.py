"""The catalogue of promotion steps: which exist, and where each one runs.

Steps that share a working tree (clone, edit, render, commit, push) run
together as one activity from clone to push, so a retry on another worker
with an empty disk repeats the whole sequence and converges on the same
commit. Steps that talk to an outside system on their own (Argo CD, HTTP)
run as their own activities. Steps that only decide or wait
(``wait-for-approval``) run in the workflow itself, on signals and timers.
The implementations live in ``activities/``; this module is the one list of
names both sides agree on.
"""

from __future__ import annotations

from enum import StrEnum


class StepRunner(StrEnum):
    """Where a step's implementation runs."""

    WORKTREE = "worktree"
    """In the shared clone-to-push activity (``activities/worktree.py``)."""
    ARGOCD = "argocd"
    """In an Argo CD activity (``activities/argocd.py``)."""
    WORKFLOW = "workflow"
    """In the ``Promotion`` workflow itself: no activity (``workflows/promotion.py``)."""


STEP_CATALOGUE: dict[str, StepRunner] = {
    "git-clone": StepRunner.WORKTREE,
    "git-clear": StepRunner.WORKTREE,
    "kustomize-set-image": StepRunner.WORKTREE,
    "kustomize-build": StepRunner.WORKTREE,
    "yaml-update": StepRunner.WORKTREE,
    "git-commit": StepRunner.WORKTREE,
    "git-push": StepRunner.WORKTREE,
    "argocd-update": StepRunner.ARGOCD,
    "argocd-wait": StepRunner.ARGOCD,
    "wait-for-approval": StepRunner.WORKFLOW,
}


def runner_of(uses: str) -> StepRunner | None:
    """Where the step named ``uses`` runs, or None for an unknown step."""
    return STEP_CATALOGUE.get(uses)
