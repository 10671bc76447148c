"""Promotion windows: when a Stage may be promoted, as RFC 5545 recurrence rules.

A window (``ProjectConfig.spec.promotionWindows``, Kargo's shape) is ``Allow``
or ``Deny``, starts at ``dtstart`` (an iCal date-time, optionally
``TZID=Europe/Berlin:20260105T090000``), lasts until ``dtend`` (or for
``duration``, a Freightline extension), and repeats by ``rrule``
(``FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR``) when one is given. Recurrences follow
the wall clock of the start's time zone, so "09:00 Berlin" stays 09:00
across daylight-saving changes.

The schedule is open at an instant when no matching Deny window is active
and, if any Allow window matches the Stage, at least one of them is. Deny
wins. Everything here is pure and deterministic, so the ``Promotion``
workflow evaluates it with ``workflow.now()`` and sleeps on a durable timer
until :func:`next_allowed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

from freightline.kargo.resources import ProjectResources, PromotionWindow, _selects, parse_duration

HORIZON = timedelta(days=366)
"""How far ahead :func:`evaluate` looks for an open instant before calling the schedule frozen."""
_MAX_STEPS = 10_000

_ICAL_TIME = re.compile(r"^(?:TZID=(?P<tz>[^:]+):)?(?P<time>\d{8}(?:T\d{6})?)(?P<utc>Z)?$")


@dataclass(frozen=True)
class Occurrence:
    """One active interval of a window, ``[start, end)``."""

    start: datetime
    end: datetime


class WindowSchedule:
    """One window's occurrences. Raises ValueError when the window cannot be parsed."""

    def __init__(self, window: PromotionWindow) -> None:
        self.window = window
        if not window.dtstart:
            raise ValueError(f'promotion window "{window.name}": dtstart is required')
        zone = _zone(window.time_zone) if window.time_zone else None
        self.start = _ical_time(window.dtstart, zone, window.name, "dtstart")
        if (window.dtend is None) == (window.duration is None):
            raise ValueError(
                f'promotion window "{window.name}": give exactly one of dtend or duration'
            )
        if window.dtend is not None:
            self.length = _ical_time(window.dtend, zone, window.name, "dtend") - self.start
        else:
            self.length = parse_duration(window.duration or "")
        if self.length <= timedelta(0):
            raise ValueError(f'promotion window "{window.name}": it must end after it starts')
        self.rule: rrule | None = None
        if window.rrule:
            text = window.rrule.strip().removeprefix("RRULE:")
            try:
                parsed = rrulestr(text, dtstart=self.start)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f'promotion window "{window.name}": invalid rrule "{window.rrule}": {err}'
                ) from None
            assert isinstance(parsed, rrule)
            self.rule = parsed

    @property
    def name(self) -> str:
        return self.window.name

    @property
    def deny(self) -> bool:
        return self.window.kind == "Deny"

    def active_at(self, when: datetime) -> Occurrence | None:
        """The occurrence active at ``when``, if any."""
        start = self.rule.before(when, inc=True) if self.rule else self.start
        if start is None or start > when:
            return None
        # Occurrences are equally long, so only the latest start can still be running.
        end = start + self.length
        return Occurrence(start, end) if when < end else None

    def next_start_after(self, when: datetime) -> datetime | None:
        """The first occurrence starting strictly after ``when``."""
        if self.rule is None:
            return self.start if self.start > when else None
        found: datetime | None = self.rule.after(when, inc=False)
        return found


@dataclass(frozen=True)
class WindowGate:
    """Whether a promotion may run at an instant, why not, and when it next may."""

    open: bool
    reason: str = ""
    next_open: datetime | None = None
    """When closed: the next instant the schedule opens (None: not within ``HORIZON``)."""


