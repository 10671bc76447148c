"""What a step implementation is handed: the workspace, its clones, the plan, and its config."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from activities.git import DEFAULT_AUTHOR, Clone, Worktree
from activities.workspace import Workspace
from freightline.contracts.promotion import PlannedStep, PromotionPlan
from freightline.contracts.steps import parse_config
from freightline.errors import ConfigError
from freightline.kargo.credentials import GitCredentials

__all__ = ["CredentialLookup", "StepConfig", "StepContext", "parse_config"]

CredentialLookup = Callable[[str], GitCredentials | None]
"""Finds the worker's git credentials for a repository URL (None: anonymous)."""


class StepConfig(BaseModel):
    """Base of every step's config model: camelCase as in Kargo, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


T = TypeVar("T")


@dataclass
class StepContext:
    """Shared by the steps of one worktree activity run."""

    workspace: Workspace
    plan: PromotionPlan
    git_credentials: CredentialLookup
    author: tuple[str, str] = DEFAULT_AUTHOR
    """The worker's commit author (name, email), unless a step's config names one."""
    allow_local_repositories: bool = False
    """Whether a repoURL may be a local path or file:// URL (the worker's settings)."""
    signing_key_file: Path | None = None
    """The worker's GPG key that signs every commit (the worker's settings), or None."""
    step: PlannedStep | None = None
    clones: dict[str, Clone] = field(default_factory=dict)
    worktrees: dict[Path, Worktree] = field(default_factory=dict)
    resources: ExitStack = field(default_factory=ExitStack)

    def enter(self, manager: AbstractContextManager[T]) -> T:
        """Keep a context open until the whole step sequence ends."""
        return self.resources.enter_context(manager)

    def describe(self) -> str:
        step = self.step
        return f'step "{step.alias}" ({step.uses})' if step else "step"

    def worktree_at(self, path: str) -> Worktree:
        """The git worktree checked out at ``path`` (or containing it)."""
        target = self.workspace.resolve(path)
        for root, worktree in self.worktrees.items():
            if target == root or root in target.parents:
                return worktree
        raise ConfigError(f'{self.describe()}: "{path}" is not inside a git-clone checkout')
