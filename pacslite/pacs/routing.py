"""Routing: forward rules, "send to…", and the one persistent outbound queue both use.

A forward rule sends every study filed from a calling AE and/or of a modality to a destination
AE (every CT to the 3D workstation). "Send to…" on the exam page queues an exam's studies for a
destination by hand. Either way a study waits in ``outbound_queue`` (one row per study and
destination), is sent by the queue's thread once no image arrived for ``FORWARD_DELAY_SECONDS``
(a CT arrives image by image), and on failure is retried with a growing pause (from
``FORWARD_RETRY_FIRST_SECONDS``, doubling, at most an hour) for ``FORWARD_RETRY_HOURS``; then it
is marked failed and the ``forward_failed`` alert is raised. The queue is in the database: a
restart resumes it (what was being sent is sent again). Images that arrive after their study was
sent queue it again; the whole study goes again (a receiver keeps duplicates once).

The sending itself (a DICOM association) is the DICOM layer's: the thread is given the function.
"""
from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from typing import Any, Callable, Mapping

from pydicom.dataset import Dataset

from ..core import alerts, audit, background, clock
from ..ris import aes
from . import index, outbound, qr
from ..core.background import BackgroundThread
from ..core.db import claim_due, transaction
from ..core.validation import AE_TITLE_PATTERN, N_, Conflict, NotFound, ValidationError, matches, text

log = logging.getLogger(__name__)

QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
BATCH = 5
FORWARD_FAILED = alerts.register("forward_failed")


# ---------------------------------------------------------------- rules

def clean_rule(conn: sqlite3.Connection, data: Mapping[str, Any]) -> dict[str, str]:
    calling = text(data, "calling_ae", max_length=16)
    if calling:
        matches(calling, "calling_ae", AE_TITLE_PATTERN, N_("Up to 16 letters, digits, spaces and punctuation; no backslash."))
    modality = text(data, "modality", max_length=16).upper()
    if modality and not modality.replace("_", "").isalnum():
        raise ValidationError("modality", N_("A DICOM modality such as CT, MR or DX."))
    destination = text(data, "destination_ae", required=True, max_length=16)
    ae = aes.find_ae(conn, destination)
    if ae is None or not ae["host"]:
        raise ValidationError("destination_ae", N_("A destination must be a configured AE with a host and port."))
    return {"calling_ae": calling, "modality": modality, "destination_ae": destination}


def add_rule(conn: sqlite3.Connection, actor: audit.Actor, data: Mapping[str, Any]) -> int:
    with transaction(conn):
        fields = clean_rule(conn, data)
        if conn.execute("SELECT 1 FROM forward_rules WHERE calling_ae = :calling_ae AND modality = :modality"
                        " AND destination_ae = :destination_ae", fields).fetchone():
            raise ValidationError("destination_ae", N_("This rule exists already."))
        rule_id = conn.execute("INSERT INTO forward_rules (calling_ae, modality, destination_ae, created_at, created_by)"
                               " VALUES (:calling_ae, :modality, :destination_ae, :at, :by)",
                               {**fields, "at": clock.to_db(clock.now()), "by": actor.name}).lastrowid
        audit.record(conn, actor, "forward.rule_add", f"rule:{rule_id}", detail=fields)
    return int(rule_id)


def remove_rule(conn: sqlite3.Connection, actor: audit.Actor, rule_id: int) -> None:
    with transaction(conn):
        rule = conn.execute("SELECT * FROM forward_rules WHERE id = ?", (rule_id,)).fetchone()
        if rule is None:
            raise NotFound(f"rule {rule_id}")
        conn.execute("DELETE FROM forward_rules WHERE id = ?", (rule_id,))
        audit.record(conn, actor, "forward.rule_remove", f"rule:{rule_id}",
                     detail={k: rule[k] for k in ("calling_ae", "modality", "destination_ae")})


