"""Pick-up tracking (取片 / 自助打印): whether an exam's final report and its printed films were
handed out, when, by whom, and where (the desk, or a kiosk the patient used).

The desk lists what is ready and not yet collected (reports signed final and films printed in
the last ``PICKUP_DAYS`` days). A kiosk prints the final report for the patient who scans the
receipt and proves who they are with the last four characters of the phone or ID card number on
record: the receipt alone is not enough (accession numbers follow each other, and a report is
private). Five wrong answers for one patient in an hour stop the kiosk for that patient; the
desk helps. A report not final yet is refused with when to come back (its report target).
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict
from ..ris import reports

REPORT, FILMS = "report", "films"
ITEMS = (REPORT, FILMS)
DESK, KIOSK = "desk", "kiosk"
#: Wrong kiosk answers for one patient within LOCKOUT_WINDOW before the kiosk refuses them.
LOCKOUT_TRIES, LOCKOUT_WINDOW = 5, timedelta(hours=1)
#: The desk's list is paged by this many exams.
PAGE = 100
#: Exam states in which a report may still come: the kiosk says when to come back.
REPORT_PENDING = ("in_progress", "performed", "preliminary")


@dataclass(frozen=True)
class Pickup:
    """What of an exam can be collected and what was: the final report's version (None while
    there is none) and whether that version was handed out; films printed and handed out."""

    report_version: int | None
    report_handed: sqlite3.Row | None
    films_printed: int
    films_handed: sqlite3.Row | None
    films_last_printed_at: str | None

    @property
    def report_waiting(self) -> bool:
        return self.report_version is not None and self.report_handed is None

    @property
    def films_waiting(self) -> bool:
        return self.films_printed > 0 and (self.films_handed is None or (
            self.films_last_printed_at is not None and self.films_handed["handed_at"] < self.films_last_printed_at))


def _last_handout(conn: sqlite3.Connection, exam_id: int, item: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM handouts WHERE exam_ref = ? AND item = ? ORDER BY handed_at DESC, id DESC"
                        " LIMIT 1", (exam_id, item)).fetchone()


def of_exam(conn: sqlite3.Connection, exam_id: int) -> Pickup:
    final = reports.latest_final(conn, exam_id)
    report_handed = None
    if final is not None:
        report_handed = conn.execute(
            "SELECT * FROM handouts WHERE exam_ref = ? AND item = ? AND report_version = ? ORDER BY handed_at DESC"
            " LIMIT 1", (exam_id, REPORT, final["version"])).fetchone()
    films, last_printed = conn.execute(
        "SELECT COALESCE(SUM(films), 0), MAX(printed_at) FROM print_jobs WHERE exam_ref = ? AND state = 'printed'",
        (exam_id,)).fetchone()
    return Pickup(final["version"] if final is not None else None, report_handed, int(films),
                  _last_handout(conn, exam_id, FILMS), last_printed)


def hand_out(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], item: str, place: str) -> int:
    """Record that the exam's final report (its newest final version) or its printed films were
    handed out; Conflict when there is nothing of that kind to hand out."""
    if item not in ITEMS or place not in (DESK, KIOSK):
        raise ValueError(f"hand_out {item!r} at {place!r}")
    now = clock.to_db(clock.now())
    with transaction(conn):
        state = of_exam(conn, exam["id"])
        if item == REPORT and state.report_version is None:
            raise Conflict(N_("This exam has no final report yet."))
        if item == FILMS and not state.films_printed:
            raise Conflict(N_("No films of this exam were printed."))
        version, films = (state.report_version, None) if item == REPORT else (None, state.films_printed)
        handout = int(conn.execute(
            "INSERT INTO handouts (exam_ref, item, report_version, films, place, handed_at, handed_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (exam["id"], item, version, films, place, now, actor.name)).lastrowid)
        audit.record(conn, actor, "pickup.hand_out", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"item": item, "place": place, "version": version, "films": films})
    return handout


def waiting(conn: sqlite3.Connection, settings: Mapping[str, Any], *, source: str = "",
            offset: int = 0) -> list[sqlite3.Row]:
    """Exams whose final report (signed in the last PICKUP_DAYS days) or films (printed then)
    are ready and not collected, the most recently ready first; a page of PAGE. Each row: the
    exam's accession number, patient, source, modality and procedure, ``ready_at``. Each part
    reads its index range of the period (not every final exam, nor every print job)."""
    since = clock.to_db(clock.now() - timedelta(days=float(settings["PICKUP_DAYS"])))
    source_clause = " AND e.source = ?" if source else ""
    params: list[Any] = [since, *([source] if source else []), since, *([source] if source else []), PAGE, offset]
    return conn.execute(
        "SELECT e.id, e.accession_number, e.modality, e.procedure, e.source, p.patient_id, p.name AS patient_name,"
        " MAX(ready.at) AS ready_at FROM ("
        # reports signed final (the newest final version) not handed out in that version
        " SELECT e.id AS exam_ref, e.reported_at AS at FROM exams e INDEXED BY exams_reported WHERE e.reported_at >= ?"
        f" AND e.status = 'final'{source_clause}"
        " AND NOT EXISTS (SELECT 1 FROM handouts h WHERE h.exam_ref = e.id AND h.item = 'report'"
        "  AND h.report_version = (SELECT MAX(v.version) FROM report_versions v WHERE v.exam_ref = e.id"
        "  AND v.status = 'final'))"
        " UNION ALL"
        # films printed since they were last handed out
        " SELECT pj.exam_ref, MAX(pj.printed_at) FROM print_jobs pj INDEXED BY print_jobs_printed"
        " JOIN exams e ON e.id = pj.exam_ref"
        f" WHERE pj.state = 'printed' AND pj.printed_at >= ?{source_clause} GROUP BY pj.exam_ref"
        " HAVING MAX(pj.printed_at) > COALESCE((SELECT MAX(h.handed_at) FROM handouts h WHERE h.exam_ref = pj.exam_ref"
        "  AND h.item = 'films'), '')"
        ") AS ready JOIN exams e ON e.id = ready.exam_ref JOIN patients p ON p.id = e.patient_ref"
        " GROUP BY e.id, e.accession_number, e.modality, e.procedure, e.source, p.patient_id, p.name"
        " ORDER BY ready_at DESC, e.id DESC LIMIT ? OFFSET ?", params).fetchall()


# ---------------------------------------------------------------- the kiosk

class NotYet(Conflict):
    """The report is not final yet: come back at ``come_back_at`` (None: ask at the desk)."""

    def __init__(self, message: str, come_back_at: datetime | None, **params: Any) -> None:
        super().__init__(message, **params)
        self.come_back_at = come_back_at


def _proof_of(value: Any) -> str:
    return re.sub(r"[^0-9X]", "", str(value or "").upper())


def _proves(patient: Mapping[str, Any], answer: str) -> bool:
    """The answer is the last four characters of the patient's phone or ID card number."""
    known = [_proof_of(patient[field]) for field in ("phone", "national_id")]
    return len(answer) == 4 and any(len(number) >= 4 and number[-4:] == answer for number in known)


