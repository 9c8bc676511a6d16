"""Critical findings (危急值): a result the ward must hear of at once, and proof that it did.

A finding is recorded when a radiologist signs a report classed *critical* (once per exam: an
amendment or a second signature does not send it again) or presses "critical finding" while
reading. It goes to the exam's requesting department: its clinicians see it in the navigation
bar and on the critical findings page, and the alert ``critical_finding`` is open until one of
them acknowledges it (who, when, a note). A radiologist or an admin may record an
acknowledgement taken by telephone, naming who took it. Unacknowledged after
``CRITICAL_ACK_MINUTES`` it escalates: it is marked overdue for the radiologists and admins,
once, audited. Every step is audited in the transaction that makes it.
"""
from __future__ import annotations

import logging
import sqlite3
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..core import alerts, audit, clock
from . import exams, users
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text

log = logging.getLogger(__name__)
RULE = alerts.register("critical_finding", closed_elsewhere=True)  # closed by the ward's acknowledgement
FINDING_MAX = 2000
NOTE_MAX = 500
#: Findings one page (or API answer) lists; the open ones come first, and there are few.
PAGE = 100
#: Roles that see every department's findings and the overdue ones; they may record an
#: acknowledgement taken by telephone.
OVERSEERS = ("radiologist", "admin")


@dataclass(frozen=True)
class Viewer:
    """Whose findings a user sees: every department's (radiologists, admins) or one."""

    department: str
    everything: bool

    @classmethod
    def of(cls, user: users.User) -> "Viewer":
        return cls(user.department, user.has_any(OVERSEERS))

    @classmethod
    def for_api(cls, user: users.User, department: str = "") -> "Viewer | None":
        """Whose findings an API token reads: a clinician's, the own department's only (None
        when another one is asked for); any other account (the HIS's) every department's, or
        the one asked for."""
        if "clinician" in user.roles and not user.has_any(OVERSEERS):
            if department and department.casefold() != user.department.casefold():
                return None
            return cls(user.department, False)
        return cls(department, False) if department else cls("", True)


def _subject(finding_id: int) -> str:
    return f"critical:{finding_id}"


def record(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], finding: str, at: str,
           ack_minutes: float, version: int | None = None) -> int:
    """Record a finding for the exam's requesting department and open its alert, inside the
    caller's transaction (a signature, or the "critical finding" button). Returns its id."""
    due = clock.to_db(clock.from_db(at) + timedelta(minutes=float(ack_minutes)))
    department = (exam["requesting_department"] or "").strip()
    finding_id = int(conn.execute(
        "INSERT INTO critical_findings (exam_ref, version, finding, department, reported_by, reported_at, due_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)", (exam["id"], version, finding, department, actor.name, at, due)).lastrowid)
    alerts.raise_alert(conn, RULE, _subject(finding_id), at, {"department": department, "finding": finding[:200],
                                                             "due_at": due}, exam_ref=exam["id"])
    audit.record(conn, actor, "critical.report", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                 detail={"finding_id": finding_id, "department": department, "version": version, "finding": finding})
    log.warning("critical finding %s for exam %s, department %r", finding_id, exam["accession_number"], department)
    return finding_id


def record_from_report(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any],
                       version: Mapping[str, Any], at: str, ack_minutes: float) -> int | None:
    """A report signed *critical*: its impression is the finding, unless the exam already has
    one (the ward is not told twice of one result). Inside the signature's transaction."""
    if conn.execute("SELECT 1 FROM critical_findings WHERE exam_ref = ?", (exam["id"],)).fetchone():
        return None
    finding = (version["impression"] or version["findings"] or "").strip()[:FINDING_MAX]
    return record(conn, actor, exam, finding, at, ack_minutes, version=version["version"])


def report_while_reading(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any],
                         data: Mapping[str, Any], ack_minutes: float) -> int:
    """The "critical finding" button: the radiologist tells the ward before the report is done
    (not for a cancelled exam: there is nothing to tell)."""
    if exam["status"] == exams.CANCELLED:
        raise Conflict(N_("This exam was cancelled."))
    finding = text(data, "finding", required=True, max_length=FINDING_MAX, multiline=True)
    with transaction(conn):
        return record(conn, actor, exam, finding, clock.to_db(clock.now()), ack_minutes)


