"""Semantic versions and Masterminds-style constraints."""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freightline.errors import ConfigError
from freightline.kargo.semver import (
    InvalidVersionError,
    Version,
    parse_constraint,
    parse_version,
    try_parse_version,
)


@pytest.mark.parametrize(
    ("text", "strict", "expected"),
    [
        ("1.2.3", True, "1.2.3"),
        ("v1.2.3", True, "1.2.3"),
        ("1.2.3-rc.1+build.5", True, "1.2.3-rc.1+build.5"),
        ("1.2", False, "1.2.0"),
        ("v1", False, "1.0.0"),
        ("01.2.3", False, "1.2.3"),
        ("1.2-beta", False, "1.2.0-beta"),
    ],
)
def test_parse_accepts(text: str, strict: bool, expected: str) -> None:
    version = parse_version(text, strict=strict)
    assert str(version) == expected
    assert version.original == text


@pytest.mark.parametrize(
    ("text", "strict"),
    [
        ("1.2", True),
        ("v1", True),
        ("01.2.3", True),
        ("1.2.3.4", False),
        ("latest", False),
        ("", False),
        ("1.2.3-01", False),  # numeric prerelease with a leading zero
        ("1.2.3-", False),
        ("1.2.3+", False),
        ("1.2.3-a..b", False),
        ("V1.2.3", False),
        ("99999999999999999999999.0.0", False),  # larger than uint64
    ],
)
def test_parse_rejects(text: str, strict: bool) -> None:
    with pytest.raises(InvalidVersionError):
        parse_version(text, strict=strict)
    assert try_parse_version(text, strict=strict) is None


def test_precedence_matches_the_semver_spec_example() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ]
    versions = [parse_version(v) for v in ordered]
    assert sorted(reversed(versions)) == versions
    for a, b in itertools.pairwise(versions):
        assert a < b and b > a and a != b


def test_build_metadata_is_ignored_for_precedence() -> None:
    a, b = parse_version("1.0.0+a"), parse_version("1.0.0+b")
    assert a == b and hash(a) == hash(b) and not a < b
    assert str(a) != str(b)


@pytest.mark.parametrize(
    ("constraint", "version", "matches"),
    [
        ("^1.2", "1.2.0", True),
        ("^1.2", "1.9.9", True),
        ("^1.2", "2.0.0", False),
        ("^1.2", "1.1.9", False),
        ("^1.2", "1.3.0-rc.1", False),  # no prerelease in the constraint
        ("^0.2.3", "0.2.9", True),
        ("^0.2.3", "0.3.0", False),
        ("^0.0.3", "0.0.3", True),
        ("^0.0.3", "0.0.4", False),
        ("^0", "0.9.0", True),
        ("^0", "1.0.0", False),
        ("~1.2.3", "1.2.9", True),
        ("~1.2.3", "1.3.0", False),
        ("~1.2.3", "1.2.2", False),
        ("~1", "1.9.0", True),
        ("~>1.2", "1.2.7", True),
        (">=1.0, <2.0", "1.5.0", True),
        (">=1.0, <2.0", "2.0.0", False),
        (">=1.0 <2.0", "1.0.0", True),
        (">= 1.0 , < 2.0", "0.9.0", False),
        ("1.2 - 1.4.5", "1.2.0", True),
        ("1.2 - 1.4.5", "1.4.5", True),
        ("1.2 - 1.4.5", "1.4.6", False),
        ("1.2 - 1.4", "1.4.9", True),  # the upper bound is <=1.4, i.e. any 1.4.x
        ("1.2.x || >=3", "1.2.7", True),
        ("1.2.x || >=3", "3.1.0", True),
        ("1.2.x || >=3", "2.0.0", False),
        ("1.2", "1.2.5", True),
        ("=1.2", "1.3.0", False),
        ("1.2.3", "1.2.3", True),
        ("=v1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.4", False),
        ("*", "9.9.9", True),
        ("*", "1.0.0-rc.1", False),
        ("x", "0.0.1", True),
        (">*", "1.0.0", False),
        ("!=1.2.3", "1.2.3", False),
        ("!=1.2.3", "1.2.4", True),
        ("!=1.2", "1.2.9", False),
        ("!=1.2", "1.3.0", True),
        (">1.2", "1.2.9", False),
        (">1.2", "1.3.0", True),
        (">1", "1.9.0", False),
        (">1.2.3", "1.2.4", True),
        ("<1.2", "1.1.9", True),
        ("<1.2", "1.2.0", False),
        ("<=1.2", "1.2.9", True),
        ("<=1.2", "1.3.0", False),
        ("=<1.2.3", "1.2.3", True),
        ("=>1.2.3", "1.2.3", True),
        (">=1.0.0-0", "1.5.0-rc.1", True),  # a prerelease in the constraint allows them
        (">=1.2.3-beta.2", "1.2.3-beta.11", True),
        (">=1.2.3-beta.2", "1.2.3-beta.1", False),
        ("^1.2.3-beta", "1.2.3", True),
        ("^1.2.3-beta", "2.0.0-beta", False),
    ],
)
def test_constraint(constraint: str, version: str, matches: bool) -> None:
    assert parse_constraint(constraint).matches(parse_version(version)) is matches


