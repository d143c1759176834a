"""When a sequence step runs: pure functions of the step's timing, a moment and the lead's
time zone (docs/sequences.md, "Timing"). Nothing here reads a clock or a database: the caller
passes `now` (the job runner's, the scheduler's, a simulation's).

- `after` counts from the previous step's send, or from enrolment for the first step. Days
  are calendar days in the lead's zone (09:00 stays 09:00 across a DST change), or business
  days (Monday to Friday) when the step says so; hours and minutes are elapsed time.
- A window (`from`-`to` local time on given ISO weekdays, Monday = 1) and business days
  narrow when the step may go: a moment outside them moves to the next opening. The same
  check runs again when the step's job runs, so a step never goes outside its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

ALL_WEEKDAYS = frozenset(range(1, 8))
BUSINESS_WEEKDAYS = frozenset(range(1, 6))
# How far ahead an opening is looked for: a window with no weekday left opens never.
_SEARCH_DAYS = 15


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    weekdays: frozenset[int] = ALL_WEEKDAYS


@dataclass(frozen=True)
class StepTiming:
    days: int = 0
    hours: int = 0
    minutes: int = 0
    window: Window | None = None
    business_days: bool = False

    @property
    def weekdays(self) -> frozenset[int]:
        days = self.window.weekdays if self.window is not None else ALL_WEEKDAYS
        return days & BUSINESS_WEEKDAYS if self.business_days else days

    @classmethod
    def of(
        cls, after: dict[str, Any] | None, window: dict[str, Any] | None, business_days: bool
    ) -> StepTiming:
        """A step's timing as the API stores it (sequences.schemas)."""
        after = after or {}
        return cls(
            days=int(after.get("days") or 0),
            hours=int(after.get("hours") or 0),
            minutes=int(after.get("minutes") or 0),
            window=None
            if window is None
            else Window(
                start=time.fromisoformat(window["from"]),
                end=time.fromisoformat(window["to"]),
                weekdays=frozenset(int(d) for d in window.get("weekdays") or ALL_WEEKDAYS),
            ),
            business_days=business_days,
        )


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`at` on `day` in `zone`, as a UTC moment. A wall time the clocks skip (spring forward)
    is read with the offset before the change, which lands just after the gap."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def next_opening(timing: StepTiming, moment: datetime, zone_name: str) -> datetime | None:
    """The earliest moment at or after `moment` when the step may go (its window, weekdays,
    business days), or None when it never may (no weekday left)."""
    zone = ZoneInfo(zone_name)
    weekdays = timing.weekdays
    if not weekdays:
        return None
    local = moment.astimezone(zone)
    for offset in range(_SEARCH_DAYS):
        day = local.date() + timedelta(days=offset)
        if day.isoweekday() not in weekdays:
            continue
        if timing.window is None:
            start = moment if offset == 0 else _local(day, time(0), zone)
            return max(start, moment)
        opens = _local(day, timing.window.start, zone)
        closes = _local(day, timing.window.end, zone)
        if moment < opens:
            return opens
        if moment < closes:
            return moment
    return None


def in_opening(timing: StepTiming, moment: datetime, zone_name: str) -> bool:
    return next_opening(timing, moment, zone_name) == moment


def _add_days(moment: datetime, days: int, zone: ZoneInfo, business: bool) -> datetime:
    if days == 0:
        return moment
    local = moment.astimezone(zone).replace(tzinfo=None)
    if not business:
        day = local.date() + timedelta(days=days)
    else:
        day, left = local.date(), days
        while left:
            day += timedelta(days=1)
            if day.isoweekday() in BUSINESS_WEEKDAYS:
                left -= 1
    return _local(day, local.time(), zone)


def due_at(timing: StepTiming, *, base: datetime, zone_name: str) -> datetime | None:
    """When the step is due: `base` (the previous step's send, or the enrolment) plus its
    `after`, moved into its next opening. None: the step can never go (no weekday left)."""
    zone = ZoneInfo(zone_name)
    moment = _add_days(base, timing.days, zone, timing.business_days)
    moment += timedelta(hours=timing.hours, minutes=timing.minutes)
    return next_opening(timing, moment, zone_name)
