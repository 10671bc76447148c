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
from activities.repository_cache import RepositoryCache
from activities.workspace import Workspace
from freightline.contracts.promotion import PlannedStep, PromotionPlan
from freightline.contracts.steps import parse_config
from freightline.errors import ConfigError
from freightline.kargo.credentials import (
    SHARED_RESOURCES_NAMESPACE,
    CredentialStore,
    GitCredentials,
)

__all__ = [
    "BasicLookup",
    "CredentialLookup",
    "SecretLookup",
    "StepConfig",
    "StepContext",
    "StepSkipped",
    "parse_config",
]

CredentialLookup = Callable[[str], GitCredentials | None]
"""Finds the worker's git credentials for a repository URL (None: anonymous)."""

BasicLookup = Callable[[str, str], tuple[str, str] | None]
"""Finds the worker's ``(username, password)`` for a Kargo credential type (``image``,
``helm``) and a repository URL (None: anonymous). The values never leave the activity."""


SecretLookup = Callable[[str, str], dict[str, str]]
"""The data of a generic Secret of the worker's credentials, by project and name ({}: none)."""


def _no_basic(_cred_type: str, _repo_url: str) -> tuple[str, str] | None:
    return None


def _no_secret(_project: str, _name: str) -> dict[str, str]:
    return {}


class StepSkipped(Exception):
    """Raised by a step with nothing to do (Kargo's Skipped status, e.g. ``git-open-pr``
    between branches without a difference): the step is recorded Skipped, with this reason,
    and the steps after it run."""


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
    basic_credentials: BasicLookup = _no_basic
    """Image and chart repository credentials (the worker's credential store)."""
    secrets: SecretLookup = _no_secret
    """Generic Secrets (the worker's credential store), for ``secret()`` in step configs."""
    signing_key_file: Path | None = None
    """The worker's GPG key that signs every commit (the worker's settings), or None."""
    repository_cache: RepositoryCache | None = None
    """The worker's mirrors git-clone checks out from (None: a fresh clone each time)."""
    credential_store: CredentialStore | None = None
    """The worker's whole credential store: what a forge client (pull-request steps) reads
    its token and API URL from. None: no credentials (those steps refuse, naming why)."""
    step: PlannedStep | None = None
    clones: dict[str, Clone] = field(default_factory=dict)
    worktrees: dict[Path, Worktree] = field(default_factory=dict)
    resources: ExitStack = field(default_factory=ExitStack)

    def enter(self, manager: AbstractContextManager[T]) -> T:
        """Keep a context open until the whole step sequence ends."""
        return self.resources.enter_context(manager)

    def secret(self, name: object) -> dict[str, str]:
        """Kargo's ``secret(name)`` in a step's config: the generic Secret's data, {} if none.
        It is rendered here, in the activity, so the values never reach the workflow."""
        if not isinstance(name, str):
            raise ConfigError(f"secret(): the argument must be a string, got {name!r}")
        return self.secrets(self.plan.project, name)

    def shared_secret(self, name: object) -> dict[str, str]:
        """Kargo's ``sharedSecret(name)``: a Secret of the shared resources namespace
        (``kargo-shared-resources``, or a Secret with no namespace), {} if none."""
        if not isinstance(name, str):
            raise ConfigError(f"sharedSecret(): the argument must be a string, got {name!r}")
        return self.secrets(SHARED_RESOURCES_NAMESPACE, name)

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
