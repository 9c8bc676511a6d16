"""The online store's capacity: used and free space, images and bytes per day, the forecast of
days until the high-water mark, and the refusal of new images above it.

Nothing is ever deleted to make room. Above ``STORAGE_HIGH_WATER_PERCENT`` new images are
answered 0xA700 while the disk still has room for the database and the audit log; from
``STORAGE_WARN_PERCENT``, or when the forecast falls under ``STORAGE_WARN_DAYS``, the sweep
raises a *storage_low* alert.
"""
from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Mapping

from ..core import clock, db

HISTORY_DAYS = 90
RATE_DAYS = 30


@dataclass(frozen=True)
class Usage:
    total: int
    used: int
    free: int

    @property
    def used_fraction(self) -> float:
        return self.used / self.total if self.total else 1.0


def usage(store: str | Path) -> Usage:
    found = shutil.disk_usage(store)
    return Usage(found.total, found.used, found.free)


def above_high_water(store: str | Path, high_water_percent: float) -> bool:
    """Whether the store's volume is filled to the high-water mark (new images are refused)."""
    return usage(store).used_fraction * 100 >= high_water_percent


@dataclass(frozen=True)
class Day:
    day: date
    images: int
    bytes: int


@dataclass(frozen=True)
class Forecast:
    usage: Usage
    high_water_bytes: int
    bytes_per_day: float
    days_until_full: float | None  # None: nothing arrives, the store does not fill
    days: list[Day]


def per_day(conn: sqlite3.Connection, settings: Mapping[str, Any], days: int = HISTORY_DAYS) -> list[Day]:
    """Images and bytes received on each of the last ``days`` local days (oldest first)."""
    today = clock.local_today(settings["TIMEZONE"])
    first = today - timedelta(days=days - 1)
    return [Day(day, *_received_on(conn, settings["TIMEZONE"], day, day == today))
            for day in (first + timedelta(days=n) for n in range(days))]


#: What each past local day received, per database file: it never changes once the day is over,
#: and summing 90 days of a busy department's instances took a second and a half on every page.
_past_days: dict[tuple[str, str, date], tuple[int, int]] = {}
_PAST_DAYS_KEPT = 4096


def _received_on(conn: sqlite3.Connection, timezone: str, day: date, is_today: bool) -> tuple[int, int]:
    """(images, bytes) received on one local day, by the index on received_at."""
    key = (db.identity(conn), timezone, day)
    if not is_today and key in _past_days:
        return _past_days[key]
    start, end = clock.local_day_bounds(day, timezone)
    row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances WHERE received_at >= ?"
                       " AND received_at < ?", (start, end)).fetchone()
    found = (int(row[0]), int(row[1]))
    if not is_today:
        if len(_past_days) >= _PAST_DAYS_KEPT:
            _past_days.clear()
        _past_days[key] = found
    return found


def forecast(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> Forecast:
    """Days until the high-water mark at the rate of the last 30 days."""
    used = usage(settings["STORAGE_DIR"])
    days = per_day(conn, settings)
    recent = days[-RATE_DAYS:]
    rate = sum(d.bytes for d in recent) / len(recent)
    high_water = int(used.total * settings["STORAGE_HIGH_WATER_PERCENT"] / 100)
    room = max(high_water - used.used, 0)
    return Forecast(used, high_water, rate, room / rate if rate > 0 else None, days)


def is_low(result: Forecast, settings: Mapping[str, Any]) -> bool:
    """The warning condition: filled to the warning mark, or full within the warning days."""
    return (result.usage.used_fraction * 100 >= settings["STORAGE_WARN_PERCENT"]
            or (result.days_until_full is not None and result.days_until_full < settings["STORAGE_WARN_DAYS"]))
