"""What pacslite tells the hospital information system: the status of its orders (状态回写:
checked in, in progress, performed, reported, cancelled) and the signed reports (ORU^R01).

Each is queued in the transaction of its cause (the exam's state change, the signature), so a
committed change is never left untold. :func:`run_due` sends the queue in order, one message at
a time (the HIS must not hear "final" before "in progress"): the HL7 adapter builds the message
at the first attempt and delivers it over MLLP; an answer other than AA (or no answer) is tried
again later with a growing pause, until the HIS accepts it; AE (the HIS refuses its content) ends
it as failed. The alert ``his_unreachable`` opens while the head of the queue has waited
HL7_ALERT_MINUTES and closes once it goes.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping

from ..core import alerts, background, clock
from ..core.db import transaction

log = logging.getLogger(__name__)

HIS_UNREACHABLE = alerts.register("his_unreachable")
QUEUED, SENT, FAILED = "queued", "sent", "failed"
STATUS, RESULT = "status", "result"
PRELIMINARY_RESULT, FINAL_RESULT, CORRECTED_RESULT = "P", "F", "C"
#: Rows one page of the admin's list shows.
PAGE = 100


def _order_of(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row:
    return conn.execute("SELECT id, placer_order_number FROM exams WHERE id = ?", (exam_id,)).fetchone()


def _add(conn: sqlite3.Connection, exam_id: int, kind: str, *, status: str = "", version_id: int | None = None,
         result_status: str = "") -> None:
    now = clock.to_db(clock.now())
    conn.execute("INSERT INTO hl7_outbox (exam_ref, kind, status, report_version_ref, result_status, state,"
                 " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (exam_id, kind, status, version_id, result_status, QUEUED, now, now))


def status_changed(conn: sqlite3.Connection, exam_id: int, new_state: str) -> None:
    """An exam's state changed (inside the transaction of the change): an HIS order's status is
    queued for the HIS. Exams registered at the desk are not the HIS's: nothing is queued."""
    if _order_of(conn, exam_id)["placer_order_number"] is not None:
        _add(conn, exam_id, STATUS, status=new_state)


def report_signed(conn: sqlite3.Connection, settings: Mapping[str, Any], exam_id: int, version_id: int,
                  final: bool, amendment: bool) -> None:
    """A report was signed (inside the transaction of the signature): the result is queued for
    the HIS, corrected (C) for an amendment, preliminary (P) only where configured; for HIS
    orders, or every exam with HL7_RESULTS_FOR_ALL."""
    if not final and not settings["HL7_SEND_PRELIMINARY"]:
        return
    if _order_of(conn, exam_id)["placer_order_number"] is None and not settings["HL7_RESULTS_FOR_ALL"]:
        return
    result = CORRECTED_RESULT if amendment else (FINAL_RESULT if final else PRELIMINARY_RESULT)
    _add(conn, exam_id, RESULT, version_id=version_id, result_status=result)


# ---------------------------------------------------------------- sending

@dataclass(frozen=True)
class Built:
    control_id: str
    message: bytes


@dataclass(frozen=True)
class Answer:
    """What the HIS said: its acknowledgement code (AA, AE, AR, CA, CE, CR) or "" for none, and why."""

    code: str
    error: str = ""
    ack: bytes = b""


Build = Callable[[sqlite3.Connection, Mapping[str, Any], sqlite3.Row], Built]
Deliver = Callable[[Mapping[str, Any], bytes], Answer]


def configured(settings: Mapping[str, Any]) -> bool:
    destination = settings["HL7_DESTINATION"]
    return bool(destination and destination.get("host") and destination.get("port"))


#: Messages one call of :func:`run_due` sends at most (then the thread looks again at once).
BURST = 200