def windows_for(resources: ProjectResources, stage: str) -> tuple[PromotionWindow, ...]:
    """The project's promotion windows whose stage selector picks ``stage`` (none: all)."""
    config = resources.project_config
    windows = (config.spec.promotion_windows or []) if config else []
    stage_resource = resources.stages.get(stage)
    labels = (stage_resource.metadata.labels if stage_resource else None) or {}
    return tuple(
        w for w in windows if w.stage_selector is None or _selects(w.stage_selector, stage, labels)
    )


def evaluate(now: datetime, windows: Sequence[PromotionWindow]) -> WindowGate:
    """Whether the schedule is open at ``now``; when closed, the reason and the next opening."""
    schedules = [WindowSchedule(w) for w in windows]
    if _open_at(schedules, now):
        return WindowGate(open=True)
    opens = _next_open(schedules, now)
    reason = _closed_reason(schedules, now)
    if opens is None:
        reason += f"; no allowed time within {HORIZON.days} days"
    else:
        reason += f"; promotions reopen at {_show(opens)}"
    return WindowGate(open=False, reason=reason, next_open=opens)


def next_allowed(now: datetime, windows: Sequence[PromotionWindow]) -> datetime | None:
    """``now`` when the schedule is open, else its next opening (None: none within a year)."""
    gate = evaluate(now, windows)
    return now if gate.open else gate.next_open


def check_window(window: PromotionWindow) -> None:
    """Raise ValueError when a window's times or rule cannot be parsed."""
    WindowSchedule(window)


# --- internals ----------------------------------------------------------------------------------


def _open_at(schedules: Iterable[WindowSchedule], when: datetime) -> bool:
    allows = [s for s in schedules if not s.deny]
    if any(s.active_at(when) for s in schedules if s.deny):
        return False
    return not allows or any(s.active_at(when) for s in allows)


def _next_open(schedules: list[WindowSchedule], now: datetime) -> datetime | None:
    """Walk window boundaries forward: the schedule can only open where a Deny ends or an
    Allow starts."""
    allows = [s for s in schedules if not s.deny]
    when = now
    for _ in range(_MAX_STEPS):
        if _open_at(schedules, when):
            return when
        candidates: list[datetime] = []
        for schedule in schedules:
            occurrence = schedule.active_at(when)
            if schedule.deny and occurrence is not None:
                candidates.append(occurrence.end)
        if allows and not any(s.active_at(when) for s in allows):
            candidates.extend(
                start for s in allows if (start := s.next_start_after(when)) is not None
            )
        if not candidates:
            return None
        when = min(candidates)
        if when - now > HORIZON:
            return None
    return None


def _closed_reason(schedules: list[WindowSchedule], now: datetime) -> str:
    for schedule in schedules:
        occurrence = schedule.active_at(now) if schedule.deny else None
        if occurrence is not None:
            return f'inside deny window "{schedule.name}" (until {_show(occurrence.end)})'
    names = ", ".join(f'"{s.name}"' for s in schedules if not s.deny)
    return f"outside every allow window ({names})"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone "{name}"') from None


def _ical_time(text: str, default_zone: tzinfo | None, window: str, field: str) -> datetime:
    match = _ICAL_TIME.match(text.strip())
    if match is None:
        raise ValueError(
            f'promotion window "{window}": {field} "{text}" is not an iCal date-time '
            "(20260105T090000, 20260105T090000Z or TZID=Europe/Berlin:20260105T090000)"
        )
    raw = match.group("time")
    parsed = datetime.strptime(raw, "%Y%m%dT%H%M%S" if "T" in raw else "%Y%m%d")
    if match.group("utc"):
        return parsed.replace(tzinfo=UTC)
    if match.group("tz"):
        try:
            return parsed.replace(tzinfo=_zone(match.group("tz")))
        except ValueError as err:
            raise ValueError(f'promotion window "{window}": {field}: {err}') from None
    # A floating time: the window's timeZone, else UTC.
    return parsed.replace(tzinfo=default_zone or UTC)


def _show(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
