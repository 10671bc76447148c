"""Steps that only decide, as Kargo's: ``fail`` and ``compose-output``.

They do no I/O and wait for nothing: a step's rendered config in, its outputs
out (or a ``StepError``). So the ``Promotion`` workflow runs them itself, with
no activity, and the worktree activity runs them too when they sit between
worktree steps (``StepDefinition.inline``): a ``fail`` or ``compose-output``
between ``git-clone`` and ``git-push`` must not split the clone-to-push
sequence into two activities with two empty work trees. Both runners call the
same functions, so the outcome is the same wherever the step runs.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, RootModel

from freightline.contracts.model import Contract
from freightline.errors import StepError

__all__ = ["ComposeOutputConfig", "FailConfig", "compose_output", "fail"]


class FailConfig(Contract):
    """Kargo's ``fail``: an optional ``message``."""

    message: str | None = Field(default=None, min_length=1)


def fail(config: FailConfig) -> dict[str, Any]:
    """End the promotion Failed: ``failed: <message>`` (Kargo's words), or ``failed``."""
    raise StepError(f"failed: {config.message}" if config.message else "failed")


class ComposeOutputConfig(RootModel[Annotated[dict[str, Any], Field(min_length=1)]]):
    """Kargo's ``compose-output``: any map of at least one entry; it becomes the outputs."""


def compose_output(config: ComposeOutputConfig) -> dict[str, Any]:
    """The (rendered) config itself, as the step's outputs."""
    return dict(config.root)
