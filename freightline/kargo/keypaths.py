"""Kargo's key paths: ``a.b``, ``example\\.com/version``, ``containers.0.image``.

Two rules, because Kargo has two. ``yaml-update`` and ``kustomize-set-image``
split keys with Kargo's own ``pkg/sjson.SplitKey`` (:func:`split_key`): dots
separate parts, a backslash escapes only a dot or a colon (any other escape is
an error), and an unescaped colon may only open a part, as sjson's hint that a
numeric part is a map key (the colon is dropped). ``json-update`` hands its keys
to tidwall/sjson itself (:func:`split_key_path`), where a backslash escapes any
character.

:func:`parse_json_path`: ``{$.a.b[0]}``, ``.metadata.labels['team']``, as Argo
Rollouts' web metrics' ``jsonPath`` and its arguments' ``fieldRef.fieldPath``
write them. The one rule for both.
"""

from __future__ import annotations

import re

from freightline.errors import ConfigError

__all__ = ["parse_json_path", "split_key", "split_key_path"]


def split_key(key: str) -> list[str]:
    """The parts of ``key`` as Kargo's ``SplitKey`` reads them; ConfigError as it refuses.

    Surrounding whitespace is trimmed; a lone backslash at the very end escapes
    nothing and is dropped, as Kargo drops it.
    """
    key = key.strip()
    if not key:
        raise ConfigError("empty key")
    parts: list[str] = []
    current, escaped = "", False
    for char in key:
        if escaped:
            if char not in ".:":
                raise ConfigError(f'invalid escape sequence in key "{key}"')
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ".":
            if not current:
                raise ConfigError(f'empty key part in key "{key}"')
            parts.append(current)
            current = ""
        elif char == ":":
            if current:
                raise ConfigError(f'unexpected colon in key "{key}"')
        else:
            current += char
    if not current:
        raise ConfigError(f'empty key part in key "{key}"')
    return [*parts, current]


def split_key_path(key: str, *, keep_trailing_backslash: bool = False) -> list[str]:
    """The parts of ``key`` as sjson reads them; ConfigError when one is empty (``a..b``).

    A lone backslash at the very end escapes nothing: ``json-update`` keeps it as part
    of the last key, as sjson does (``keep_trailing_backslash``).
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
