"""Report quality control (报告质控): a QC reviewer (an account allowed to, ``users.can_qc``)
samples a month's final reports — a number per radiologist at random, and every report classed
critical — and scores each against a checklist: the description (描述), the conclusion (结论)
and, when the pathology or the clinical outcome is known, the agreement with it (符合), each
good 2, acceptable 1, poor 0; with a comment the report's author sees on the report page. No
one scores their own report. The statistics show each radiologist's scores beside the share of
their reports within the target.
"""
from __future__ import annotations

import secrets
import sqlite3
from datetime import date
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text
from . import users

ITEMS = ("description", "conclusion", "agreement")
#: Items that must be scored; the agreement only when the outcome is known.
REQUIRED = ("description", "conclusion")
SAMPLE_MAX = 50
PAGE = 200


def month_bounds(month: str, timezone: str) -> tuple[str, str]:
    """[start, end) of the department's month ``YYYY-MM`` as stored times; ValidationError else."""
    try:
        year, number = (int(part) for part in month.split("-"))
        first = date(year, number, 1)
    except ValueError:
        raise ValidationError("month", N_("A month as YYYY-MM.")) from None
    following = date(year + number // 12, number % 12 + 1, 1)
    return clock.local_day_bounds(first, timezone)[0], clock.local_day_bounds(following, timezone)[0]


def _reviewer(conn: sqlite3.Connection, actor: audit.Actor) -> None:
    user = users.by_username(conn, actor.name)
    if user is None or not user.can_qc:
        raise Conflict(N_("Only a QC reviewer samples and scores reports."))


def sample(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], month: str,
           per_radiologist: Any) -> dict[str, int]:
    """Sample the month's final reports: ``per_radiologist`` more of each radiologist's (at
    random, not sampled before) and every critical one not sampled yet. {"sample": n, "critical": m}."""
    _reviewer(conn, actor)
    try:
        wanted = int(str(per_radiologist).strip())
    except ValueError:
        raise ValidationError("per_radiologist", N_("A whole number from 1.")) from None
    if not 0 <= wanted <= SAMPLE_MAX:
        raise ValidationError("per_radiologist", N_("At most %(count)d a radiologist."), count=SAMPLE_MAX)
    since, until = month_bounds(month, settings["TIMEZONE"])
    rows = conn.execute(
        "SELECT v.id, v.exam_ref, v.signed_by, v.result_class FROM report_versions v"
        " INDEXED BY report_versions_signed WHERE v.signed_at >= ? AND v.signed_at < ? AND v.status = 'final'"
        " AND NOT EXISTS (SELECT 1 FROM report_qc q WHERE q.exam_ref = v.exam_ref)", (since, until)).fetchall()
    chosen: dict[int, tuple[Any, str]] = {}
    for row in rows:
        if row["result_class"] == "critical":
            chosen[row["exam_ref"]] = (row, "critical")
    by_author: dict[str, list[Any]] = {}
    for row in rows:
        if row["exam_ref"] not in chosen:
            by_author.setdefault(row["signed_by"], []).append(row)
    draw = secrets.SystemRandom()  # not predictable by the radiologists
    for author_rows in by_author.values():
        unique = list({row["exam_ref"]: row for row in author_rows}.values())
        for row in draw.sample(unique, min(wanted, len(unique))):
            chosen[row["exam_ref"]] = (row, "sample")
    now = clock.to_db(clock.now())
    counts = {"sample": 0, "critical": 0}
    with transaction(conn):
        for row, why in chosen.values():
            conn.execute("INSERT INTO report_qc (version_ref, exam_ref, author, month, why, sampled_by, sampled_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", (row["id"], row["exam_ref"], row["signed_by"], month, why,
                                                            actor.name, now))
            counts[why] += 1
        audit.record(conn, actor, "qc.sample", f"qc:{month}", detail={**counts, "per_radiologist": wanted})
    return counts


def get(conn: sqlite3.Connection, qc_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT q.*, e.accession_number, e.modality, e.procedure, p.patient_id, v.findings,"
                       " v.impression, v.version, v.signed_at FROM report_qc q JOIN exams e ON e.id = q.exam_ref"
                       " JOIN patients p ON p.id = e.patient_ref JOIN report_versions v ON v.id = q.version_ref"
                       " WHERE q.id = ?", (qc_id,)).fetchone()
    if row is None:
        raise NotFound(f"qc {qc_id}")
    return row


def of_month(conn: sqlite3.Connection, month: str, *, offset: int = 0) -> list[sqlite3.Row]:
    return conn.execute("SELECT q.*, e.accession_number, e.modality, e.procedure FROM report_qc q"
                        " JOIN exams e ON e.id = q.exam_ref WHERE q.month = ? ORDER BY q.scored_at IS NOT NULL,"
                        " q.author, q.id LIMIT ? OFFSET ?", (month, PAGE, offset)).fetchall()


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    """The exam's scored reviews, for its report page (the author sees the comment)."""
    return conn.execute("SELECT q.*, v.version FROM report_qc q JOIN report_versions v ON v.id = q.version_ref"
                        " WHERE q.exam_ref = ? AND q.scored_at IS NOT NULL ORDER BY q.id", (exam_id,)).fetchall()


def _item(data: Mapping[str, Any], field: str) -> int | None:
    value = str(data.get(field) or "").strip()
    if not value:
        if field in REQUIRED:
            raise ValidationError(field, N_("This field is required."))
        return None
    if value not in ("0", "1", "2"):
        raise ValidationError(field, N_("Not one of the allowed values."))
    return int(value)


def score(conn: sqlite3.Connection, actor: audit.Actor, qc_id: int, data: Mapping[str, Any]) -> None:
    """Score a sampled report (again, if scored before); audited."""
    _reviewer(conn, actor)
    items = {field: _item(data, field) for field in ITEMS}
    comment = text(data, "comment", max_length=1000, multiline=True)
    with transaction(conn):
        row = get(conn, qc_id)
        if row["author"] == actor.name:
            raise Conflict(N_("You wrote this report: another QC reviewer scores it."))
        total = sum(value for value in items.values() if value is not None)
        conn.execute("UPDATE report_qc SET description = ?, conclusion = ?, agreement = ?, score = ?, comment = ?,"
                     " scored_by = ?, scored_at = ? WHERE id = ?",
                     (items["description"], items["conclusion"], items["agreement"], total, comment, actor.name,
                      clock.to_db(clock.now()), qc_id))
        audit.record(conn, actor, "qc.score", f"exam:{row['accession_number']}", patient_id=row["patient_id"],
                     detail={**items, "score": total, "author": row["author"]})


def scores_by_radiologist(conn: sqlite3.Connection, first_month: str, last_month: str) -> dict[str, dict[str, Any]]:
    """Per author: reports scored, their mean score as a share of the points possible."""
    found: dict[str, dict[str, Any]] = {}
    for author, scored, points, possible in conn.execute(
            "SELECT author, COUNT(*), SUM(score), SUM(4 + CASE WHEN agreement IS NULL THEN 0 ELSE 2 END)"
            " FROM report_qc WHERE month >= ? AND month <= ? AND scored_at IS NOT NULL GROUP BY author",
            (first_month, last_month)):
        found[author] = {"scored": scored, "share": (points / possible) if possible else None}
    return found
