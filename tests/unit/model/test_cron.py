"""The cron matcher, as tables."""

from __future__ import annotations

import datetime as dt

import pytest

from socle.model.cron import parse


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("schedule", "when", "expected"),
    [
        ("0 3 * * *", "2026-11-30T03:00", True),
        ("0 3 * * *", "2026-11-30T03:01", False),
        ("0 3 * * *", "2026-11-30T04:00", False),
        ("* * * * *", "2026-01-01T00:00", True),
        ("*/15 * * * *", "2026-01-01T10:45", True),
        ("*/15 * * * *", "2026-01-01T10:46", False),
        ("5-10/2 * * * *", "2026-01-01T10:07", True),
        ("5-10/2 * * * *", "2026-01-01T10:08", False),
        ("5/20 * * * *", "2026-01-01T10:45", True),
        ("1,2,30 * * * *", "2026-01-01T10:30", True),
        ("0 9-17 * * 1-5", "2026-11-30T12:00", True),  # a Monday
        ("0 9-17 * * 1-5", "2026-11-29T12:00", False),  # a Sunday
        ("0 0 * * 0", "2026-11-29T00:00", True),
        ("0 0 * * 7", "2026-11-29T00:00", True),  # 7 is Sunday too
        ("0 0 * * sun", "2026-11-29T00:00", True),
        ("0 0 1 jan *", "2027-01-01T00:00", True),
        ("0 0 1 JAN *", "2027-02-01T00:00", False),
        # Both day fields restricted: either one matches (Vixie cron).
        ("0 0 13 * 5", "2026-11-13T00:00", True),  # the 13th, a Friday
        ("0 0 13 * 5", "2026-11-20T00:00", True),  # a Friday
        ("0 0 13 * 5", "2026-12-13T00:00", True),  # the 13th, a Sunday
        ("0 0 13 * 5", "2026-11-19T00:00", False),
        # One day field restricted: that one decides.
        ("0 0 13 * *", "2026-11-20T00:00", False),
        ("0 0 * * 5", "2026-11-13T00:00", True),
    ],
)
def test_matches(schedule: str, when: str, expected: bool) -> None:
    assert parse(schedule).matches(at(when)) is expected


def test_naive_times_are_utc_and_aware_ones_are_converted() -> None:
    cron = parse("0 3 * * *")
    assert cron.matches(dt.datetime(2026, 11, 30, 3, 0))
    paris = dt.timezone(dt.timedelta(hours=1))
    assert cron.matches(dt.datetime(2026, 11, 30, 4, 0, tzinfo=paris))


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 3 * * *", "2026-11-30T02:59", "2026-11-30T03:00"),
        ("0 3 * * *", "2026-11-30T03:00", "2026-12-01T03:00"),  # strictly after
        ("*/10 * * * *", "2026-11-30T23:55", "2026-12-01T00:00"),
        ("0 0 29 2 *", "2026-03-01T00:00", "2028-02-29T00:00"),
        ("30 12 * * mon", "2026-11-30T12:31", "2026-12-07T12:30"),
    ],
)
def test_next_after(schedule: str, after: str, expected: str) -> None:
    assert parse(schedule).next_after(at(after)) == at(expected)


def test_a_day_that_never_comes_has_no_next_time() -> None:
    assert parse("0 0 30 2 *").next_after(at("2026-01-01T00:00")) is None


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("0 3 * *", "5 fields"),
        ("0 3 * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "minute: 60 is out of range"),
        ("* 24 * * *", "hour: 24 is out of range"),
        ("* * 0 * *", "day of month: 0 is out of range"),
        ("* * * 13 *", "month: 13 is out of range"),
        ("* * * * 8", "day of week: 8 is out of range"),
        ("*/0 * * * *", "step '0'"),
        ("*/x * * * *", "step 'x'"),
        ("10-5 * * * *", "goes backwards"),
        ("a * * * *", "not a number"),
        ("1,,2 * * * *", "empty"),
        ("-1 * * * *", "not a number"),
        ("* * * foo *", "not a number"),
    ],
)
def test_bad_schedules_say_which_field(schedule: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse(schedule)
