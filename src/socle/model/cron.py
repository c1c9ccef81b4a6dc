"""Cron schedules, the five classic fields, matched in UTC. Pure: no clock, no I/O.

``minute hour day-of-month month day-of-week``, each field one of ``*``, a number, a range
``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's end), or a
comma-separated list of those. Months and weekdays also take English three-letter names
(``jan``, ``mon``); weekday 0 and 7 are both Sunday. As in Vixie cron, when both
day-of-month and day-of-week are restricted, a day matches if *either* does.

Bad schedules raise :class:`ValueError` naming the field and the reason, so a pydantic
validator (the Volume kind's ``spec.backup.schedule``) turns them into a manifest problem
with file and line. Lives in the model, like :mod:`socle.units`, so manifests can be
checked with it; the scheduled backups (:mod:`socle.backup.schedule`) run on it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES: dict[int, dict[str, int]] = {
    3: {name: i + 1 for i, name in enumerate(_MONTHS)},
    4: {name: i for i, name in enumerate(_DAYS)},
}
MAX_YEARS_AHEAD = 5
""":meth:`Cron.next_after` gives up after this long (``0 0 30 2 *`` never comes)."""


def _number(text: str, index: int) -> int:
    name, low, high = _FIELDS[index]
    value = _NAMES.get(index, {}).get(text.lower())
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{name}: {text!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is out of range {low}-{high}")
    return value


def _parse_field(text: str, index: int) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is ``*`` (unrestricted)."""
    name, low, high = _FIELDS[index]
    if not text:
        raise ValueError(f"{name}: empty")
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{name}: empty item in the list {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, index), _number(last, index)
            if start > end:
                raise ValueError(f"{name}: range {base!r} goes backwards")
        else:
            start = _number(base, index)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return frozenset(values), text == "*"


@dataclass(frozen=True)
class Cron:
    """A parsed schedule; build it with :func:`parse`."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday."""
    any_day: bool
    any_weekday: bool

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, when: dt.datetime) -> bool:
        """Whether the schedule fires in the minute of ``when`` (naive means UTC)."""
        when = _utc(when)
        return (
            when.minute in self.minutes
            and when.hour in self.hours
            and when.month in self.months
            and self._day_matches(when.date())
        )

    def next_after(self, when: dt.datetime) -> dt.datetime | None:
        """The first matching minute strictly after ``when`` (UTC), or None within
        :data:`MAX_YEARS_AHEAD` years (a schedule such as February 30th)."""
        start = _utc(when).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        last = day + dt.timedelta(days=366 * MAX_YEARS_AHEAD)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        while day <= last:
            if day.month in self.months and self._day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        candidate = dt.datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC
                        )
                        if candidate >= start:
                            return candidate
            day += dt.timedelta(days=1)
        return None


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def parse(text: str) -> Cron:
    """Parse a five-field schedule such as ``"0 3 * * *"``; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError("a schedule is a string such as '0 3 * * *'")
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"a schedule has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)} in {text!r}"
        )
    fields = [_parse_field(part, i) for i, part in enumerate(parts)]
    return Cron(
        text=" ".join(parts),
        minutes=fields[0][0],
        hours=fields[1][0],
        days=fields[2][0],
        months=fields[3][0],
        weekdays=fields[4][0],
        any_day=fields[2][1],
        any_weekday=fields[4][1],
    )


__all__ = ["Cron", "parse"]
