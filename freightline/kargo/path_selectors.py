"""Kargo's path selectors (a git subscription's ``includePaths``/``excludePaths``).

As Kargo's ``pattern.ParsePathPattern``:

- ``regex:`` or ``regexp:`` — a regular expression searched anywhere in the path;
- ``glob:`` — a doublestar glob matched against the whole path: ``*`` and ``?``
  never cross ``/``, ``**`` as a whole path segment matches any number of
  directories (none included), ``[abc]``/``[!abc]`` classes, ``{a,b}`` alternatives;
- anything else — a base directory: the path is that directory or inside it
  (``src`` takes ``src/app.py`` and ``src``, not ``src2/app.py``).

Paths are repository-relative with ``/`` separators, as ``git diff-tree`` prints them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from freightline.errors import ConfigError

__all__ = ["glob_regex", "path_selector"]


def path_selector(text: str) -> Callable[[str], bool]:
    """The predicate a selector stands for; ConfigError when it does not compile."""
    for prefix in ("regexp:", "regex:"):
        if text.startswith(prefix):
            try:
                pattern = re.compile(text.removeprefix(prefix))
            except re.error as err:
                raise ConfigError(f"invalid regular expression {text!r}: {err}") from None
            return lambda path: pattern.search(path) is not None
    if text.startswith("glob:"):
        compiled = re.compile(glob_regex(text.removeprefix("glob:")))
        return lambda path: compiled.fullmatch(path) is not None
    base = posixpath.normpath(text) if text else "."

    def inside(path: str) -> bool:
        # Go's filepath.Rel, then Kargo's test: no ".." anywhere in the relative path.
        return ".." not in posixpath.relpath(posixpath.normpath(path), base)

    return inside


def glob_regex(glob: str) -> str:
    """A regular expression (for ``fullmatch``) of a doublestar glob; ConfigError if malformed."""
    out: list[str] = []
    i, n = 0, len(glob)
    depth = 0  # open {...} groups
    while i < n:
        char = glob[i]
        if char == "*":
            stars = 1
            while i + stars < n and glob[i + stars] == "*":
                stars += 1
            whole_segment = (i == 0 or glob[i - 1] == "/") and (
                i + stars == n or glob[i + stars] == "/"
            )
            if stars >= 2 and whole_segment:
                if i + stars == n:
                    out.append(".*")  # trailing **: everything below (or nothing)
                    i += stars
                else:
                    out.append("(?:[^/]*/)*")  # **/: any number of directories
                    i += stars + 1
                continue
            out.append("[^/]*")
            i += stars
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                raise ConfigError(f"invalid glob {glob!r}: [ without ]")
            body = glob[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif char == "{":
            depth += 1
            out.append("(?:")
            i += 1
        elif char == "}" and depth:
            depth -= 1
            out.append(")")
            i += 1
        elif char == "," and depth:
            out.append("|")
            i += 1
        elif char == "\\":
            if i + 1 >= n:
                raise ConfigError(f"invalid glob {glob!r}: ends with an escape")
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    if depth:
        raise ConfigError(f"invalid glob {glob!r}: {{ without }}")
    pattern = "".join(out)
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"invalid glob {glob!r}: {err}") from None
    return pattern
