"""What the exam receipt (检查回执) says: age, where to go, when the report is ready, the barcode."""
from __future__ import annotations

import io
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Mapping

import barcode
from barcode.writer import SVGWriter

from ..core import audit, clock, workhours
from ..core.db import transaction


@dataclass(frozen=True)
class Age:
    """An age in the unit a clinician uses: years, months under 2 years, days under 2 months."""

    value: int
    unit: str  # "years", "months" or "days"


def age_on(birth: date, day: date) -> Age:
    days = (day - birth).days
    months = (day.year - birth.year) * 12 + day.month - birth.month - (day.day < birth.day)
    if months < 2:
        return Age(max(days, 0), "days")
    if months < 24:
        return Age(months, "months")
    return Age(months // 12, "years")


def age_of(exam: Mapping[str, Any], settings: Mapping[str, Any]) -> Age | None:
    if not exam["birth_date"]:
        return None
    return age_on(date.fromisoformat(exam["birth_date"]), clock.local_today(settings["TIMEZONE"]))


def age_at_exam(exam: Mapping[str, Any], settings: Mapping[str, Any]) -> Age | None:
    """The age on the exam's day (the printed report's age), not today's."""
    if not exam["birth_date"]:
        return None
    day = clock.local_today(settings["TIMEZONE"], clock.from_db(exam["scheduled_at"]))
    return age_on(date.fromisoformat(exam["birth_date"]), day)


def report_ready_at(exam: Mapping[str, Any], settings: Mapping[str, Any]) -> datetime:
    """The scheduled time plus the exam's report target (fixed when it was registered), counted
    in the department's reporting hours (:mod:`pacslite.core.workhours`)."""
    return workhours.exam_due(clock.from_db(exam["scheduled_at"]), exam, settings)


def code128_svg(value: str) -> str:
    """A Code 128 barcode of ``value`` as an SVG document, bars only (the number is printed as text)."""
    out = io.BytesIO()
    barcode.get("code128", value, writer=SVGWriter()).write(
        out, options={"module_width": 0.4, "module_height": 12.0, "quiet_zone": 4.0, "write_text": False})
    return out.getvalue().decode("utf-8")


def record_print(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], paper: str) -> None:
    """Opening a receipt counts as printing it: audited, so reprints are visible."""
    with transaction(conn):
        audit.record(conn, actor, "exam.receipt_print", f"exam:{exam['accession_number']}",
                     patient_id=exam["patient_id"], detail={"format": paper})
