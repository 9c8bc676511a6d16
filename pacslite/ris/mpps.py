"""Modality Performed Procedure Steps (PS3.4 F.7; IHE Scheduled Workflow RAD-6 and RAD-7).

A modality creates a step IN PROGRESS (N-CREATE) naming the exam it picked from the worklist in
its Scheduled Step Attributes Sequence, and ends it COMPLETED or DISCONTINUED (N-SET) with the
series and instances it acquired. The exam follows (:mod:`pacslite.ris.exams`), and what the
modality listed is what the expected-image check (:mod:`pacslite.ris.transmission`) waits for.

A step that names no exam pacslite knows (an unscheduled procedure, a typed accession number),
or whose patient ID differs from the exam's, is kept unlinked and listed for the technologists,
who link it by hand.

Refusals carry the DIMSE status PS3.4 F.7.2 gives them and a sentence for the log and the
modality's Error Comment; they change nothing.
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Any, Mapping

from pydicom.dataset import Dataset

from ..core import audit, clock, names, uids
from . import exams, patients, transmission
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text

log = logging.getLogger(__name__)

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
STATES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
#: PS3.7 C / PS3.4 F.7.2 statuses.
PROCESSING_FAILURE = 0x0110  # for an N-SET with Error ID 0xA710: the step may no longer be updated
NO_LONGER_UPDATABLE = 0xA710
INVALID_ATTRIBUTE_VALUE = 0x0106
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
INVALID_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
#: The most instances one step may list (a hostile peer cannot fill the database with one N-SET).
MAX_LISTED = 20000


class MppsError(Exception):
    """Refused with ``status``; the message says why."""

    def __init__(self, status: int, reason: str, error_id: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error_id = error_id


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else names.printable(str(value))[:64]


def get(conn: sqlite3.Connection, mpps_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM mpps WHERE id = ?", (mpps_id,)).fetchone()
    if row is None:
        raise NotFound(f"MPPS {mpps_id}")
    return row


def find(conn: sqlite3.Connection, sop_instance_uid: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()


# ---------------------------------------------------------------- which exam

def _scheduled_step(ds: Dataset) -> Dataset:
    sequence = ds.get("ScheduledStepAttributesSequence")
    if sequence is None:
        raise MppsError(MISSING_ATTRIBUTE, "no Scheduled Step Attributes Sequence")
    return sequence[0] if len(sequence) else Dataset()


def _exam_of(conn: sqlite3.Connection, step: Mapping[str, str]) -> sqlite3.Row | None:
    """The exam the step names by accession number, study UID or requested procedure ID (which
    pacslite's worklist sets to the accession number), if its patient ID agrees."""
    exam = (patients.find_exam(conn, accession=step["accession_number"])
            or patients.find_exam(conn, study_uid=step["study_instance_uid"])
            or patients.find_exam(conn, accession=step["requested_procedure_id"]))
    if exam is None or exam["status"] == exams.CANCELLED:
        return None
    if step["patient_id"] and step["patient_id"] != exam["patient_id"]:
        log.warning("MPPS names exam %s but patient ID %s (the exam's is %s): kept unlinked",
                    exam["accession_number"], step["patient_id"], exam["patient_id"])
        return None
    return exam


def _apply_to_exam(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                   step: sqlite3.Row, exam: Mapping[str, Any]) -> None:
    """The exam follows the step's state (inside the caller's transaction)."""
    cause = f"MPPS {step['state']} from {step['calling_ae']}"
    grace = float(settings["MPPS_GRACE_MINUTES"])
    if step["state"] == IN_PROGRESS:
        exams.advance(conn, actor, exam, exams.IN_PROGRESS, cause)
        return
    listed = conn.execute(f"SELECT COUNT(*) FROM mpps m JOIN mpps_instances mi ON mi.mpps_ref = m.id"
                          f" WHERE m.exam_ref = ? AND m.state IN ({', '.join('?' * len(transmission.FINAL_MPPS))})",
                          (exam["id"], *transmission.FINAL_MPPS)).fetchone()[0]
    if step["state"] == COMPLETED:
        exams.performed(conn, actor, exam, cause, grace, listed or None)
    else:
        exams.discontinued(conn, actor, exam, cause, grace, listed or None)


# ---------------------------------------------------------------- N-CREATE, N-SET

def create(conn: sqlite3.Connection, settings: Mapping[str, Any], actor: audit.Actor, sop_instance_uid: str,
           ds: Dataset) -> sqlite3.Row:
    """N-CREATE: a new step IN PROGRESS, linked to its exam when it names one."""
    if not uids.is_uid(sop_instance_uid):
        raise MppsError(INVALID_INSTANCE, "the MPPS SOP Instance UID is not a UID")
    state = _value(ds, "PerformedProcedureStepStatus")
    if state != IN_PROGRESS:
        raise MppsError(INVALID_ATTRIBUTE_VALUE, f"a new MPPS must be IN PROGRESS, not {state or 'empty'}")
    scheduled = _scheduled_step(ds)
    step = {"accession_number": _value(scheduled, "AccessionNumber"),
            "study_instance_uid": _value(scheduled, "StudyInstanceUID"),
            "requested_procedure_id": _value(scheduled, "RequestedProcedureID"),
            "patient_id": _value(ds, "PatientID")}
    now = clock.to_db(clock.now())
    with transaction(conn):
        if find(conn, sop_instance_uid) is not None:
            raise MppsError(DUPLICATE_INSTANCE, "this MPPS exists already")
        exam = _exam_of(conn, step)
        conn.execute(
            "INSERT INTO mpps (sop_instance_uid, calling_ae, exam_ref, state, procedure_step_id, accession_number,"
            " study_instance_uid, requested_procedure_id, patient_id, patient_name, modality, description,"
            " started_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sop_instance_uid, actor.name.removeprefix("ae:"), exam["id"] if exam else None, IN_PROGRESS,
             _value(ds, "PerformedProcedureStepID"), step["accession_number"], step["study_instance_uid"],
             step["requested_procedure_id"], step["patient_id"], _value(ds, "PatientName"), _value(ds, "Modality"),
             _value(ds, "PerformedProcedureStepDescription"),
             f"{_value(ds, 'PerformedProcedureStepStartDate')}{_value(ds, 'PerformedProcedureStepStartTime')}",
             now, now))
        row = find(conn, sop_instance_uid)
        audit.record(conn, actor, "mpps.create", f"mpps:{sop_instance_uid}",
                     patient_id=exam["patient_id"] if exam else step["patient_id"],
                     detail={"exam": exam["accession_number"] if exam else None, **step})
        if exam is not None:
            _apply_to_exam(conn, actor, settings, row, exam)
    return row


