"""Git branch names, by git's own rule (``git check-ref-format --branch``), checked before git runs.

A step's branch that git would refuse is a configuration mistake: the promotion
ends *Errored* naming the rule, instead of *Failed* with git's words after a
clone. A name git would read as an option (``-rf``, ``--upload-pack=...``) is
refused here as well, although git steps never pass a branch where an option
could be parsed.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_problem(name: str) -> str | None:
    """Why ``name`` is not a valid git branch name, or None when it is."""
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return "it starts with '-'"
    if _FORBIDDEN.search(name):
        return "it contains a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it has an empty path component"
    if name.endswith("."):
        return "it ends with '.'"
    for component in name.split("/"):
        if component.startswith("."):
            return "a component starts with '.'"
        if component.endswith(".lock"):
            return "a component ends with '.lock'"
    return None
