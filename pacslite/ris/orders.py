"""Orders from the hospital information system (HL7 ORM^O01, OMI^O23): new, changed, cancelled,
discontinued; and the desk's check-in (签到) of an ordered exam.

An order is found again by its placer application (MSH-3) and placer order number (ORC-2).
What an order control code (ORC-1, or ORC-1 with the order status ORC-5) does is the
configuration's ``HL7_ORDER_CONTROL`` table, as in dcm4chee-arc. Each function runs inside the
caller's transaction (the message's, which logs it) and raises ValidationError, NotFound or
Conflict with the reason, so that the message changes nothing and is answered AE.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError
from . import exams, patients, procedures

NEW, CHANGE, CANCEL, DISCONTINUE, IGNORE = "new", "change", "cancel", "discontinue", "ignore"
ACTIONS = (NEW, CHANGE, CANCEL, DISCONTINUE, IGNORE)


class UnsupportedControl(ValueError):
    """An order control code the configuration does not map (answered AR: not supported)."""


@dataclass(frozen=True)
class Order:
    """An order as the message gives it: ``exam`` holds the exam's fields as the desk form names
    them (modality, procedure_code, procedure, source, priority, scheduled_at, requesting
    department and physician, ward, bed, numbers, clinical note); only those the message carried."""

    placer_application: str
    placer_order_number: str
    control: str
    status: str = ""
    exam: Mapping[str, Any] = field(default_factory=dict)
    accession_number: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    action: str
    accession_number: str
    patient_id: str


def action_for(settings: Mapping[str, Any], control: str, status: str = "") -> str:
    """What ``ORC-1`` (with ``ORC-5``) does: the configuration's entry for the pair, else for the
    code alone; UnsupportedControl when neither is there."""
    table = settings["HL7_ORDER_CONTROL"]
    action = table.get(f"{control}:{status}") if status else None
    action = action or table.get(control)
    if action not in ACTIONS:
        raise UnsupportedControl(f"order control {control!r} (status {status!r}) is not supported")
    return action


def find_order(conn: sqlite3.Connection, placer_application: str, placer_order_number: str) -> sqlite3.Row | None:
    return conn.execute(f"{patients.exam_select()} WHERE e.placer_application = ? AND e.placer_order_number = ?",
                        (placer_application, placer_order_number)).fetchone()


def receive(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
            patient_values: Mapping[str, str | None], order: Order) -> Outcome:
    """Apply one order (inside the caller's transaction): a new order places an exam (ordered,
    or scheduled at once when the configuration needs no check-in), a change changes one not yet
    started, a cancellation cancels one without images, a discontinuation cancels one not yet
    started or discontinues one in progress. The patient's demographics in the message update the
    record as an ADT A08 would."""
    if not order.placer_order_number:
        raise ValidationError("placer_order_number", N_("The order has no placer order number (ORC-2)."))
    action = action_for(settings, order.control, order.status)
    if action == IGNORE:
        return Outcome(action, "", str(patient_values.get("patient_id") or ""))
    exam = find_order(conn, order.placer_application, order.placer_order_number)
    if action == NEW:
        if exam is not None:
            raise Conflict(N_("Order %(order)s was placed already (exam %(accession)s)."),
                           order=order.placer_order_number, accession=exam["accession_number"])
        return _place(conn, actor, settings, patient_values, order)
    if exam is None:
        raise NotFound(f"order {order.placer_order_number} of {order.placer_application}")
    _same_patient(exam, patient_values)
    patients.receive_patient(conn, actor, patient_values)
    if action == CHANGE:
        _change(conn, actor, settings, exam, order)
    elif action == CANCEL:
        exams.cancel(conn, actor, exam, order.reason or f"cancelled by the HIS (order {order.placer_order_number})")
    else:
        _discontinue(conn, actor, settings, exam, order)
    return Outcome(action, exam["accession_number"], exam["patient_id"])


def _place(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
           patient_values: Mapping[str, str | None], order: Order) -> Outcome:
    fields = patients.checked_exam(conn, settings, _with_modality(conn, order.exam))
    patient = patients.receive_patient(conn, actor, patient_values)
    fields.update(placer_order_number=order.placer_order_number, placer_application=order.placer_application)
    status = exams.ORDERED if settings["HL7_ORDERS_NEED_CHECK_IN"] else exams.SCHEDULED
    placed = patients.add_exam(conn, actor, settings, patient["id"], patient["patient_id"], fields, status=status,
                               accession=order.accession_number)
    return Outcome(NEW, placed.accession_number, patient["patient_id"])


def _same_patient(exam: Mapping[str, Any], patient_values: Mapping[str, str | None]) -> None:
    sent = patient_values.get("patient_id")
    if sent and sent != exam["patient_id"]:
        raise Conflict(N_("The order belongs to patient %(patient_id)s, not to %(sent)s."),
                       patient_id=exam["patient_id"], sent=sent)


#: An exam's fields as the form names them, from its row: what a change starts from.
_FORM_FIELDS = ("modality", "source", "body_part", "requesting_department", "requesting_physician", "clinical_note",
                "outpatient_number", "inpatient_number", "ward", "bed", "priority", "procedure",
                "procedure_code", "station_ae")


def _change(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], exam: sqlite3.Row,
            order: Order) -> None:
    current = {key: exam[key] or "" for key in _FORM_FIELDS}
    current["scheduled_at"] = clock.from_db(exam["scheduled_at"]).isoformat()
    if "procedure_code" in order.exam and order.exam.get("procedure_code") != exam["procedure_code"]:
        current.pop("body_part")  # the new procedure's body part, unless the order names one
        current.pop("station_ae")
        current.pop("modality")  # and its modality
    fields = patients.checked_exam(conn, settings, _with_modality(conn, {**current, **order.exam}))
    exams.change_order(conn, actor, exam, fields, f"order {order.placer_order_number} changed by the HIS")


def _discontinue(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], exam: sqlite3.Row,
                 order: Order) -> None:
    reason = order.reason or f"discontinued by the HIS (order {order.placer_order_number})"
    state = exams.current_state(conn, exam["id"])
    if state in exams.NOT_STARTED and exam["instance_count"] == 0:
        exams.cancel(conn, actor, exam, reason)
    elif state == exams.IN_PROGRESS:
        exams.discontinued(conn, actor, exam, reason, float(settings["MPPS_GRACE_MINUTES"]))
    else:
        raise Conflict(N_("An exam in state %(status)s cannot be discontinued."), status=state)


def transfer(conn: sqlite3.Connection, actor: audit.Actor, patient_values: Mapping[str, str | None], ward: str,
             bed: str) -> sqlite3.Row:
    """The patient moved to another ward or bed (HL7 ADT^A02), inside the caller's transaction:
    the demographics as an A08 would change them, the exams not yet reported follow."""
    patient = patients.receive_patient(conn, actor, patient_values)
    exams.relocate(conn, actor, patient["id"], ward, bed, "transferred (HIS)")
    return patient


def _with_modality(conn: sqlite3.Connection, exam_data: Mapping[str, Any]) -> dict[str, Any]:
    """The order in the catalogue's terms: a procedure code found there gives the modality when
    the order names none; the HIS's own code for a modality without a catalogue is dropped
    (the procedure's name stays). A modality with a catalogue takes only its codes."""
    data = dict(exam_data)
    code = str(data.get("procedure_code") or "")
    procedure = procedures.find_procedure(conn, code) if code else None
    if procedure is not None and not data.get("modality"):
        data["modality"] = procedure["modality"]
    if code and procedure is None and data.get("modality") and not procedures.catalogue_for(conn, data["modality"]):
        data.pop("procedure_code")
    return data


# ---------------------------------------------------------------- the desk

def ordered_today(conn: sqlite3.Connection, settings: Mapping[str, Any], limit: int = 200) -> list[sqlite3.Row]:
    """Ordered exams waiting for their patient to check in, scheduled today or before (an order
    stays until it is checked in or cancelled), most urgent first."""
    _start, end = clock.local_day_bounds(clock.local_today(settings["TIMEZONE"]), settings["TIMEZONE"])
    return conn.execute(f"{patients.exam_select()} WHERE e.status = ? AND e.scheduled_at < ?"
                        f" ORDER BY {patients.PRIORITY_ORDER}, e.scheduled_at LIMIT ?",
                        (exams.ORDERED, end, limit)).fetchall()


def find_for_check_in(conn: sqlite3.Connection, scanned: str) -> list[sqlite3.Row]:
    """Ordered exams a scanned code names: an order's placer number, an accession number, a
    patient ID or a resident ID card number (the patient's ordered exams)."""
    code = scanned.strip()[:64]
    if not code:
        return []
    return conn.execute(
        f"{patients.exam_select()} WHERE e.status = :ordered AND (e.placer_order_number = :code"
        " OR e.accession_number = :code OR e.patient_ref IN"
        " (SELECT id FROM patients WHERE patient_id = :code OR national_id = :upper))"
        " ORDER BY e.scheduled_at LIMIT 20", {"ordered": exams.ORDERED, "code": code, "upper": code.upper()}).fetchall()


def check_in(conn: sqlite3.Connection, actor: audit.Actor, accession: str) -> sqlite3.Row:
    """The patient of an ordered exam is here: the exam is scheduled and reaches the worklist."""
    with transaction(conn):
        exam = patients.get_exam(conn, accession)
        if exam["status"] != exams.ORDERED:
            raise Conflict(N_("Exam %(accession)s is not waiting for check-in."), accession=accession)
        arrived(conn, actor, exam)
    return patients.get_exam(conn, accession)


def arrived(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any]) -> None:
    """The ordered exam's patient is here (inside the caller's transaction): scheduled, audited."""
    exams.check_in(conn, actor, exam)
    audit.record(conn, actor, "exam.check_in", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"])
