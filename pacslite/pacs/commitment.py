"""Storage Commitment, Push Model (PS3.4 Annex J; IHE RAD-10): a modality asks whether pacslite
has taken responsibility for the images it sent, before it deletes its own copies.

pacslite commits an instance only when it is indexed, which happens only after its file was
fsynced (:func:`pacslite.pacs.filing.ingest`), whether it is online or released to a verified
offline volume, and neither rejected nor found missing or changed by the scrub. The answer
(an N-EVENT-REPORT) lists those as successful and the others as failed, with the reason:
0x0112 no such object instance, 0x0119 the SOP class differs from the one stored, 0x0110 not
safely kept. The request and its answer are kept in ``commitments`` until the answer was
delivered: on the requesting association while it is open, otherwise on a new association to
the AE's configured host and port, tried again (COMMITMENT_RETRY_FIRST_SECONDS, doubling) for
COMMITMENT_RETRY_HOURS, then given up with the alert ``commitment_failed``. Every request and
every delivery is audited.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from datetime import timedelta
from typing import Any, Callable, Mapping

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..core import alerts, audit, background, clock, uids
from ..ris import aes
from ..core.db import claim_due, transaction

log = logging.getLogger(__name__)

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
#: PS3.4 J.3.2 / PS3.7 statuses and failure reasons.
NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT, PROCESSING_FAILURE = 0x0112, 0x0119, 0x0110
NO_SUCH_ARGUMENT, INVALID_ARGUMENT, RESOURCE_LIMITATION = 0x0114, 0x0115, 0x0213
#: Event Type IDs of the report: every instance committed, or some failed.
ALL_COMMITTED, SOME_FAILED = 1, 2
#: The most instances one request may name.
MAX_REFERENCES = 20000
BATCH = 5
FAILED_RULE = alerts.register("commitment_failed")


class CommitmentError(Exception):
    """The request is refused with ``status`` (the message says why); nothing is kept."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def references(info: Dataset) -> tuple[str, list[tuple[str, str]]]:
    """The Transaction UID and the (SOP class, SOP instance) pairs of an N-ACTION's Action Information."""
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not transaction_uid:
        raise CommitmentError(NO_SUCH_ARGUMENT, "no Transaction UID")
    if not uids.is_uid(transaction_uid):
        raise CommitmentError(INVALID_ARGUMENT, "the Transaction UID is not a UID")
    sequence = info.get("ReferencedSOPSequence")
    if not sequence:
        raise CommitmentError(NO_SUCH_ARGUMENT, "no Referenced SOP Sequence")
    if len(sequence) > MAX_REFERENCES:
        raise CommitmentError(RESOURCE_LIMITATION, f"more than {MAX_REFERENCES} instances in one request")
    pairs = []
    for item in sequence:
        pair = (str(item.get("ReferencedSOPClassUID", "") or ""), str(item.get("ReferencedSOPInstanceUID", "") or ""))
        if not (uids.is_uid(pair[0]) and uids.is_uid(pair[1])):
            raise CommitmentError(INVALID_ARGUMENT, "a referenced instance without valid UIDs")
        pairs.append(pair)
    return transaction_uid, pairs


def _verdict(conn: sqlite3.Connection, sop_class: str, sop_instance: str) -> int:
    """0 (committed) or the failure reason for one referenced instance."""
    row = conn.execute(
        "SELECT i.id, i.sop_class_uid, s.rejected_at FROM instances i JOIN series se ON se.id = i.series_ref"
        " JOIN studies s ON s.id = se.study_ref WHERE i.sop_instance_uid = ?", (sop_instance,)).fetchone()
    if row is None:
        return NO_SUCH_INSTANCE
    if row["sop_class_uid"] != sop_class:
        return CLASS_INSTANCE_CONFLICT
    if row["rejected_at"] or any(alerts.live_state(conn, rule, f"instance:{row['id']}") == alerts.OPEN
                                 for rule in ("file_missing", "file_changed")):
        return PROCESSING_FAILURE
    return 0


def request(conn: sqlite3.Connection, actor: audit.Actor, calling_ae: str, transaction_uid: str,
            pairs: list[tuple[str, str]], on_association: bool) -> sqlite3.Row:
    """Decide, keep and audit a commitment request; its report waits to be delivered (marked
    as being sent when the requesting association will carry it: ``on_association``)."""
    now = clock.to_db(clock.now())
    with transaction(conn):
        committed, failed = [], []
        for sop_class, sop_instance in pairs:
            reason = _verdict(conn, sop_class, sop_instance)
            if reason:
                failed.append([sop_class, sop_instance, reason])
            else:
                committed.append([sop_class, sop_instance])
        commitment_id = conn.execute(
            "INSERT INTO commitments (transaction_uid, calling_ae, address, requested, committed, result, state,"
            " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (transaction_uid, calling_ae, actor.address, len(pairs), len(committed),
             json.dumps({"committed": committed, "failed": failed}), SENDING if on_association else PENDING,
             now, now, now)).lastrowid
        audit.record(conn, actor, "commitment.request", f"commitment:{transaction_uid}",
                     detail={"requested": len(pairs), "committed": len(committed),
                             "failed": [f[1] for f in failed][:50],
                             "reasons": sorted({f"0x{f[2]:04X}" for f in failed})})
    log.info("storage commitment %s from %s: %d of %d committed", transaction_uid, calling_ae, len(committed),
             len(pairs))
    return get(conn, commitment_id)