def _performed_instances(ds: Dataset) -> list[tuple[str, str, str, str]] | None:
    """(SOP instance, SOP class, series, series description) of the Performed Series
    Sequence; None when the N-SET does not carry one."""
    sequence = ds.get("PerformedSeriesSequence")
    if sequence is None:
        return None
    found: dict[str, tuple[str, str, str, str]] = {}
    for series in sequence:
        series_uid = str(series.get("SeriesInstanceUID", "") or "")
        if not uids.is_uid(series_uid):
            raise MppsError(INVALID_ATTRIBUTE_VALUE, "a performed series without a valid Series Instance UID")
        description = _value(series, "SeriesDescription")
        for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            for item in series.get(keyword) or []:
                instance = str(item.get("ReferencedSOPInstanceUID", "") or "")
                sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
                if not (uids.is_uid(instance) and uids.is_uid(sop_class)):
                    raise MppsError(INVALID_ATTRIBUTE_VALUE, "a referenced instance without valid UIDs")
                found[instance] = (instance, sop_class, series_uid, description)
                if len(found) > MAX_LISTED:
                    raise MppsError(INVALID_ATTRIBUTE_VALUE, f"more than {MAX_LISTED} instances listed")
    return list(found.values())


def _refuse_other_ae(conn: sqlite3.Connection, actor: audit.Actor, step: sqlite3.Row, calling_ae: str) -> None:
    """Audit, in its own transaction, an N-SET from an AE that did not create the step."""
    with transaction(conn):
        audit.record(conn, actor, "mpps.set", f"mpps:{step['sop_instance_uid']}", outcome="denied",
                     patient_id=step["patient_id"],
                     detail={"reason": "not_the_creating_ae", "created_by": step["calling_ae"],
                             "calling_ae": calling_ae})
    raise MppsError(PROCESSING_FAILURE, f"this MPPS was created by {step['calling_ae']}; only it may update it")


