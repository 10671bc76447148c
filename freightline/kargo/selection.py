"""Selection policies for image tags, as Kargo's image subscriptions define them.

Pure code without I/O: the registry activity lists tags and reads build
dates; this module decides which tags count and in what order. Tags are
always sorted here, newest first; a registry's order is never trusted.

Regex filters work as Kargo's do: a tag must match at least one
``allowTagsRegexes`` entry (when there are any) and none of
``ignoreTagsRegexes``. Matching is a search anywhere in the tag, as Go's
``regexp.MatchString``; anchor with ``^...$`` for a whole-tag match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from freightline.errors import ConfigError
from freightline.kargo.semver import Constraint, parse_constraint, try_parse_version

__all__ = [
    "ImageSelectionPolicy",
    "ImageSelectionStrategy",
    "Platform",
    "filter_tags",
    "order_by_build_date",
    "parse_created",
    "parse_platform",
    "select_tags",
]

# What a config blob without a usable ``created`` sorts as: older than anything.
_NEVER = datetime.min.replace(tzinfo=UTC)


class ImageSelectionStrategy(StrEnum):
    """Kargo's ``imageSelectionStrategy`` values."""

    SEMVER = "SemVer"
    LEXICAL = "Lexical"
    DIGEST = "Digest"
    NEWEST_BUILD = "NewestBuild"


class Platform(BaseModel):
    """An ``os/arch[/variant]`` platform constraint."""

    model_config = ConfigDict(frozen=True)

    os: str
    architecture: str
    variant: str = ""

    def matches(self, os: str, architecture: str, variant: str = "") -> bool:
        """Whether an image built for ``os/architecture[/variant]`` fits."""
        return (
            self.os == os
            and self.architecture == architecture
            and (not self.variant or self.variant == variant)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """Parse ``os/arch[/variant]``; raises ConfigError."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"invalid platform {text!r}: expected os/arch or os/arch/variant")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")


class ImageSelectionPolicy(BaseModel):
    """How one image subscription picks tags.

    Field names are Python's; the aliases are Kargo's, so both
    ``{"imageSelectionStrategy": "Lexical"}`` and ``{"strategy": "Lexical"}``
    validate. Invalid regexes, constraints and platforms fail validation with
    the field named.
    """

    model_config = ConfigDict(
        frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    strategy: ImageSelectionStrategy = Field(
        ImageSelectionStrategy.SEMVER, alias="imageSelectionStrategy"
    )
    constraint: str = ""
    strict_semvers: bool = Field(True, alias="strictSemvers")
    allow_tags_regexes: tuple[str, ...] = Field((), alias="allowTagsRegexes")
    ignore_tags_regexes: tuple[str, ...] = Field((), alias="ignoreTagsRegexes")
    platform: str = ""
    discovery_limit: int = Field(20, ge=1, le=100, alias="discoveryLimit")
    cache_by_tag: bool = Field(False, alias="cacheByTag")
    """Kargo's ``cacheByTag``: trust the manifest a tag pointed at when first read (mutable tags
    go stale; the worker remembers it as long as it runs)."""

    @field_validator("allow_tags_regexes", "ignore_tags_regexes")
    @classmethod
    def _regexes_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"invalid regex {pattern!r}: {err}") from None
        return patterns

    @field_validator("platform")
    @classmethod
    def _platform_parses(cls, platform: str) -> str:
        if platform:
            try:
                parse_platform(platform)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return platform

    @model_validator(mode="after")
    def _constraint_fits_strategy(self) -> Self:
        if self.strategy is ImageSelectionStrategy.DIGEST and not self.constraint:
            raise ValueError("the Digest strategy needs a constraint: the tag to track")
        if self.strategy is ImageSelectionStrategy.SEMVER and self.constraint:
            try:
                parse_constraint(self.constraint)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return self

    @property
    def semver_constraint(self) -> Constraint | None:
        """The parsed constraint for SemVer, or None when there is none."""
        if self.strategy is ImageSelectionStrategy.SEMVER and self.constraint:
            return parse_constraint(self.constraint)
        return None

    @property
    def platform_constraint(self) -> Platform | None:
        """The parsed platform, or None when any platform will do."""
        return parse_platform(self.platform) if self.platform else None


def filter_tags(policy: ImageSelectionPolicy, tags: Iterable[str]) -> list[str]:
    """The distinct tags that pass the allow/ignore regexes, in their given order."""
    allow = [re.compile(p) for p in policy.allow_tags_regexes]
    ignore = [re.compile(p) for p in policy.ignore_tags_regexes]
    return [
        tag
        for tag in dict.fromkeys(tags)
        if (not allow or any(r.search(tag) for r in allow))
        and not any(r.search(tag) for r in ignore)
    ]


def select_tags(policy: ImageSelectionPolicy, tags: Iterable[str]) -> list[str]:
    """The tags the policy selects, newest first, without the discovery limit.

    SemVer: tags that parse (under ``strictSemvers``) and satisfy the
    constraint, by descending version, ties broken by descending tag string
    (``1.0`` vs ``1.0.0``). Lexical: descending by string. Digest: the
    constraint tag, if present. NewestBuild needs build dates: use
    :func:`order_by_build_date` on the filtered tags.
    """
    candidates = filter_tags(policy, tags)
    match policy.strategy:
        case ImageSelectionStrategy.SEMVER:
            constraint = policy.semver_constraint
            versions = []
            for tag in candidates:
                version = try_parse_version(tag, policy.strict_semvers)
                if version is not None and (constraint is None or constraint.matches(version)):
                    versions.append((version, tag))
            versions.sort(key=lambda pair: (pair[0].sort_key, pair[1]), reverse=True)
            return [tag for _, tag in versions]
        case ImageSelectionStrategy.LEXICAL:
            return sorted(candidates, reverse=True)
        case ImageSelectionStrategy.DIGEST:
            return [tag for tag in candidates if tag == policy.constraint]
        case ImageSelectionStrategy.NEWEST_BUILD:
            raise ValueError("NewestBuild orders by build date: use order_by_build_date")


def order_by_build_date(created: Mapping[str, datetime | None]) -> list[str]:
    """Tags by descending build date, ties by descending tag; no date sorts last."""
    return sorted(
        created,
        key=lambda tag: (created[tag] or _NEVER, tag),
        reverse=True,
    )


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_created(text: str) -> datetime | None:
    """Parse an RFC 3339 ``created`` time (nanoseconds allowed) to an aware datetime.

    None for an empty or unreadable value, or Go's zero time: an image
    without a build date sorts oldest rather than failing discovery.
    """
    try:
        value = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.year <= 1:
        return None
    return value
