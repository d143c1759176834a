"""Step timing (docs/sequences.md, "Timing"): pure functions, no database, the moment given."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from shvya.sequences.timing import StepTiming, Window, due_at, in_opening, next_opening

# Timing, content and policy code: the same on either database (tests/sequences/conftest.py).
pytestmark = pytest.mark.one_database

THU_10 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # a Thursday
OFFICE = Window(time(9), time(18), frozenset({1, 2, 3, 4, 5}))


def test_immediately_is_the_base_itself() -> None:
    assert due_at(StepTiming(), base=THU_10, zone_name="UTC") == THU_10


def test_a_delay_in_minutes_hours_and_days() -> None:
    timing = StepTiming(days=1, hours=2, minutes=30)
    assert due_at(timing, base=THU_10, zone_name="UTC") == datetime(
        2026, 11, 27, 12, 30, tzinfo=UTC
    )


def test_days_keep_the_local_time_across_a_dst_change() -> None:
    """Berlin leaves summer time on 25 October 2026: 09:00 stays 09:00 local, so the UTC
    moment moves by 25 hours, not 24."""
    base = datetime(2026, 10, 24, 7, 0, tzinfo=UTC)  # 09:00 CEST
    due = due_at(StepTiming(days=1), base=base, zone_name="Europe/Berlin")
    assert due == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_a_moment_after_the_window_moves_to_the_next_opening_in_the_leads_zone() -> None:
    timing = StepTiming(window=Window(time(9), time(18)))
    evening = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # 19:30 in Kolkata
    due = due_at(timing, base=evening, zone_name="Asia/Kolkata")
    assert due == datetime(2026, 11, 27, 3, 30, tzinfo=UTC)  # 09:00 IST next day
    # Inside the window: as it is.
    assert due_at(timing, base=THU_10, zone_name="Asia/Kolkata") == THU_10  # 15:30 IST


def test_weekdays_skip_the_weekend() -> None:
    friday_evening = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)
    due = due_at(StepTiming(window=OFFICE), base=friday_evening, zone_name="UTC")
    assert due == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday


def test_business_days_count_monday_to_friday() -> None:
    friday = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    due = due_at(StepTiming(days=1, business_days=True), base=friday, zone_name="UTC")
    assert due == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    saturday = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    # Immediately, but business days only: Monday's first moment.
    assert due_at(StepTiming(business_days=True), base=saturday, zone_name="UTC") == datetime(
        2026, 11, 30, 0, 0, tzinfo=UTC
    )


def test_a_window_opening_inside_a_skipped_hour_opens_just_after_the_gap() -> None:
    """New York skips 02:00-03:00 on 8 March 2026: a 02:30 opening is 03:30 EDT."""
    timing = StepTiming(window=Window(time(2, 30), time(4)))
    base = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    assert due_at(timing, base=base, zone_name="America/New_York") == datetime(
        2026, 3, 8, 7, 30, tzinfo=UTC
    )


def test_a_window_with_no_weekday_left_never_opens() -> None:
    timing = StepTiming(window=Window(time(9), time(18), frozenset({6, 7})), business_days=True)
    assert next_opening(timing, THU_10, "UTC") is None


def test_in_opening_is_checked_at_run_time_too() -> None:
    timing = StepTiming(window=OFFICE)
    assert in_opening(timing, THU_10, "UTC")
    assert not in_opening(timing, THU_10, "America/Los_Angeles")  # 02:00 there
