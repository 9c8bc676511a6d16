"""Messages from the hospital information system (HL7 v2), kept as they arrived, applied once.

:func:`apply_once` is the one way an inbound message changes anything: in one transaction it
looks for the same message (sender and MSH-10) accepted before, applies the change, writes the
message's row with its outcome and the acknowledgement, and commits; only then is the
acknowledgement sent. A repeat of an accepted message gets the same acknowledgement and changes
nothing. A message the change refuses (bad field, unknown order, a state that does not allow it)
is rolled back whole and kept with its reason (AE); a failed message may be processed again (the
HIS's repeat, or an admin's *process again*). Who sends and how messages are parsed is the
adapter's (``pacslite/hl7``); what a message does is the domain's (patients, orders).
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import Conflict, FormErrors, NotFound, ValidationError

log = logging.getLogger(__name__)

ACCEPTED, ERROR, REJECTED = "AA", "AE", "AR"
#: HL7 table 0357, the codes pacslite answers with.
REQUIRED_MISSING, DATA_TYPE, TABLE_VALUE, UNSUPPORTED_TYPE, UNSUPPORTED_EVENT = "101", "102", "103", "200", "201"
UNSUPPORTED_VERSION, UNKNOWN_KEY, DUPLICATE_KEY, INTERNAL = "203", "204", "205", "207"
#: Failed messages one page of the admin's list shows.
PAGE = 50


@dataclass(frozen=True)
class Header:
    """What identifies a message: the sender (MSH-3^MSH-4), MSH-10, MSH-9, and the character
    set it was decoded with."""

    sender: str
    control_id: str
    message_type: str
    charset: str = ""


@dataclass(frozen=True)
class Outcome:
    """How a message ended: AA, AE or AR; for AE and AR the reason, its HL7 code (table 0357)
    and the field it is about (a domain field name: the adapter says where it is in the message)."""

    code: str
    error: str = ""
    error_code: str = ""
    field: str = ""
    patient_id: str = ""
    accession_number: str = ""
    repeated: bool = False


@dataclass(frozen=True)
class Applied:
    """What a message changed, for its row: the patient and the exam it was about."""

    patient_id: str = ""
    accession_number: str = ""


class Refused(Exception):
    """The adapter refuses a message it cannot apply (AR: unsupported type, event or version, a
    structure it cannot read; or AE), with the HL7 code and the field."""

    def __init__(self, code: str, error_code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code, self.error_code, self.message, self.field = code, error_code, message, field


def _refusal(exc: Exception) -> Outcome:
    """The outcome of a change that raised: the domain's refusals are AE with their reason;
    anything else is AR (the HIS should send it again later) and logged."""
    if isinstance(exc, Refused):
        return Outcome(exc.code, exc.message, exc.error_code, exc.field)
    if isinstance(exc, FormErrors):
        field, (message, params) = next(iter(exc.problems.items()))
        return Outcome(ERROR, f"{field}: {message % params if params else message}", DATA_TYPE, field)
    if isinstance(exc, ValidationError):
        return Outcome(ERROR, f"{exc.field}: {exc.message % exc.params if exc.params else exc.message}", DATA_TYPE,
                       exc.field)
    if isinstance(exc, NotFound):
        return Outcome(ERROR, f"unknown {exc}", UNKNOWN_KEY)
    if isinstance(exc, Conflict):
        return Outcome(ERROR, str(exc), INTERNAL)
    log.error("an HL7 message could not be applied", exc_info=exc)
    return Outcome(REJECTED, f"internal error ({type(exc).__name__}): send the message again later", INTERNAL)


def apply_once(conn: sqlite3.Connection, header: Header, raw: bytes, address: str,
               change: Callable[[sqlite3.Connection], Applied], answer: Callable[[Outcome], bytes]) -> bytes:
    """Apply a message's ``change`` once and return the acknowledgement ``answer`` makes of its
    outcome, after the change and the message's row are committed together. A repeat of an
    accepted message returns the acknowledgement sent then. A change that raises is rolled back;
    the message is kept with its reason (in a transaction of its own) and answered AE or AR."""
    try:
        with transaction(conn):
            before = _find(conn, header)
            if before is not None and before["outcome"] == ACCEPTED:
                return bytes(before["ack"])
            applied = change(conn)
            outcome = Outcome(ACCEPTED, patient_id=applied.patient_id, accession_number=applied.accession_number)
            ack = answer(outcome)
            _write(conn, header, raw, address, outcome, ack, before)
            return ack
    except Exception as exc:  # noqa: BLE001 - every failure is an answer, never a dropped connection
        outcome = _refusal(exc)
    return record_refused(conn, header, raw, address, outcome, answer)


def record_refused(conn: sqlite3.Connection, header: Header, raw: bytes, address: str, outcome: Outcome,
                   answer: Callable[[Outcome], bytes]) -> bytes:
    """Keep a message that changed nothing, with its reason; its acknowledgement. A message
    that cannot be kept (the database unreachable) is still answered, AR."""
    ack = answer(outcome)
    try:
        with transaction(conn):
            before = _find(conn, header)
            if before is not None and before["outcome"] == ACCEPTED:
                return bytes(before["ack"])  # accepted meanwhile (the same message on another connection)
            _write(conn, header, raw, address, outcome, ack, before)
    except Exception:  # noqa: BLE001
        log.exception("an HL7 message could not be kept")
        if outcome.code == ACCEPTED:
            raise
        return answer(Outcome(REJECTED, "internal error: the message could not be kept; send it again later",
                              INTERNAL))
    return ack


def _find(conn: sqlite3.Connection, header: Header) -> sqlite3.Row | None:
    return conn.execute("SELECT id, outcome, ack FROM hl7_messages WHERE sender = ? AND control_id = ?",
                        (header.sender, header.control_id)).fetchone()


def _write(conn: sqlite3.Connection, header: Header, raw: bytes, address: str, outcome: Outcome, ack: bytes,
           before: sqlite3.Row | None) -> None:
    now = clock.to_db(clock.now())
    values = {"type": header.message_type[:32], "address": address[:64], "charset": header.charset[:32],
              "raw": raw, "outcome": outcome.code, "error": outcome.error[:1000], "code": outcome.error_code,
              "ack": ack, "patient": outcome.patient_id[:64], "accession": outcome.accession_number[:64], "now": now}
    if before is None:
        conn.execute("INSERT INTO hl7_messages (sender, control_id, message_type, address, charset, raw, outcome, error,"
                     " error_code, ack, patient_id, accession_number, received_at, processed_at) VALUES (:sender,"
                     " :control, :type, :address, :charset, :raw, :outcome, :error, :code, :ack, :patient, :accession,"
                     " :now, :now)", {**values, "sender": header.sender[:128], "control": header.control_id[:64]})
    else:
        conn.execute("UPDATE hl7_messages SET message_type = :type, address = :address, charset = :charset, raw = :raw,"
                     " outcome = :outcome, error = :error, error_code = :code, ack = :ack, patient_id = :patient,"
                     " accession_number = :accession, attempts = attempts + 1, processed_at = :now WHERE id = :id",
                     {**values, "id": before["id"]})


# ---------------------------------------------------------------- reading

def failed(conn: sqlite3.Connection, before_id: int | None = None) -> list[sqlite3.Row]:
    """Messages answered AE or AR, newest first, a page at a time (``before_id``: the last one
    of the previous page)."""
    return conn.execute(
        "SELECT id, sender, control_id, message_type, address, outcome, error, error_code, patient_id,"
        " accession_number, attempts, received_at, processed_at FROM hl7_messages"
        " WHERE outcome <> 'AA' AND id < ? ORDER BY id DESC LIMIT ?",
        (before_id if before_id is not None else 1 << 62, PAGE)).fetchall()


def get(conn: sqlite3.Connection, message_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM hl7_messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise NotFound(f"HL7 message {message_id}")
    return row


def audit_reprocess(conn: sqlite3.Connection, actor: audit.Actor, message: Mapping[str, Any], outcome: str) -> None:
    """An admin processed a failed message again (inside the transaction of its change, or of
    its new refusal)."""
    audit.record(conn, actor, "hl7.process_again", f"hl7:{message['id']}", patient_id=str(message["patient_id"] or ""),
                 outcome="success" if outcome == ACCEPTED else "failure",
                 detail={"sender": message["sender"], "control_id": message["control_id"], "outcome": outcome})