@pytest.mark.parametrize(
    ("constraint", "complaint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (">=", "cannot read"),
        ("foo", "cannot read"),
        (">>1", "cannot read"),
        ("1.x.3", "number after a wildcard"),
        (">=1.0<2", "space or comma"),
        ("1.0 ||", "empty alternative"),
        (">=1.0,,<2", "cannot read"),
        ("1.2.3-01", "leading zero"),
    ],
)
def test_invalid_constraint_names_itself_and_the_problem(constraint: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_constraint(constraint)
    assert repr(constraint) in str(caught.value)
    assert complaint in str(caught.value)


# --- properties ----------------------------------------------------------------------

_VERSIONISH = st.text(alphabet="0123456789.vxX*-+abrc ", max_size=20)
_CONSTRAINTISH = st.text(alphabet="0123456789.vxX*-+^~<>=!|, abrc", max_size=30)


@given(st.one_of(st.text(), _VERSIONISH), st.booleans())
def test_parse_version_raises_only_invalid_version_error(text: str, strict: bool) -> None:
    try:
        version = parse_version(text, strict=strict)
    except InvalidVersionError:
        return
    assert parse_version(str(version)) == version


@given(st.one_of(st.text(), _CONSTRAINTISH))
def test_parse_constraint_raises_only_config_error(text: str) -> None:
    try:
        constraint = parse_constraint(text)
    except ConfigError:
        return
    constraint.matches(parse_version("1.2.3"))


_IDENTIFIER = st.one_of(
    st.integers(min_value=0, max_value=30).map(str),
    st.text(alphabet="abz-", min_size=1, max_size=3),
    st.text(alphabet="0a", min_size=2, max_size=3).filter(lambda s: not s.isdigit()),
)
_VERSIONS = st.builds(
    lambda major, minor, patch, pre, build: (
        f"{major}.{minor}.{patch}"
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(_IDENTIFIER, max_size=3),
    st.lists(st.sampled_from(["b1", "001", "x-y"]), max_size=2),
)


def _spec_compare(a: str, b: str) -> int:
    """Semver 2.0 section 11, written out step by step as an independent oracle."""

    def split(v: str) -> tuple[list[int], list[str]]:
        core, _, pre = v.split("+")[0].partition("-")
        return [int(p) for p in core.split(".")], pre.split(".") if pre else []

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if not pre_a or not pre_b:
        return (not pre_a) - (not pre_b)
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


@given(_VERSIONS, _VERSIONS)
def test_order_agrees_with_the_spec(a: str, b: str) -> None:
    va, vb = parse_version(a), parse_version(b)
    expected = _spec_compare(a, b)
    assert (va < vb, va == vb, va > vb) == (expected < 0, expected == 0, expected > 0)
    assert (va == vb) is (hash(va) == hash(vb)) or va != vb


@given(st.lists(_VERSIONS, max_size=8))
def test_order_is_total_and_sorting_agrees_with_the_spec(texts: list[str]) -> None:
    versions = [parse_version(t) for t in texts]
    ours = [str(v.original) for v in sorted(versions)]
    theirs = sorted(texts, key=functools.cmp_to_key(_spec_compare))
    # Equal-precedence versions (build metadata) may sit in either order.
    assert [parse_version(t) for t in ours] == [parse_version(t) for t in theirs]
    for a, b, c in itertools.product(versions, repeat=3):
        if a <= b and b <= c:
            assert a <= c
        assert (a < b) + (a == b) + (a > b) == 1


def test_version_is_not_comparable_with_other_types() -> None:
    with pytest.raises(TypeError):
        _ = parse_version("1.0.0") < "1.0.0"
    assert parse_version("1.0.0") != "1.0.0"
    assert isinstance(parse_version("1.0.0"), Version)