def run_due(conn: sqlite3.Connection, settings: Mapping[str, Any], build: Build, deliver: Deliver) -> int:
    """Send the queue's messages in order while the HIS accepts them (at most BURST); how many
    were accepted. One not accepted waits for its next attempt, and the queue behind it too."""
    if not configured(settings):
        return 0
    sent = 0
    while sent < BURST:
        head = conn.execute("SELECT * FROM hl7_outbox WHERE state = ? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
        if head is None or head["next_attempt_at"] > clock.to_db(clock.now()):
            break
        if head["message"] is None:
            built = build(conn, settings, head)
            with transaction(conn):
                conn.execute("UPDATE hl7_outbox SET control_id = ?, message = ? WHERE id = ?",
                             (built.control_id, built.message, head["id"]))
            message = built.message
        else:
            message = bytes(head["message"])
        if not _record(conn, settings, head, deliver(settings, message)):
            break
        sent += 1
    return sent


def _record(conn: sqlite3.Connection, settings: Mapping[str, Any], head: sqlite3.Row, answer: Answer) -> bool:
    """Record an attempt; True when the message is done with (accepted, or refused for good)."""
    moment = clock.now()
    now = clock.to_db(moment)
    attempts = head["attempts"] + 1
    with transaction(conn):
        if answer.code in ("AA", "CA"):
            conn.execute("UPDATE hl7_outbox SET state = ?, attempts = ?, ack = ?, last_error = '', sent_at = ?"
                         " WHERE id = ?", (SENT, attempts, answer.ack, now, head["id"]))
            alerts.clear_alert(conn, (HIS_UNREACHABLE,), "his", now, "hl7")
            return True
        error = f"{answer.code or 'no answer'}: {answer.error}"[:500]
        if answer.code in ("AE", "CE"):  # the HIS refuses the content: sending it again changes nothing
            conn.execute("UPDATE hl7_outbox SET state = ?, attempts = ?, ack = ?, last_error = ? WHERE id = ?",
                         (FAILED, attempts, answer.ack, error, head["id"]))
            alerts.raise_alert(conn, HIS_UNREACHABLE, "his", now, {"error": error, "message": head["id"]},
                               exam_ref=head["exam_ref"], refresh=True)
            log.warning("HL7: the HIS refused message %s: %s", head["id"], error)
            return True
        pause = background.retry_pause(float(settings["HL7_RETRY_FIRST_SECONDS"]), attempts)
        conn.execute("UPDATE hl7_outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE id = ?",
                     (attempts, error, clock.to_db(moment + timedelta(seconds=pause)), head["id"]))
        waited = moment - clock.from_db(head["created_at"])
        if waited >= timedelta(minutes=float(settings["HL7_ALERT_MINUTES"])):
            alerts.raise_alert(conn, HIS_UNREACHABLE, "his", now,
                               {"error": error, "waiting_since": head["created_at"], "attempts": attempts},
                               refresh=True)
    log.warning("HL7: message %s not delivered (%s); again in %.0f s", head["id"], error, pause)
    return False


def poll_seconds(settings: Mapping[str, Any]) -> float:
    return float(settings["HL7_POLL_SECONDS"])


# ---------------------------------------------------------------- reading

def recent(conn: sqlite3.Connection, state: str = "", before_id: int | None = None) -> list[sqlite3.Row]:
    """The queue, newest first, a page at a time; ``state`` narrows it."""
    clauses, params = ["o.id < ?"], [before_id if before_id is not None else 1 << 62]
    if state:
        clauses.append("o.state = ?")
        params.append(state)
    return conn.execute(
        "SELECT o.id, o.kind, o.status, o.result_status, o.state, o.attempts, o.next_attempt_at, o.last_error,"
        " o.control_id, o.created_at, o.sent_at, e.accession_number FROM hl7_outbox o JOIN exams e ON e.id = o.exam_ref"
        f" WHERE {' AND '.join(clauses)} ORDER BY o.id DESC LIMIT ?", (*params, PAGE)).fetchall()


def waiting(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM hl7_outbox WHERE state = ?", (QUEUED,)).fetchone()[0]
