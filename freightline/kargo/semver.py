"""Semantic versions and Masterminds-style constraints, as Kargo reads them.

Pure code without I/O, so workflow code may import it.

Versions follow semver 2.0 precedence: build metadata is ignored, so
``1.0.0+a == 1.0.0+b``; callers that need a deterministic order among equal
versions break ties themselves (Kargo breaks them by the original string).

Constraints follow github.com/Masterminds/semver/v3, the library Kargo uses:

- terms ``=``, ``!=``, ``>``, ``<``, ``>=`` (``=>``), ``<=`` (``=<``), ``~``
  (``~>``), ``^``, or none (same as ``=``);
- terms separated by spaces or commas are ANDed, ``||`` ORs groups;
- ``1.2 - 1.4.5`` is ``>=1.2, <=1.4.5``;
- ``x``, ``X`` and ``*`` are wildcards, and a missing part is one too:
  ``1.2``, ``1.2.x`` and ``=1.2`` all mean ``>=1.2.0, <1.3.0``;
- a term without a prerelease never matches a prerelease version (except a
  plain ``!=x.y.z``, as in Masterminds), so ``>=1.0`` skips ``1.5.0-rc.1``
  while ``>=1.0.0-0`` takes it.

A wildcard major (``*``, ``x``) matches any release for ``=``, ``~``, ``^``,
``>=`` and ``<=``, and nothing for ``>``, ``<`` and ``!=``.

Errors: :func:`parse_version` raises :class:`InvalidVersionError` (a
``ValueError``; a tag that is not a version is normal and is skipped), and
:func:`parse_constraint` raises :class:`freightline.errors.ConfigError` (a
constraint is user configuration).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache, total_ordering

from freightline.errors import ConfigError

__all__ = [
    "Constraint",
    "InvalidVersionError",
    "Version",
    "parse_constraint",
    "parse_version",
    "try_parse_version",
]

# Masterminds parses parts as uint64; larger numbers are not versions.
_MAX_PART = 2**64 - 1
PARSE_CACHE_SIZE = 20_000
"""Tags whose parse :func:`try_parse_version` remembers (a few MB at most)."""

_IDENT = r"[0-9A-Za-z-]+"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_STRICT_NUM = r"0|[1-9][0-9]*"
_STRICT_RE = re.compile(
    rf"v?(?P<major>{_STRICT_NUM})\.(?P<minor>{_STRICT_NUM})\.(?P<patch>{_STRICT_NUM})"
    rf"(?:-(?P<pre>{_DOTTED}))?(?:\+(?P<build>{_DOTTED}))?"
)
_LOOSE_RE = re.compile(
    r"v?(?P<major>[0-9]+)(?:\.(?P<minor>[0-9]+))?(?:\.(?P<patch>[0-9]+))?"
    rf"(?:-(?P<pre>{_DOTTED}))?(?:\+(?P<build>{_DOTTED}))?"
)


class InvalidVersionError(ValueError):
    """A string is not a semantic version (under the strictness asked for)."""


# A prerelease identifier as a sort key: numeric identifiers sort before
# alphanumeric ones, numerically among themselves.
_PreKey = tuple[tuple[int, int, str], ...]


@total_ordering
@dataclass(frozen=True, eq=False, slots=True)
class Version:
    """A semantic version; compares by semver 2.0 precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    original: str = field(default="", compare=False)
    _key: tuple[int, int, int, int, _PreKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Numeric identifiers carry no leading zeros, so (length, text) orders
        # them numerically without int() and its size limit.
        if not self.prerelease:  # the common case, kept cheap: tag lists run to thousands
            # A release sorts after every prerelease of the same x.y.z.
            object.__setattr__(self, "_key", (self.major, self.minor, self.patch, 1, ()))
            return
        pre: _PreKey = tuple((0, len(p), p) if p.isdigit() else (1, 0, p) for p in self.prerelease)
        object.__setattr__(self, "_key", (self.major, self.minor, self.patch, 0, pre))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def sort_key(self) -> tuple[int, int, int, int, _PreKey]:
        """A plain tuple ordered as the versions are (sorting by it skips ``__lt__`` calls)."""
        return self._key

    @property
    def is_prerelease(self) -> bool:
        """Whether the version carries a prerelease (``1.0.0-rc.1``)."""
        return bool(self.prerelease)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def parse_version(text: str, strict: bool = True) -> Version:
    """Parse ``text`` as a semantic version.

    ``strict`` (Kargo's ``strictSemvers``) requires all of major, minor and
    patch without leading zeros; otherwise ``1.2`` and ``v1`` are accepted as
    ``1.2.0`` and ``1.0.0``. A leading ``v`` is accepted either way.
    Raises :class:`InvalidVersionError`.
    """
    parsed = _parse(text, strict)
    if isinstance(parsed, str):
        raise InvalidVersionError(parsed)
    return parsed


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def try_parse_version(text: str, strict: bool = True) -> Version | None:
    """Like :func:`parse_version`, but ``None`` for a string that is no version.

    Memoised (versions are immutable): a Warehouse lists the same tags at every
    discovery, so only new tags are parsed.
    """
    parsed = _parse(text, strict)
    return None if isinstance(parsed, str) else parsed


def _parse(text: str, strict: bool) -> Version | str:
    """The version, or why ``text`` is none (no exception: most tags of a list may fail)."""
    match = (_STRICT_RE if strict else _LOOSE_RE).fullmatch(text)
    if match is None:
        kind = "strict semantic version (x.y.z)" if strict else "semantic version"
        return f"{text!r} is not a {kind}"
    major, minor, patch, pre, build = match.group("major", "minor", "patch", "pre", "build")
    digits = (major or "0", minor or "0", patch or "0")
    # Up to 19 digits is below 2^64-1 (20 digits): only longer ones need a closer look,
    # length first, since int() refuses very long digit strings with a plain ValueError.
    if (len(digits[0]) > 19 or len(digits[1]) > 19 or len(digits[2]) > 19) and any(
        len(d.lstrip("0")) > 20 or int(d) > _MAX_PART for d in digits
    ):
        return f"{text!r} has a version number larger than 2^64-1"
    prerelease = tuple(pre.split(".")) if pre else ()
    for ident in prerelease:
        if ident.isdigit() and len(ident) > 1 and ident[0] == "0":
            return f"{text!r}: numeric prerelease identifier {ident!r} has a leading zero"
    return Version(
        int(digits[0]),
        int(digits[1]),
        int(digits[2]),
        prerelease,
        tuple(build.split(".")) if build else (),
        original=text,
    )


# --- constraints ------------------------------------------------------------

_OPS = r"!=|>=|=>|<=|=<|~>|>|<|=|~|\^"
_OP_ALIASES = {"": "=", "=>": ">=", "=<": "<=", "~>": "~"}
_PART = r"[0-9]+|[xX*]"
_CONSTRAINT_VERSION = (
    rf"v?(?:{_PART})(?:\.(?:{_PART}))?(?:\.(?:{_PART}))?(?:-{_DOTTED})?(?:\+{_DOTTED})?"
)
_TERM_RE = re.compile(rf"\s*(?P<op>{_OPS})?\s*(?P<ver>{_CONSTRAINT_VERSION})\s*(?P<sep>,)?")
_RANGE_RE = re.compile(
    rf"(?:^|(?<=[\s,]))(?P<lo>{_CONSTRAINT_VERSION})\s+-\s+(?P<hi>{_CONSTRAINT_VERSION})(?=$|[\s,])"
)
_WILDCARDS = frozenset("xX*")


@dataclass(frozen=True)
class _Term:
    """One comparison, with Masterminds' notion of "dirty" (wildcarded) parts."""

    op: str
    version: Version
    major_dirty: bool
    minor_dirty: bool
    patch_dirty: bool
    text: str

    @property
    def dirty(self) -> bool:
        return self.major_dirty or self.minor_dirty or self.patch_dirty

    def matches(self, v: Version) -> bool:
        con = self.version
        if v.is_prerelease and not con.is_prerelease and (self.op != "!=" or self.dirty):
            return False
        if self.major_dirty:
            return self.op in {"=", "~", "^", ">=", "<="}
        match self.op:
            case "=":
                return _tilde(v, self) if self.dirty else v == con
            case "!=":
                if not self.dirty:
                    return v != con
                if v.major != con.major:
                    return True
                if self.minor_dirty:
                    return False
                return v.minor != con.minor
            case ">":
                if not self.dirty:
                    return v > con
                if v.major != con.major:
                    return v.major > con.major
                if self.minor_dirty:
                    return False
                return v.minor > con.minor
            case "<":
                return v < con
            case ">=":
                return v >= con
            case "<=":
                if not self.dirty:
                    return v <= con
                if v.major != con.major:
                    return v.major < con.major
                return self.minor_dirty or v.minor <= con.minor
            case "~":
                return _tilde(v, self)
            case "^":
                return _caret(v, self)
        raise AssertionError(f"unknown operator {self.op!r}")  # pragma: no cover

    def __str__(self) -> str:
        return self.text


def _tilde(v: Version, term: _Term) -> bool:
    con = term.version
    if v < con:
        return False
    if v.major != con.major:
        return False
    return term.minor_dirty or v.minor == con.minor


def _caret(v: Version, term: _Term) -> bool:
    con = term.version
    if v < con:
        return False
    if con.major > 0 or term.minor_dirty:
        return v.major == con.major
    if v.major > 0:
        return False
    if con.minor > 0 or term.patch_dirty:
        return v.minor == con.minor
    if v.minor > 0:
        return False
    return v.patch == con.patch


@dataclass(frozen=True)
class Constraint:
    """A parsed constraint: an OR of ANDed terms. Use :func:`parse_constraint`."""

    text: str
    groups: tuple[tuple[_Term, ...], ...]

    def matches(self, version: Version) -> bool:
        """Whether ``version`` satisfies the constraint."""
        return any(all(term.matches(version) for term in group) for group in self.groups)

    def filter(self, versions: Sequence[Version]) -> list[Version]:
        """The versions that satisfy the constraint, in their given order."""
        return [v for v in versions if self.matches(v)]

    def __str__(self) -> str:
        return self.text


def parse_constraint(text: str) -> Constraint:
    """Parse a Masterminds-style constraint such as ``^1.2`` or ``>=1.0, <2.0 || 3.x``.

    Raises :class:`freightline.errors.ConfigError` naming the constraint and
    the part that is wrong.
    """
    if not text.strip():
        raise ConfigError(f"invalid semver constraint {text!r}: it is empty")
    groups: list[tuple[_Term, ...]] = []
    for raw_group in text.split("||"):
        group = _RANGE_RE.sub(lambda m: f">={m['lo']}, <={m['hi']}", raw_group.strip())
        if not group:
            raise ConfigError(f"invalid semver constraint {text!r}: empty alternative around '||'")
        groups.append(_parse_group(text, group))
    return Constraint(text=text, groups=tuple(groups))


def _parse_group(text: str, group: str) -> tuple[_Term, ...]:
    terms: list[_Term] = []
    pos = 0
    while pos < len(group):
        match = _TERM_RE.match(group, pos)
        if match is None or match.end() == pos:
            rest = group[pos:].strip()
            raise ConfigError(f"invalid semver constraint {text!r}: cannot read {rest!r}")
        op = _OP_ALIASES.get(match["op"] or "", match["op"] or "=")
        terms.append(_parse_term(text, op, match["ver"]))
        pos = match.end()
        # Terms must be separated; "1.0>2.0" would otherwise split silently.
        if pos < len(group) and not (match["sep"] or group[pos - 1].isspace()):
            raise ConfigError(
                f"invalid semver constraint {text!r}: expected a space or comma after "
                f"{match.group().strip()!r}"
            )
    return tuple(terms)


def _parse_term(text: str, op: str, raw: str) -> _Term:
    body = raw[1:] if raw.startswith("v") else raw
    core, sep, suffix = _split_suffix(body)
    parts = core.split(".")
    dirty_at = next((i for i, p in enumerate(parts) if p in _WILDCARDS), len(parts))
    if any(p not in _WILDCARDS for p in parts[dirty_at:]):
        raise ConfigError(
            f"invalid semver constraint {text!r}: {raw!r} has a number after a wildcard"
        )
    filled = [*parts[:dirty_at], *["0"] * (3 - dirty_at)]
    try:
        version = parse_version(".".join(filled) + sep + suffix, strict=False)
    except InvalidVersionError as err:
        raise ConfigError(f"invalid semver constraint {text!r}: {err}") from None
    return _Term(
        op=op,
        version=version,
        major_dirty=dirty_at == 0,
        minor_dirty=dirty_at <= 1,
        patch_dirty=dirty_at <= 2,
        text=f"{op}{raw}",
    )


def _split_suffix(body: str) -> tuple[str, str, str]:
    """Split ``1.2.3-rc.1+b`` into (``1.2.3``, ``-``, ``rc.1+b``)."""
    for index, char in enumerate(body):
        if char in "-+":
            return body[:index], char, body[index + 1 :]
    return body, "", ""
