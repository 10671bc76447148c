"""Key paths: Kargo's for the YAML and JSON update steps, and Argo Rollouts' JSONPath subset.

:func:`split_key_path`: ``a.b``, ``example\\.com/version``. Dots separate the
parts; a backslash escapes the character after it, so a dot can be part of a
key. The one rule for ``yaml-update`` and ``json-update``.

:func:`parse_json_path`: ``{$.a.b[0]}``, ``.metadata.labels['team']``, as Argo
Rollouts' web metrics' ``jsonPath`` and its arguments' ``fieldRef.fieldPath``
write them. The one rule for both.
"""

from __future__ import annotations

import re

from freightline.errors import ConfigError

__all__ = ["parse_json_path", "split_key_path"]


def split_key_path(key: str, *, keep_trailing_backslash: bool = False) -> list[str]:
    """The parts of ``key``; ConfigError when one is empty (``a..b``, ``.a``).

    A lone backslash at the very end escapes nothing: ``json-update`` keeps it as part
    of the last key, as sjson does (``keep_trailing_backslash``); ``yaml-update`` drops it.
    """
    parts, current, escaped = [], "", False
    for char in key:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped and keep_trailing_backslash else ""))
    if any(not part for part in parts):
        raise ConfigError(f'key "{key}" has an empty part')
    return parts


_SEGMENT = re.compile(
    r"""\.(?P<name>[^.\[\]\s*?@()'"]+)"""
    r"""|\[\s*(?P<index>-?\d+)\s*\]"""
    r"""|\[\s*(?P<quote>['"])(?P<key>(?:(?!(?P=quote)).)*)(?P=quote)\s*\]"""
)


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """The keys and indexes of a JSONPath in Argo Rollouts' ``{$.a.b[0]}`` form.

    Raises :class:`ConfigError` for anything outside the subset (wildcards,
    recursive descent, filters, slices, text around the braces).
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    segments: list[str | int] = []
    pos = 0
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if match is None:
            raise ConfigError(
                f'jsonPath "{path}": unsupported at "{text[pos:]}": use dots and indexes, '
                "such as {$.data.ok} or {$.items[0].value}"
            )
        if match.group("name") is not None:
            segments.append(match.group("name"))
        elif match.group("index") is not None:
            segments.append(int(match.group("index")))
        else:
            segments.append(match.group("key"))
        pos = match.end()
    return tuple(segments)
