"""Quality control (质控) of images: the reading radiologist grades an exam's images, optionally,
in two keys — X-ray (DR, CR, DX, MG, RF) 甲/乙/丙/丁 (stored A–D), CT, MR and the others 3 (best)
to 0 (not diagnostic) — with the reasons of a lower grade (positioning, coverage, artefacts,
exposure, other). The statistics show the grades per technologist, station and month.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any, Iterable, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, ValidationError

XRAY_GRADES = ("A", "B", "C", "D")  # 甲 乙 丙 丁
SCORE_GRADES = ("3", "2", "1", "0")
XRAY_MODALITIES = ("DR", "CR", "DX", "MG", "RF")
REASONS = ("positioning", "coverage", "artefacts", "exposure", "other")


def grades_for(modality: str) -> tuple[str, ...]:
    """The grades an exam of this modality is given, best first."""
    return XRAY_GRADES if modality in XRAY_MODALITIES else SCORE_GRADES


def of_exam(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM image_grades WHERE exam_ref = ?", (exam_id,)).fetchone()


def grade(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], value: str,
          reasons: Iterable[str] = ()) -> None:
    """Grade (or grade again) the exam's images; a blank ``value`` takes the grade away.
    ValidationError for a grade not of the exam's scale or an unknown reason."""
    value = (value or "").strip().upper()
    chosen = sorted({r for r in reasons if r})
    if value and value not in grades_for(exam["modality"]):
        raise ValidationError("grade", N_("Not one of this modality's grades."))
    if any(r not in REASONS for r in chosen):
        raise ValidationError("reasons", N_("Not one of the allowed values."))
    now = clock.to_db(clock.now())
    with transaction(conn):
        if not value:
            removed = conn.execute("DELETE FROM image_grades WHERE exam_ref = ?", (exam["id"],)).rowcount
            if removed:
                audit.record(conn, actor, "quality.grade", f"exam:{exam['accession_number']}",
                             patient_id=exam["patient_id"], detail={"grade": None})
            return
        conn.execute("INSERT INTO image_grades (exam_ref, grade, reasons, graded_by, graded_at) VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (exam_ref) DO UPDATE SET grade = excluded.grade, reasons = excluded.reasons,"
                     " graded_by = excluded.graded_by, graded_at = excluded.graded_at",
                     (exam["id"], value, ",".join(chosen), actor.name, now))
        audit.record(conn, actor, "quality.grade", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"grade": value, "reasons": chosen})


def distribution(conn: sqlite3.Connection, since: str, until: str,
                 local: str = "+0 minutes") -> dict[str, dict[tuple[str, str], Counter[str]]]:
    """Grades given in [since, until): per technologist, per station and per month (the
    department's month of the grading, YYYY-MM, ``local`` the date() modifier from UTC), each
    {(name, scale "xray" or "score"): Counter(grade)}."""
    found: dict[str, dict[tuple[str, str], Counter[str]]] = {"technologist": {}, "station": {}, "month": {}}
    for performed_by, station, month, modality, value, count in conn.execute(
            "SELECT e.performed_by, e.station_ae, substr(date(g.graded_at, ?), 1, 7), e.modality, g.grade, COUNT(*)"
            " FROM image_grades g JOIN exams e ON e.id = g.exam_ref WHERE g.graded_at >= ? AND g.graded_at < ?"
            " GROUP BY 1, 2, 3, 4, 5", (local, since, until)):
        scale = "xray" if modality in XRAY_MODALITIES else "score"
        for kind, name in (("technologist", performed_by or "—"), ("station", station or "—"), ("month", month)):
            found[kind].setdefault((name, scale), Counter())[value] += count
    return {kind: dict(sorted(groups.items())) for kind, groups in found.items()}
