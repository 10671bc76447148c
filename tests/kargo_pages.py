"""Kargo's promotion-step reference pages as the conformance suite reads them.

The pages under ``tests/reference/kargo-steps/`` are verbatim copies of Kargo's.
:func:`examples` gives each fenced YAML block on a page that holds ``steps``: a
test module maps every example's heading to a check, and
:func:`assert_all_covered` fails when the page has an example the module does
not cover (or the module names one the page does not have).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

PAGES = Path(__file__).parent / "reference" / "kargo-steps"

EXAMPLE_REPO = "https://github.com/example/repo.git"
"""The repository Kargo's examples clone; tests put ``REPO_URL`` (a local one) there."""

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block, with the heading and bold label (``**path**``) before it."""

    language: str
    text: str
    heading: str
    label: str | None


@dataclass(frozen=True)
class Example:
    """One example step configuration of a page."""

    heading: str
    text: str

    def document(self, repo_url: str = "REPO_URL") -> dict[str, Any]:
        """The example's ``vars`` and ``steps``, Kargo's example repository replaced."""
        loaded: dict[str, Any] = YAML(typ="safe", pure=True).load(
            self.text.replace(EXAMPLE_REPO, repo_url)
        )
        return loaded

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = self.document()["steps"]
        return steps

    @property
    def variables(self) -> list[dict[str, Any]] | None:
        variables: list[dict[str, Any]] | None = self.document().get("vars")
        return variables


def page(step: str) -> str:
    return (PAGES / f"{step}.md").read_text()


def blocks(step: str) -> list[Block]:
    """Every fenced block of the page, in order."""
    found: list[Block] = []
    heading, label = "", None
    language: str | None = None
    body: list[str] = []
    for line in page(step).splitlines():
        fence = _FENCE.match(line)
        if language is not None:
            if fence and not fence.group(1):
                found.append(Block(language, "\n".join(body) + "\n", heading, label))
                language, body, label = None, [], None
            else:
                body.append(line)
        elif fence:
            language = fence.group(1)
        elif line.startswith("#"):
            heading, label = line.lstrip("#").strip(), None
        elif re.fullmatch(r"\*\*[^*]+\*\*", line.strip()):
            label = line.strip().strip("*")
    return found


def examples(step: str) -> list[Example]:
    """The page's example step configurations (YAML blocks holding ``steps``)."""
    found = []
    for block in blocks(step):
        if block.language != "yaml":
            continue
        document = YAML(typ="safe", pure=True).load(block.text)
        if isinstance(document, dict) and "steps" in document:
            found.append(Example(block.heading, block.text))
    return found


def assert_all_covered(step: str, covered: Iterable[str]) -> None:
    """Every example on the page has a test, and every test an example."""
    headings = [example.heading for example in examples(step)]
    assert len(headings) == len(set(headings)), f"{step}: two examples share a heading"
    assert sorted(headings) == sorted(covered), (
        f"{step}.md has examples {sorted(headings)}; the tests cover {sorted(covered)}"
    )


def example(step: str, heading: str) -> Example:
    (found,) = [e for e in examples(step) if e.heading == heading]
    return found
