"""Time in one place: stored as UTC ISO 8601 text, shown in the configured time zone."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo


def now() -> datetime:
    """The current time, UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def to_db(moment: datetime) -> str:
    """UTC text that sorts in time order: ``2026-11-24T08:30:00+00:00``."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def from_db(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_today(tz_name: str, moment: datetime | None = None) -> date:
    """Today's date in the department's time zone."""
    return (moment or now()).astimezone(zone(tz_name)).date()


def local_day_bounds(day: date, tz_name: str) -> tuple[str, str]:
    """The UTC text range [start, end) of one local calendar day, for queries."""
    tz = zone(tz_name)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime.fromordinal(day.toordinal() + 1).replace(tzinfo=tz)
    return to_db(start), to_db(end)
