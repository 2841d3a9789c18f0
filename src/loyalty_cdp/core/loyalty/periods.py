"""Calendar arithmetic on epoch milliseconds (UTC): days, weekdays, months, years, ISO text."""

from __future__ import annotations

import datetime
from functools import lru_cache

DAY_MS = 86_400_000
# "Never" as a number, so that schedules can be compared with ``min`` without special cases.
NEVER = 1 << 62
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


@lru_cache(maxsize=4096)
def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day number counted from 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return days_from_civil(year, month + 1, 1) - days_from_civil(year, month, 1)


def weekday(ms: int) -> int:
    """Day of the week, Monday = 0 (1970-01-01 was a Thursday)."""
    return (ms // DAY_MS + 3) % 7


def start_of_day(ms: int) -> int:
    return ms - ms % DAY_MS


def date_ms(value: datetime.date) -> int:
    """Midnight UTC of a date, as epoch milliseconds."""
    return days_from_civil(value.year, value.month, value.day) * DAY_MS


def add_months(ms: int, months: int) -> int:
    """The same time of day ``months`` later (or earlier), the day clamped to the month's end."""
    year, month, day = civil_from_days(ms // DAY_MS)
    index = year * 12 + month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    day = min(day, _days_in_month(year, month))
    return days_from_civil(year, month, day) * DAY_MS + ms % DAY_MS


def start_of_month(ms: int, months_later: int = 0) -> int:
    """Midnight of the first day of the month ``months_later`` months after the one holding ``ms``."""
    year, month, _ = civil_from_days(ms // DAY_MS)
    year, month = divmod(year * 12 + month - 1 + months_later, 12)
    return days_from_civil(year, month + 1, 1) * DAY_MS


@lru_cache(maxsize=512)
def _new_year(year: int) -> int:
    return days_from_civil(year, 1, 1) * DAY_MS


def start_of_year(ms: int, years_later: int = 0) -> int:
    """Midnight of 1 January of the year ``years_later`` years after the one holding ``ms``."""
    return _new_year(civil_from_days(ms // DAY_MS)[0] + years_later)


def next_month_day(ms: int, month: int, day: int) -> int:
    """Midnight of the first ``month``-``day`` strictly after ``ms`` (29 February falls on the 28th)."""
    year = civil_from_days(ms // DAY_MS)[0]
    for candidate_year in (year, year + 1, year + 2):
        clamped = min(day, _days_in_month(candidate_year, month))
        moment = days_from_civil(candidate_year, month, clamped) * DAY_MS
        if moment > ms:
            return moment
    raise ValueError("unreachable: a month-day recurs within two years")


def month_label(ms: int) -> str:
    """``YYYY-MM`` of the month holding ``ms``."""
    year, month, _ = civil_from_days(ms // DAY_MS)
    return f"{year:04d}-{month:02d}"


@lru_cache(maxsize=4096)
def _day_text(days: int) -> str:
    year, month, day = civil_from_days(days)
    return f"{year:04d}-{month:02d}-{day:02d}T"


# Pieces of the time of day, so that formatting an instant is four lookups.
_HOURS_MINUTES = tuple(f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
_SECONDS = tuple(f"{second:02d}." for second in range(60))
_MILLIS = tuple(f"{millis:03d}Z" for millis in range(1000))


def iso(ms: int) -> str:
    """Segment's ISO-8601 form of an instant, ``2026-01-02T03:04:05.678Z``."""
    days, rest = divmod(ms, DAY_MS)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    return _day_text(days) + _HOURS_MINUTES[minutes] + _SECONDS[second] + _MILLIS[millis]


def iso_date(ms: int) -> str:
    """``YYYY-MM-DD`` of the day holding ``ms``."""
    return _day_text(ms // DAY_MS)[:-1]