def list_rules(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM forward_rules ORDER BY destination_ae, calling_ae, modality").fetchall()


# ---------------------------------------------------------------- the queue

def _enqueue(conn: sqlite3.Connection, study_ref: int, destination: str, reason: str, due: str, now: str) -> bool:
    """Queue a study for a destination, or put off its waiting row; True if a row was added."""
    waiting = conn.execute("SELECT id FROM outbound_queue WHERE study_ref = ? AND destination_ae = ? AND state = ?",
                           (study_ref, destination, QUEUED)).fetchone()
    if waiting is not None:
        conn.execute("UPDATE outbound_queue SET next_attempt_at = MAX(next_attempt_at, ?), updated_at = ? WHERE id = ?",
                     (due, now, waiting["id"]))
        return False
    if conn.execute("SELECT 1 FROM outbound_queue WHERE study_ref = ? AND destination_ae = ? AND state = ?",
                    (study_ref, destination, SENDING)).fetchone():
        return False  # being sent: _finish queues it again for the images that arrived meanwhile
    conn.execute("INSERT INTO outbound_queue (study_ref, destination_ae, reason, state, next_attempt_at, created_at,"
                 " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", (study_ref, destination, reason, QUEUED, due, now, now))
    return True


def on_filed(conn: sqlite3.Connection, study_ref: int, calling_ae: str, modality: str, at: str) -> None:
    """An image was filed (inside filing's transaction): queue its study where a rule says. It
    goes once no image arrived for FORWARD_DELAY_SECONDS (the queue's thread waits for that)."""
    rules = conn.execute("SELECT id, destination_ae FROM forward_rules WHERE (calling_ae = '' OR calling_ae = ?)"
                         " AND (modality = '' OR modality = ?)", (calling_ae, modality)).fetchall()
    for rule in rules:
        _enqueue(conn, study_ref, rule["destination_ae"], f"rule:{rule['id']}", at, at)


def send_exam(conn: sqlite3.Connection, actor: audit.Actor, accession: str, destination: str) -> int:
    """"Send to…": queue the exam's filed studies for ``destination``; how many were queued."""
    with transaction(conn):
        ae = aes.find_ae(conn, destination)
        if ae is None or not ae["host"]:
            raise ValidationError("destination_ae", N_("A destination must be a configured AE with a host and port."))
        studies = conn.execute(f"SELECT s.id, s.study_instance_uid, e.id AS exam_id, p.patient_id FROM studies s"
                               f" JOIN exams e ON e.id = s.exam_ref JOIN patients p ON p.id = e.patient_ref"
                               f" WHERE e.accession_number = ? AND {index.VISIBLE}", (accession,)).fetchall()
        if not studies:
            raise Conflict(N_("This exam has no images to send."))
        now = clock.to_db(clock.now())
        queued = sum(_enqueue(conn, s["id"], destination, f"user:{actor.name}", now, now) for s in studies)
        audit.record(conn, actor, "forward.send", f"exam:{accession}", patient_id=studies[0]["patient_id"],
                     detail={"destination": destination, "studies": [s["study_instance_uid"] for s in studies]})
    return queued


def recover(conn: sqlite3.Connection) -> int:
    """When this process takes the sending over (at start-up, or from a process that died):
    what was being sent is queued again."""
    with transaction(conn):
        return conn.execute("UPDATE outbound_queue SET state = ?, next_attempt_at = ? WHERE state = ?",
                            (QUEUED, clock.to_db(clock.now()), SENDING)).rowcount


def _claim(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> list[sqlite3.Row]:
    """The rows due now whose study had no new image for FORWARD_DELAY_SECONDS, marked sending."""
    moment = clock.now()
    now = clock.to_db(moment)
    quiet = clock.to_db(moment - timedelta(seconds=float(settings["FORWARD_DELAY_SECONDS"])))
    return claim_due(conn, "SELECT q.*, s.last_received_at AS study_received_at, s.instance_count AS study_instances"
                     " FROM outbound_queue q"
                     " JOIN studies s ON s.id = q.study_ref"
                     " WHERE q.state = ? AND q.next_attempt_at <= ? AND s.last_received_at <= ?"
                     " ORDER BY q.next_attempt_at LIMIT ?", (QUEUED, now, quiet, BATCH),
                     lambda due: conn.executemany("UPDATE outbound_queue SET state = ?, updated_at = ? WHERE id = ?",
                                                  [(SENDING, now, item["id"]) for item in due]))


def _images(conn: sqlite3.Connection, study_ref: int) -> list[sqlite3.Row]:
    """The study's images as a retrieve sees them (filed ones only)."""
    study = conn.execute(f"SELECT s.study_instance_uid FROM studies s WHERE s.id = ? AND {index.VISIBLE}",
                         (study_ref,)).fetchone()
    if study is None:
        return []
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study["study_instance_uid"]
    return qr.retrievable(conn, identifier, qr.STUDY_ROOT)


def _finish(conn: sqlite3.Connection, settings: Mapping[str, Any], item: sqlite3.Row,
            transfer: outbound.Transfer | None, error: str) -> str:
    """Record an attempt: sent, queued again after a pause, or failed for good (with the alert)."""
    now = clock.now()
    subject = f"forward:{item['study_ref']}:{item['destination_ae']}"
    with transaction(conn):
        if transfer is not None and not error:
            conn.execute("UPDATE outbound_queue SET state = ?, attempts = attempts + 1, images_sent = ?, last_error = '',"
                         " updated_at = ? WHERE id = ?", (SENT, transfer.completed + transfer.warning,
                                                          clock.to_db(now), item["id"]))
            alerts.clear_alert(conn, (FORWARD_FAILED,), subject, clock.to_db(now), "outbound")
            _queue_what_arrived_meanwhile(conn, item, clock.to_db(now))
            return SENT
        attempts = item["attempts"] + 1
        if now - clock.from_db(item["created_at"]) >= timedelta(hours=float(settings["FORWARD_RETRY_HOURS"])):
            conn.execute("UPDATE outbound_queue SET state = ?, attempts = ?, last_error = ?, updated_at = ? WHERE id = ?",
                         (FAILED, attempts, error[:500], clock.to_db(now), item["id"]))
            alerts.raise_alert(conn, FORWARD_FAILED, subject, clock.to_db(now),
                               {"destination": item["destination_ae"], "error": error[:500], "attempts": attempts},
                               study_ref=item["study_ref"])
            return FAILED
        pause = background.retry_pause(float(settings["FORWARD_RETRY_FIRST_SECONDS"]), attempts)
        conn.execute("UPDATE outbound_queue SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?,"
                     " updated_at = ? WHERE id = ?", (QUEUED, attempts, error[:500],
                                                      clock.to_db(now + timedelta(seconds=pause)), clock.to_db(now),
                                                      item["id"]))
        return QUEUED


def _queue_what_arrived_meanwhile(conn: sqlite3.Connection, item: sqlite3.Row, now: str) -> None:
    """Images filed while the study was being sent found it ``sending`` and queued nothing: queue
    it again (the whole study goes; a receiver keeps duplicates once)."""
    study = conn.execute("SELECT last_received_at, instance_count FROM studies WHERE id = ?",
                         (item["study_ref"],)).fetchone()
    if study is not None and (study["last_received_at"], study["instance_count"]) != (item["study_received_at"],
                                                                                      item["study_instances"]):
        _enqueue(conn, item["study_ref"], item["destination_ae"], item["reason"], now, now)


Send = Callable[[Mapping[str, Any], Mapping[str, Any], list[sqlite3.Row], str], outbound.Transfer]


def run_due(conn: sqlite3.Connection, settings: Mapping[str, Any], send: Send) -> int:
    """Send what is due (a few studies); how many were attempted."""
    items = _claim(conn, settings)
    for item in items:
        destination = aes.find_ae(conn, item["destination_ae"])
        rows = _images(conn, item["study_ref"])
        if destination is None or not destination["host"]:
            transfer, error = None, f"{item['destination_ae']} is no longer a configured destination"
        elif not rows:
            transfer, error = outbound.Transfer(remaining=0), ""
        else:
            how = "forward" if item["reason"].startswith("rule:") else "send"
            transfer = send(settings, destination, rows, how)
            error = "" if transfer.completed + transfer.warning == len(rows) else (
                f"{transfer.failed} of {len(rows)} images not sent (see the log)")
            outbound.record(conn, audit.Actor(item["reason"].replace("rule:", "forward-rule:"), ""),
                            item["destination_ae"], transfer, how)
        state = _finish(conn, settings, item, transfer, error)
        log.log(logging.WARNING if state != SENT else logging.INFO, "outbound: study %s to %s: %s%s",
                item["study_ref"], item["destination_ae"], state, f" ({error})" if error else "")
    return len(items)


class Sender(BackgroundThread):
    """The outbound queue's thread: sends what is due, every few seconds."""

    name = "outbound"

    def __init__(self, settings: Mapping[str, Any], send: Send) -> None:
        super().__init__(settings)
        self.send = send

    def on_duty(self, conn: sqlite3.Connection) -> None:
        resent = recover(conn)
        if resent:
            log.warning("%d studies that were being sent are queued again", resent)

    def tick(self, conn: sqlite3.Connection) -> float:
        return 0 if run_due(conn, self.settings, self.send) else float(self.settings["FORWARD_POLL_SECONDS"])


# ---------------------------------------------------------------- what the pages show

def queue_of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT q.*, s.study_instance_uid FROM outbound_queue q JOIN studies s ON s.id = q.study_ref"
                        " WHERE s.exam_ref = ? ORDER BY q.id DESC LIMIT 50", (exam_id,)).fetchall()


def queue(conn: sqlite3.Connection, state: str = "", limit: int = 100, before_id: int | None = None) -> list[sqlite3.Row]:
    """The outbound queue, newest first, filtered by state, paged by id."""
    clauses, params = ["1 = 1"], []
    if state:
        clauses.append("q.state = ?")
        params.append(state)
    if before_id:
        clauses.append("q.id < ?")
        params.append(before_id)
    return conn.execute(f"SELECT q.*, s.study_instance_uid, e.accession_number, p.patient_id FROM outbound_queue q"
                        f" JOIN studies s ON s.id = q.study_ref LEFT JOIN exams e ON e.id = s.exam_ref"
                        f" LEFT JOIN patients p ON p.id = e.patient_ref WHERE {' AND '.join(clauses)}"
                        f" ORDER BY q.id DESC LIMIT ?", (*params, limit)).fetchall()


def destinations(conn: sqlite3.Connection) -> list[str]:
    """AEs a study may be sent to: configured ones with a host."""
    return [r[0] for r in conn.execute("SELECT ae_title FROM application_entities WHERE host != '' ORDER BY ae_title")]
