"""Dates and times as the registration desk types them, read the same whatever the browser.

A browser's date input shows the format of its own locale (a Chromium showed mm/dd/yyyy with a
12-hour clock, and ``19580312`` became year 80312), so pacslite's forms take text and read it
here: ``19580312``, ``1958-03-12``, ``1958.3.12``, ``1958/3/12``, ``1958年3月12日``; a birth date
may also be an age (``67岁``, ``8月``, ``15天``; ``67y``, ``8mo``, ``15d``), which gives an
estimated birth date, marked as such. Times are on the 24-hour clock: ``14:30``, ``1430``,
``8:05``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time, timedelta

from .validation import N_, ValidationError

YEARS, MONTHS, DAYS = "years", "months", "days"
_UNITS = {"岁": YEARS, "周岁": YEARS, "y": YEARS, "个月": MONTHS, "月": MONTHS, "mo": MONTHS, "天": DAYS, "d": DAYS}
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_SEPARATED = re.compile(r"(\d{4})\s*[-./年]\s*(\d{1,2})\s*[-./月]\s*(\d{1,2})\s*日?")
_AGE = re.compile(r"(\d{1,3})\s*(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + ")", re.IGNORECASE)
_TIME = re.compile(r"(\d{1,2})\s*[:：.]\s*(\d{2})|(\d{1,2})(\d{2})")
#: The oldest date anyone types (a birth in 1880); anything earlier is a typo.
EARLIEST = date(1880, 1, 1)


@dataclass(frozen=True)
class TypedDate:
    value: date
    age: tuple[int, str] | None = None  # typed as an age (n, unit): the date is an estimate

    @property
    def estimated(self) -> bool:
        return self.age is not None


def read_date(value: str, field: str, today: date, ages: bool = False) -> TypedDate | None:
    """The date typed in ``value`` (None when blank); with ``ages``, an age gives the date that
    many years, months or days before ``today``. ValidationError under ``field`` otherwise."""
    value = value.strip()
    if not value:
        return None
    found = _COMPACT.fullmatch(value) or _SEPARATED.fullmatch(value)
    if found:
        try:
            day = date(int(found.group(1)), int(found.group(2)), int(found.group(3)))
        except ValueError:
            day = None
        if day is not None and day >= EARLIEST:
            return TypedDate(day)
        raise ValidationError(field, N_("%(value)s is not a date in the calendar."), value=value)
    age = _AGE.fullmatch(value) if ages else None
    if age:
        count, unit = int(age.group(1)), _UNITS[age.group(2).lower()]
        if unit == YEARS and count > 130:
            raise ValidationError(field, N_("%(value)s is not a possible age."), value=value)
        return TypedDate(before(today, count, unit), (count, unit))
    if ages:
        raise ValidationError(field, N_("Type the date as 19580312, 1958-03-12 or 1958.3.12, or an age: 67岁, 8月,"
                                        " 15天."))
    raise ValidationError(field, N_("Type the date as 20261204, 2026-12-04 or 2026.12.4."))


def before(today: date, count: int, unit: str) -> date:
    """The day ``count`` years, months or days before ``today`` (29 February → 28 February)."""
    if unit == DAYS:
        return today - timedelta(days=count)
    months = today.year * 12 + today.month - 1 - (count * 12 if unit == YEARS else count)
    year, month = divmod(months, 12)
    for day in (today.day, 30, 29, 28):
        try:
            return date(year, month + 1, day)
        except ValueError:
            continue
    raise AssertionError("every month has a 28th")


def age_in(born: date, today: date, unit: str) -> int:
    """Whole years, months or days from ``born`` to ``today``."""
    if unit == DAYS:
        return (today - born).days
    months = (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)
    return months // 12 if unit == YEARS else months


def read_time(value: str, field: str) -> time | None:
    """The time typed in ``value`` on the 24-hour clock (None when blank)."""
    value = value.strip()
    if not value:
        return None
    found = _TIME.fullmatch(value)
    if found:
        hour, minute = (found.group(1), found.group(2)) if found.group(1) else (found.group(3), found.group(4))
        if int(hour) < 24 and int(minute) < 60:
            return time(int(hour), int(minute))
    raise ValidationError(field, N_("Type the time on the 24-hour clock: 14:30 or 1430."))