def _recent_refusals(conn: sqlite3.Connection, patient_id: str) -> int:
    since = clock.to_db(clock.now() - LOCKOUT_WINDOW)
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE patient_id = ? AND action = 'pickup.kiosk_refused'"
                        " AND at >= ?", (patient_id, since)).fetchone()[0]


def report_for_kiosk(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                     exam: Mapping[str, Any], answer: str) -> sqlite3.Row:
    """The final report a kiosk prints for the patient, recorded as handed out (at the kiosk)
    and as printed. NotYet when it is not final (with when to come back: said without proof,
    it tells nothing of the report); Conflict when the patient has no phone or ID card number
    to prove who they are with, is locked out, or the answer does not prove it (audited, and
    counted towards the lockout)."""
    final = reports.latest_final(conn, exam["id"])
    if final is None:
        raise _not_yet(exam, settings)
    if not any(len(_proof_of(exam[field])) >= 4 for field in ("phone", "national_id")):
        raise Conflict(N_("Please collect this report at the desk."))
    if _recent_refusals(conn, exam["patient_id"]) >= LOCKOUT_TRIES:
        raise Conflict(N_("Too many wrong answers: please collect this report at the desk."))
    if not _proves(exam, _proof_of(answer)):
        with transaction(conn):
            audit.record(conn, actor, "pickup.kiosk_refused", f"exam:{exam['accession_number']}",
                         patient_id=exam["patient_id"], outcome="denied")
        raise Conflict(N_("That is not what we have on record. Please try again, or ask at the desk."))
    hand_out(conn, actor, exam, REPORT, KIOSK)
    reports.record_print(conn, actor, exam, final, settings["KIOSK_REPORT_PAPER"])
    return final


def _not_yet(exam: Mapping[str, Any], settings: Mapping[str, Any]) -> NotYet:
    if exam["status"] in REPORT_PENDING and (exam["images_first_at"] or exam["status"] == "preliminary"):
        due = reports.due_at(exam, settings)
        if due > clock.now():
            return NotYet(N_("Your report is not final yet. Please come back after %(when)s."), due,
                          when=due.astimezone(clock.zone(settings["TIMEZONE"])).strftime("%Y-%m-%d %H:%M"))
    return NotYet(N_("Your report is not final yet. Please ask at the desk when it will be ready."), None)
