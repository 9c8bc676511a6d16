"""The department's reporting hours: a report target counts the hours radiologists report, not
the night.

``REPORTING_HOURS`` is a weekly timetable in the department's zone, ``{"mon": ["08:00-18:00"],
…, "sun": []}`` (a day missing or empty: nobody reports), and ``REPORTING_HOLIDAYS`` the local
dates nobody reports on. A routine CT registered at 22:38 with a target of 8 hours is due at
16:00 the next day (08:00 + 8 h), not at 06:38. Emergency exams (source ``emergency``, or
priority STAT) are reported around the clock: their target is clock hours. An empty timetable
counts every hour, as before there was one.
"""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any, Mapping

from . import clock

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INTERVAL = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
#: How far ahead a due time is looked for (a timetable with no hours at all gives up here).
MAX_DAYS = 366


def intervals(value: Any) -> list[tuple[time, time | None]]:
    """A day's "HH:MM-HH:MM" intervals (None as the end: midnight); ValueError when malformed."""
    found = []
    for text in ([value] if isinstance(value, str) else list(value or [])):
        match = _INTERVAL.fullmatch(str(text).strip())
        if match is None:
            raise ValueError(f"a reporting interval is HH:MM-HH:MM, not {text!r}")
        start = time(int(match.group(1)), int(match.group(2)))
        end = None if match.group(3) == "24" else time(int(match.group(3)), int(match.group(4)))
        if end is not None and end <= start:
            raise ValueError(f"a reporting interval ends after it starts: {text!r}")
        found.append((start, end))
    return sorted(found, key=lambda pair: pair[0])


def check(settings: Mapping[str, Any]) -> None:
    """Refuse a malformed timetable or holiday at start-up (ValueError), not at the first receipt."""
    for day, value in (settings.get("REPORTING_HOURS") or {}).items():
        if day not in DAYS:
            raise ValueError(f"REPORTING_HOURS: {day!r} is not one of {', '.join(DAYS)}")
        intervals(value)
    for holiday in settings.get("REPORTING_HOLIDAYS") or []:
        date.fromisoformat(str(holiday))


def around_the_clock(exam: Mapping[str, Any]) -> bool:
    """Emergency exams are reported at any hour."""
    return exam["source"] == "emergency" or exam["priority"] == "stat"


def due(start: datetime, hours: float, settings: Mapping[str, Any], clock_hours: bool = False) -> datetime:
    """``hours`` of reporting time after ``start`` (UTC): the reporting hours of the timetable,
    holidays skipped; with ``clock_hours``, or without a timetable, every hour counts."""
    timetable = settings.get("REPORTING_HOURS") or {}
    if clock_hours or not timetable:
        return start + timedelta(hours=hours)
    zone = clock.zone(settings["TIMEZONE"])
    week = {day: intervals(timetable.get(day, [])) for day in DAYS}
    holidays = {date.fromisoformat(str(d)) for d in settings.get("REPORTING_HOLIDAYS") or []}
    local = start.astimezone(zone)
    remaining = timedelta(hours=hours)
    day = local.date()
    for _ in range(MAX_DAYS):
        if day not in holidays:
            for begin, end in week[DAYS[day.weekday()]]:
                opens = datetime.combine(day, begin, zone)
                closes = datetime.combine(day + timedelta(days=1), time(0), zone) if end is None \
                    else datetime.combine(day, end, zone)
                opens = max(opens, local)
                if opens >= closes:
                    continue
                if remaining <= closes - opens:
                    return (opens + remaining).astimezone(start.tzinfo)
                remaining -= closes - opens
        day += timedelta(days=1)
    return start + timedelta(hours=hours)  # no reporting hours within a year: the clock decides


def exam_due(start: datetime, exam: Mapping[str, Any], settings: Mapping[str, Any]) -> datetime:
    """When the exam's report is due, its target counted from ``start``."""
    return due(start, float(exam["target_hours"]), settings, around_the_clock(exam))