def get(conn: sqlite3.Connection, finding_id: int) -> sqlite3.Row:
    row = conn.execute(_SELECT + " WHERE c.id = ?", (finding_id,)).fetchone()
    if row is None:
        raise NotFound(f"critical finding {finding_id}")
    return row


def may_see(viewer: Viewer, finding: Mapping[str, Any]) -> bool:
    return viewer.everything or (bool(viewer.department)
                                 and viewer.department.casefold() == finding["department"].casefold())


def acknowledge(conn: sqlite3.Connection, actor: audit.Actor, user: users.User, finding_id: int,
                data: Mapping[str, Any]) -> None:
    """The ward received the finding. A clinician of its department acknowledges it (a note is
    optional); a radiologist or admin records an acknowledgement taken by telephone, and the
    note must say who took it. Closes the alert."""
    note = text(data, "note", max_length=NOTE_MAX, multiline=True)
    on_behalf = user.has_any(OVERSEERS)
    finding = get(conn, finding_id)
    if not on_behalf and not ("clinician" in user.roles and may_see(Viewer.of(user), finding)):
        with transaction(conn):  # the refusal is recorded, in its own transaction
            audit.record(conn, actor, "critical.acknowledge", f"exam:{finding['accession_number']}",
                         patient_id=finding["patient_id"], outcome="denied", detail={"finding_id": finding_id})
        raise Conflict(N_("Only a clinician of the requesting department acknowledges this finding."))
    if on_behalf and "clinician" not in user.roles and not note:
        raise ValidationError("note", N_("Say who on the ward took the finding (name, by telephone)."))
    with transaction(conn):
        finding = get(conn, finding_id)
        if finding["acknowledged_at"]:
            raise Conflict(N_("This finding was already acknowledged."))
        at = clock.to_db(clock.now())
        conn.execute("UPDATE critical_findings SET acknowledged_by = ?, acknowledged_at = ?, acknowledgement = ?"
                     " WHERE id = ?", (actor.name, at, note, finding_id))
        alerts.clear_alert(conn, (RULE,), _subject(finding_id), at, actor.name)
        minutes = (clock.from_db(at) - clock.from_db(finding["reported_at"])).total_seconds() / 60
        audit.record(conn, actor, "critical.acknowledge", f"exam:{finding['accession_number']}",
                     patient_id=finding["patient_id"],
                     detail={"finding_id": finding_id, "note": note, "minutes": round(minutes, 1),
                             "overdue": at > finding["due_at"]})


def escalate_due(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime | None = None) -> int:
    """Unacknowledged findings past their time: marked escalated (once each, audited), their
    alert marked overdue. Returns how many escalated now."""
    at = clock.to_db(now or clock.now())
    due = conn.execute(_SELECT + " WHERE c.acknowledged_at IS NULL AND c.escalated_at IS NULL AND c.due_at <= ?"
                       " ORDER BY c.due_at LIMIT 500", (at,)).fetchall()
    for finding in due:
        with transaction(conn):
            changed = conn.execute("UPDATE critical_findings SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL"
                                   " AND acknowledged_at IS NULL", (at, finding["id"])).rowcount
            if not changed:
                continue
            alerts.raise_alert(conn, RULE, _subject(finding["id"]), at,
                               {"department": finding["department"], "finding": finding["finding"][:200],
                                "due_at": finding["due_at"], "overdue": True}, exam_ref=finding["exam_ref"],
                               refresh=True)
            audit.record(conn, audit.SYSTEM, "critical.escalate", f"exam:{finding['accession_number']}",
                         patient_id=finding["patient_id"],
                         detail={"finding_id": finding["id"], "department": finding["department"],
                                 "due_at": finding["due_at"]})
        log.warning("critical finding %s for exam %s not acknowledged by %s: escalated", finding["id"],
                    finding["accession_number"], finding["due_at"])
    return len(due)


def poll_seconds(settings: Mapping[str, Any]) -> float:
    """How often escalation is checked: a quarter of the time allowed, between 0.5 and 30 s."""
    return max(0.5, min(30.0, float(settings["CRITICAL_ACK_MINUTES"]) * 60 / 4))


_SELECT = ("SELECT c.*, e.accession_number, e.modality, e.procedure, e.requesting_physician, e.source,"
           " p.patient_id, p.name AS patient_name, p.sex, p.birth_date"
           " FROM critical_findings c JOIN exams e ON e.id = c.exam_ref JOIN patients p ON p.id = e.patient_ref")


