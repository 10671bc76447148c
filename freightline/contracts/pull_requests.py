"""A pull (merge) request as a forge reports it: what the pull-request steps return and wait on."""

from __future__ import annotations

from typing import Literal

from freightline.contracts.model import Contract

__all__ = ["PullRequest", "PullRequestState"]

PullRequestState = Literal["open", "merged", "closed"]


class PullRequest(Contract):
    """One pull request (GitHub, Gitea, Bitbucket) or merge request (GitLab); no secret in it."""

    number: int
    """The number people see: GitHub's and Gitea's ``number``, GitLab's ``iid``, Bitbucket's ``id``."""
    url: str
    """Its web page, for a person to open."""
    state: PullRequestState
    """``open``; ``merged``; or ``closed`` without merging."""
    merge_commit: str | None = None
    """The commit the merge made on the target branch (squash or rebase: the last one)."""
    head_sha: str | None = None
    """The source branch's commit the pull request shows (Bitbucket: abbreviated)."""
    source_branch: str
    target_branch: str
    closed_by: str | None = None
    """Who merged or closed it, when the forge says."""
    mergeable: bool | None = None
    """Whether the forge says an open one can be merged now (False: conflicts or blocked;
    None: not known yet, or not open)."""