def update(conn: sqlite3.Connection, settings: Mapping[str, Any], actor: audit.Actor, sop_instance_uid: str,
           ds: Dataset, calling_ae: str) -> sqlite3.Row:
    """N-SET: the step's new values; COMPLETED or DISCONTINUED ends it, with what was acquired.

    Only the AE that created the step (N-CREATE) may update it: another modality ending it
    would move someone else's exam (refused 0x0110 and audited as denied)."""
    state = _value(ds, "PerformedProcedureStepStatus")
    if state and state not in STATES:
        raise MppsError(INVALID_ATTRIBUTE_VALUE, f"{state} is not an MPPS status")
    listed = _performed_instances(ds)
    now = clock.to_db(clock.now())
    step = find(conn, sop_instance_uid)
    if step is not None and step["calling_ae"] != calling_ae:
        _refuse_other_ae(conn, actor, step, calling_ae)
    with transaction(conn):
        step = find(conn, sop_instance_uid)
        if step is None:
            raise MppsError(NO_SUCH_INSTANCE, "no such MPPS")
        if step["state"] != IN_PROGRESS:
            raise MppsError(PROCESSING_FAILURE, f"this MPPS is {step['state']} and may no longer be updated",
                            NO_LONGER_UPDATABLE)
        state = state or IN_PROGRESS
        if listed is not None:
            conn.execute("DELETE FROM mpps_instances WHERE mpps_ref = ?", (step["id"],))
            conn.executemany("INSERT INTO mpps_instances (mpps_ref, sop_instance_uid, sop_class_uid,"
                             " series_instance_uid, series_description) VALUES (?, ?, ?, ?, ?)",
                             [(step["id"], *entry) for entry in listed])
        ended = f"{_value(ds, 'PerformedProcedureStepEndDate')}{_value(ds, 'PerformedProcedureStepEndTime')}"
        reason = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence")
        conn.execute("UPDATE mpps SET state = ?, ended_at = COALESCE(NULLIF(?, ''), ended_at),"
                     " discontinued_reason = ?, updated_at = ?,"
                     " instance_count = (SELECT COUNT(*) FROM mpps_instances WHERE mpps_ref = ?) WHERE id = ?",
                     (state, ended, _value(reason[0], "CodeMeaning") if reason else "", now, step["id"], step["id"]))
        step = find(conn, sop_instance_uid)
        exam = patients.find_exam(conn, exam_id=step["exam_ref"]) if step["exam_ref"] else None
        audit.record(conn, actor, "mpps.set", f"mpps:{sop_instance_uid}",
                     patient_id=exam["patient_id"] if exam else step["patient_id"],
                     detail={"state": state, "instances": step["instance_count"],
                             "exam": exam["accession_number"] if exam else None})
        if exam is not None and state != IN_PROGRESS:
            _apply_to_exam(conn, actor, settings, step, exam)
    return step


# ---------------------------------------------------------------- the technologists

def link(conn: sqlite3.Connection, settings: Mapping[str, Any], actor: audit.Actor, mpps_id: int,
         data: Mapping[str, Any]) -> sqlite3.Row:
    """Link an unlinked step to the exam it belongs to (by accession number); the exam follows
    the step's state as if it had named it."""
    accession = text(data, "accession_number", required=True, max_length=16)
    with transaction(conn):
        step = get(conn, mpps_id)
        if step["exam_ref"] is not None:
            raise Conflict(N_("This procedure step is linked to an exam already."))
        exam = patients.find_exam(conn, accession=accession)
        if exam is None:
            raise ValidationError("accession_number", N_("No exam has this accession number."))
        if exam["status"] == exams.CANCELLED:
            raise ValidationError("accession_number", N_("This exam was cancelled."))
        conn.execute("UPDATE mpps SET exam_ref = ?, linked_at = ?, linked_by = ? WHERE id = ?",
                     (exam["id"], clock.to_db(clock.now()), actor.name, mpps_id))
        audit.record(conn, actor, "mpps.link", f"mpps:{step['sop_instance_uid']}", patient_id=exam["patient_id"],
                     detail={"exam": accession, "state": step["state"], "mpps_patient_id": step["patient_id"],
                             "mpps_accession": step["accession_number"]})
        _apply_to_exam(conn, actor, settings, step, exam)
    return get(conn, mpps_id)


def unlinked(conn: sqlite3.Connection, limit: int = 200) -> list[sqlite3.Row]:
    """Steps not linked to an exam, newest first."""
    return conn.execute("SELECT * FROM mpps WHERE exam_ref IS NULL ORDER BY created_at DESC LIMIT ?",
                        (limit,)).fetchall()


def count_unlinked(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM mpps WHERE exam_ref IS NULL").fetchone()[0]


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM mpps WHERE exam_ref = ? ORDER BY created_at LIMIT 50", (exam_id,)).fetchall()