def _scope(viewer: Viewer) -> tuple[str, list[Any]]:
    if viewer.everything:
        return "", []
    return " AND c.department = ?", [viewer.department]


def open_findings(conn: sqlite3.Connection, viewer: Viewer, limit: int = PAGE) -> list[sqlite3.Row]:
    """Unacknowledged findings the viewer sees, oldest (most pressing) first."""
    if not viewer.everything and not viewer.department:
        return []
    scope, params = _scope(viewer)
    return conn.execute(_SELECT + f" WHERE c.acknowledged_at IS NULL{scope} ORDER BY c.due_at LIMIT ?",
                        (*params, limit)).fetchall()


def acknowledged_findings(conn: sqlite3.Connection, viewer: Viewer, before: int | None = None,
                          limit: int = PAGE) -> list[sqlite3.Row]:
    """Acknowledged findings the viewer sees, newest first; ``before`` (a finding's id) pages back
    (ids follow the report time, and unlike it never tie)."""
    if not viewer.everything and not viewer.department:
        return []
    scope, params = _scope(viewer)
    page = " AND c.id < ?" if before else ""
    return conn.execute(_SELECT + f" WHERE c.acknowledged_at IS NOT NULL{scope}{page} ORDER BY c.id DESC LIMIT ?",
                        (*params, *([before] if before else []), limit)).fetchall()


@dataclass
class Figures:
    """Critical findings reported in a period, and how fast the wards acknowledged them."""

    reported: int = 0
    acknowledged: int = 0
    late: int = 0  # acknowledged after their time, or not at all and past it
    minutes_to_acknowledge: list[float] = field(default_factory=list)

    @property
    def median_minutes(self) -> float | None:
        return statistics.median(self.minutes_to_acknowledge) if self.minutes_to_acknowledge else None

    @property
    def longest_minutes(self) -> float | None:
        return max(self.minutes_to_acknowledge) if self.minutes_to_acknowledge else None


def figures(conn: sqlite3.Connection, since: str, until: str, now: datetime | None = None) -> Figures:
    """The statistics of the findings reported in [since, until) (UTC text)."""
    found = Figures()
    at = clock.to_db(now or clock.now())
    for reported_at, due_at, acknowledged_at in conn.execute(
            "SELECT reported_at, due_at, acknowledged_at FROM critical_findings WHERE reported_at >= ?"
            " AND reported_at < ?", (since, until)):
        found.reported += 1
        if acknowledged_at:
            found.acknowledged += 1
            found.minutes_to_acknowledge.append(
                (clock.from_db(acknowledged_at) - clock.from_db(reported_at)).total_seconds() / 60)
        found.late += (acknowledged_at or at) > due_at
    return found


def count_for(conn: sqlite3.Connection, viewer: Viewer, now: datetime | None = None) -> int:
    """The navigation bar's count: a department's unacknowledged findings for its clinicians;
    the overdue ones (past their time, escalated or about to be) for radiologists and admins."""
    if viewer.everything:
        return conn.execute("SELECT COUNT(*) FROM critical_findings c WHERE c.acknowledged_at IS NULL"
                            " AND c.due_at <= ?", (clock.to_db(now or clock.now()),)).fetchone()[0]
    if not viewer.department:
        return 0
    return conn.execute("SELECT COUNT(*) FROM critical_findings c WHERE c.acknowledged_at IS NULL"
                        " AND c.department = ?", (viewer.department,)).fetchone()[0]


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute(_SELECT + " WHERE c.exam_ref = ? ORDER BY c.reported_at", (exam_id,)).fetchall()


def is_overdue(finding: Mapping[str, Any], now: datetime | None = None) -> bool:
    return not finding["acknowledged_at"] and finding["due_at"] <= clock.to_db(now or clock.now())


def api_view(finding: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    return {"id": finding["id"], "accession_number": finding["accession_number"],
            "patient_id": finding["patient_id"], "patient_name": finding["patient_name"],
            "department": finding["department"], "requesting_physician": finding["requesting_physician"],
            "procedure": finding["procedure"], "finding": finding["finding"], "report_version": finding["version"],
            "reported_by": finding["reported_by"], "reported_at": finding["reported_at"],
            "due_at": finding["due_at"], "overdue": is_overdue(finding, now), "escalated_at": finding["escalated_at"],
            "acknowledged_by": finding["acknowledged_by"], "acknowledged_at": finding["acknowledged_at"],
            "acknowledgement": finding["acknowledgement"]}