def get(conn: sqlite3.Connection, commitment_id: int) -> sqlite3.Row:
    return conn.execute("SELECT * FROM commitments WHERE id = ?", (commitment_id,)).fetchone()


def report(commitment: Mapping[str, Any]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information (PS3.4 J.3.3)."""
    result = json.loads(commitment["result"])
    info = Dataset()
    info.TransactionUID = commitment["transaction_uid"]
    if result["committed"]:
        info.ReferencedSOPSequence = Sequence([_reference(c, i) for c, i in result["committed"]])
    if result["failed"]:
        failed = []
        for sop_class, sop_instance, reason in result["failed"]:
            item = _reference(sop_class, sop_instance)
            item.FailureReason = reason
            failed.append(item)
        info.FailedSOPSequence = Sequence(failed)
    return (SOME_FAILED if result["failed"] else ALL_COMMITTED), info


def _reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


# ---------------------------------------------------------------- delivery

def delivered(conn: sqlite3.Connection, commitment: Mapping[str, Any], on: str) -> None:
    """The requesting AE acknowledged the report (``on``: 'same' or 'new' association)."""
    now = clock.to_db(clock.now())
    with transaction(conn):
        conn.execute("UPDATE commitments SET state = ?, attempts = attempts + 1, delivered_on = ?, last_error = '',"
                     " updated_at = ? WHERE id = ?", (DELIVERED, on, now, commitment["id"]))
        alerts.clear_alert(conn, (FAILED_RULE,), f"commitment:{commitment['id']}", now, "commitment")
        audit.record(conn, audit.Actor(f"ae:{commitment['calling_ae']}", commitment["address"]), "commitment.report",
                     f"commitment:{commitment['transaction_uid']}",
                     detail={"association": on, "committed": commitment["committed"],
                             "failed": commitment["requested"] - commitment["committed"]})


def not_delivered(conn: sqlite3.Connection, settings: Mapping[str, Any], commitment: Mapping[str, Any],
                  error: str, counts: bool = True) -> str:
    """An attempt failed: tried again after a pause, or, after COMMITMENT_RETRY_HOURS, given up
    with the alert. ``counts`` False: the requesting association simply ended first (the new
    association is tried at once). The state it is left in."""
    now = clock.now()
    attempts = commitment["attempts"] + int(counts)
    with transaction(conn):
        if counts and now - clock.from_db(commitment["created_at"]) >= timedelta(
                hours=float(settings["COMMITMENT_RETRY_HOURS"])):
            conn.execute("UPDATE commitments SET state = ?, attempts = ?, last_error = ?, updated_at = ? WHERE id = ?",
                         (FAILED, attempts, error[:500], clock.to_db(now), commitment["id"]))
            alerts.raise_alert(conn, FAILED_RULE, f"commitment:{commitment['id']}", clock.to_db(now),
                               {"calling_ae": commitment["calling_ae"], "transaction_uid": commitment["transaction_uid"],
                                "error": error[:500], "attempts": attempts})
            audit.record(conn, audit.SYSTEM, "commitment.report", f"commitment:{commitment['transaction_uid']}",
                         outcome="failure", detail={"calling_ae": commitment["calling_ae"], "error": error[:500],
                                                    "attempts": attempts})
            return FAILED
        pause = background.retry_pause(float(settings["COMMITMENT_RETRY_FIRST_SECONDS"]), attempts) if counts else 0
        conn.execute("UPDATE commitments SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?,"
                     " updated_at = ? WHERE id = ?",
                     (PENDING, attempts, error[:500], clock.to_db(now + timedelta(seconds=pause)), clock.to_db(now),
                      commitment["id"]))
    return PENDING


def recover(conn: sqlite3.Connection) -> int:
    """When this process takes the reports over (at start-up, or from a process that died):
    reports that were being sent wait again."""
    with transaction(conn):
        return conn.execute("UPDATE commitments SET state = ?, next_attempt_at = ? WHERE state = ?",
                            (PENDING, clock.to_db(clock.now()), SENDING)).rowcount


def _claim(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    now = clock.to_db(clock.now())
    return claim_due(conn, "SELECT * FROM commitments WHERE state = ? AND next_attempt_at <= ?"
                     " ORDER BY next_attempt_at LIMIT ?", (PENDING, now, BATCH),
                     lambda due: conn.executemany("UPDATE commitments SET state = ?, updated_at = ? WHERE id = ?",
                                                  [(SENDING, now, c["id"]) for c in due]))


#: Sends one report on a new association: (settings, destination AE, event type, event
#: information) → '' when the AE acknowledged it with success, else why not.
Send = Callable[[Mapping[str, Any], Mapping[str, Any], int, Dataset], str]


def run_due(conn: sqlite3.Connection, settings: Mapping[str, Any], send: Send) -> int:
    """Deliver the reports that are due on new associations; how many were attempted."""
    due = _claim(conn)
    for commitment in due:
        destination = aes.find_ae(conn, commitment["calling_ae"])
        if destination is None or not destination["host"]:
            error = f"{commitment['calling_ae']} has no configured host and port to send the report to"
        else:
            event_type, info = report(commitment)
            error = send(settings, destination, event_type, info)
        if error:
            state = not_delivered(conn, settings, commitment, error)
            log.warning("storage commitment report %s to %s not delivered (%s): %s", commitment["transaction_uid"],
                        commitment["calling_ae"], state, error)
        else:
            delivered(conn, commitment, "new")
    return len(due)


def recent(conn: sqlite3.Connection, limit: int = 100) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM commitments ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
