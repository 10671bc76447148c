"""A workflow history as text a secrets scan can search: payloads decoded."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import Any


def readable(node: Any) -> Iterator[str]:
    """Every string in a history's JSON, payload ``data`` (base64) decoded as well."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    yield base64.b64decode(value).decode(errors="replace")
            yield from readable(value)
    elif isinstance(node, list):
        for item in node:
            yield from readable(item)
    elif isinstance(node, str):
        yield node
