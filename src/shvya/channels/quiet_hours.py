"""Quiet hours: when email and SMS may reach a lead, in the lead's own time (docs/quiet-hours.md).

Pure functions: the window a company set (or the default), the lead's time zone (their own,
else their phone number's, else the company's), whether a moment is inside the window, and
the next allowed minute when it is not, right across a DST change (zoneinfo).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from shvya.crm.models import Channel

# A lead who wrote on SMS this recently is in a live conversation: a reply to them is not held
# until morning (docs/quiet-hours.md). Email never is: it is for scheduled work.
LIVE_CONVERSATION = timedelta(minutes=30)
# phonenumbers still names some zones by their old links; the IANA names in use today.
_CANONICAL = {
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Rangoon": "Asia/Yangon",
    "Asia/Saigon": "Asia/Ho_Chi_Minh",
}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class QuietWindow:
    """The local hours a channel may send in: [start, end), overnight when start > end."""

    start: time
    end: time

    def allows(self, local: time) -> bool:
        minute = time(local.hour, local.minute)
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


DEFAULT_WINDOWS: Mapping[Channel, QuietWindow] = {
    Channel.email: QuietWindow(time(8), time(22)),
    Channel.sms: QuietWindow(time(8), time(21)),
}
QUIET_CHANNELS = frozenset(DEFAULT_WINDOWS)


class QuietHoursInvalid(ValueError):
    """A window a company tried to set, and what to fix (`field` names the bad value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_hhmm(value: Any, field: str) -> time:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise QuietHoursInvalid(field, f"{value!r} is not a time of day as HH:MM (e.g. 08:00)")
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def parse_window(raw: Any, field: str) -> QuietWindow:
    if not isinstance(raw, Mapping):
        raise QuietHoursInvalid(field, 'must be an object like {"start": "08:00", "end": "22:00"}')
    unknown = sorted(set(raw) - {"start", "end"})
    if unknown:
        raise QuietHoursInvalid(field, f"unknown keys {unknown}: only start and end")
    start = parse_hhmm(raw.get("start"), f"{field}.start")
    end = parse_hhmm(raw.get("end"), f"{field}.end")
    if start == end:
        raise QuietHoursInvalid(
            field, "start and end are equal: give a window (start < end, or an overnight one)"
        )
    return QuietWindow(start, end)


def parse_windows(raw: Any, field: str = "quiet_hours") -> dict[Channel, QuietWindow]:
    """A company's windows by channel, the defaults where it set none. Raises
    QuietHoursInvalid."""
    windows = dict(DEFAULT_WINDOWS)
    if raw is None:
        return windows
    if not isinstance(raw, Mapping):
        raise QuietHoursInvalid(field, 'must be an object like {"email": {...}, "sms": {...}}')
    for name, value in raw.items():
        where = f"{field}.{name}" if field else str(name)
        channel = next((c for c in QUIET_CHANNELS if c.value == name), None)
        if channel is None:
            allowed = ", ".join(sorted(c.value for c in QUIET_CHANNELS))
            raise QuietHoursInvalid(where, f"quiet hours apply only to {allowed}")
        windows[channel] = parse_window(value, where)
    return windows


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def phone_zone(phone: str) -> str | None:
    """The one IANA zone a phone number's country or area has, or None when it has several
    (phonenumbers' time zone data: +91 is Asia/Kolkata, +1 212 America/New_York)."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in phone_timezones.time_zones_for_number(number) if _zone(z) is not None]
    return _CANONICAL.get(zones[0], zones[0]) if len(zones) == 1 else None


def lead_zone(lead_timezone: str | None, phones: Iterable[str], company_timezone: str) -> str:
    """The lead's time zone: their own if set and valid, else the one their phone number
    gives, else the company's."""
    if _zone(lead_timezone) is not None:
        assert lead_timezone is not None
        return lead_timezone
    for phone in phones:
        found = phone_zone(phone)
        if found is not None:
            return found
    return company_timezone if _zone(company_timezone) is not None else "UTC"


def _first_instant(day: date, at: time, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first instant after `after` whose local time on `day` is `at` or, when that wall
    time does not exist (the hour a DST change skips), the first one after the gap."""
    wall = datetime.combine(day, at)
    candidates = sorted(
        {wall.replace(tzinfo=zone, fold=fold).astimezone(ZoneInfo("UTC")) for fold in (0, 1)}
    )
    for instant in candidates:
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant > after:
            return instant
    if len(candidates) == 2:
        # A gap: the wall time is skipped; the first minute after it is the change itself.
        probe = candidates[0]
        while probe <= candidates[1]:
            if probe > after and probe.astimezone(zone).replace(tzinfo=None) >= wall:
                return probe
            probe += timedelta(minutes=1)
    return None


def next_allowed(window: QuietWindow, now: datetime, zone_name: str) -> datetime | None:
    """None when `now` is inside the window in that zone; else the next allowed minute (UTC)."""
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    if window.allows(local.time()):
        return None
    for days in range(3):
        found = _first_instant(local.date() + timedelta(days=days), window.start, zone, now)
        if found is not None:
            return found
    raise AssertionError("a daily window opens within three days")  # pragma: no cover


def company_windows(settings: Mapping[str, Any]) -> dict[Channel, QuietWindow]:
    """The windows a company's settings hold, the defaults where it set none."""
    raw = settings.get("channels", {}) if isinstance(settings, Mapping) else {}
    try:
        return parse_windows(raw.get("quiet_hours") if isinstance(raw, Mapping) else None)
    except QuietHoursInvalid:
        return dict(DEFAULT_WINDOWS)


def patched_settings(settings: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The company's settings with `patch` applied to its quiet hours: a channel given a
    window gets it, a channel given null goes back to the default. Raises QuietHoursInvalid."""
    if not isinstance(patch, Mapping):
        raise QuietHoursInvalid("body", 'must be an object like {"sms": {"start": "09:00", ...}}')
    stored = company_windows(settings)
    current = {c.value: w.as_json() for c, w in stored.items() if w != DEFAULT_WINDOWS.get(c)}
    for name, value in patch.items():
        if value is None:
            parse_windows({name: DEFAULT_WINDOWS[Channel.email].as_json()}, "")  # the name
            current.pop(name, None)
        else:
            current[name] = parse_windows({name: value}, "")[Channel(name)].as_json()
    channels = dict(settings.get("channels") or {})
    channels["quiet_hours"] = current
    return {**settings, "channels": channels}
