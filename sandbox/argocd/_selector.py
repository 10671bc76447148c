"""Kubernetes label selectors (``k8s.io/apimachinery/pkg/labels.Parse``) for Argo CD's List.

Supported: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``,
``k>n``, ``k<n``; requirements joined by commas are and-ed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


class SelectorError(Exception):
    """The selector text does not parse."""


_KEY = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$"
)
_VALUE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        op = self.operator
        if op == "exists":
            return value is not None
        if op == "!":
            return value is None
        if op == "=":
            return value == self.values[0]
        if op == "!=":
            return value != self.values[0]
        if op == "in":
            return value in self.values
        if op == "notin":
            return value not in self.values
        number = _int(value)
        if number is None:
            return False
        return number > int(self.values[0]) if op == "gt" else number < int(self.values[0])


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _split(selector: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {selector!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise SelectorError(f"unbalanced '(' in {selector!r}")
    parts.append(current)
    return parts


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


_SET = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(.*?)\s*$")


def parse_selector(selector: str) -> list[Requirement]:
    """Parse a selector; the empty selector selects everything."""
    if not selector.strip():
        return []
    requirements: list[Requirement] = []
    for part in _split(selector):
        text = part.strip()
        if not text:
            raise SelectorError(f"empty requirement in {selector!r}")
        if match := _SET.match(text):
            key, operator, values = match.groups()
            items = tuple(_check_value(v.strip()) for v in values.split(","))
            requirements.append(Requirement(_check_key(key), operator, items))
        elif match := _CMP.match(text):
            key, operator, value = match.groups()
            if operator in (">", "<"):
                if _int(value) is None:
                    raise SelectorError(f"{value!r} is not an integer in {text!r}")
                requirements.append(
                    Requirement(_check_key(key), "gt" if operator == ">" else "lt", (value,))
                )
            else:
                op = "!=" if operator == "!=" else "="
                requirements.append(Requirement(_check_key(key), op, (_check_value(value),)))
        elif text.startswith("!"):
            requirements.append(Requirement(_check_key(text[1:].strip()), "!"))
        else:
            requirements.append(Requirement(_check_key(text), "exists"))
    return requirements


def matches(requirements: list[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether the labels satisfy every requirement."""
    return all(requirement.matches(labels) for requirement in requirements)
