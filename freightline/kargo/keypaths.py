"""Kargo's key paths for the YAML and JSON update steps: ``a.b``, ``example\\.com/version``.

Dots separate the parts; a backslash escapes the character after it, so a dot
can be part of a key. The one rule for ``yaml-update`` and ``json-update``.
"""

from __future__ import annotations

from freightline.errors import ConfigError

__all__ = ["split_key_path"]


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
