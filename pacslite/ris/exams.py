"""The exam's life cycle, in one place: the only code that changes an exam's state.

    ordered ─→ scheduled ─→ in_progress ─→ performed ─→ preliminary ─→ final
       │           │            │    └──────────┴───────────┴──────────↗
       └→ (cancelled, in_progress) ├→ cancelled  └→ discontinued ─→ (in_progress, performed, a report)
                   └→ performed (the technologist: "exam done")

- ``ordered``: placed by the HIS (an HL7 order), waiting for the patient to check in at the desk
  (签到); the worklist does not offer it yet. Images filed to it move it on all the same;
- ``scheduled``: registered at the desk, or ordered and checked in;

- ``in_progress``: the modality's MPPS IN PROGRESS, or the first image filed;
- ``performed``: MPPS COMPLETED, or a technologist's "Exam done" (检查完成);
- ``preliminary`` / ``final``: the report signed so; an amendment keeps ``final``;
- ``discontinued``: MPPS DISCONTINUED; ``cancelled``: never performed, with a reason.

Every change is audited (``exam.state``) in the caller's transaction. The worklist offers only
``scheduled`` and ``in_progress`` exams.
"""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..core import audit, clock, config
from . import outbox, transmission
from ..core.db import transaction
from ..core.validation import N_, Conflict, ValidationError, text

#: Where the patient comes from (门诊, 住院, 急诊, 体检) and how urgent the exam is.
SOURCES = ("outpatient", "inpatient", "emergency", "physical_exam")
PRIORITIES = ("stat", "urgent", "routine")
ORDERED, SCHEDULED, IN_PROGRESS, PERFORMED = "ordered", "scheduled", "in_progress", "performed"
PRELIMINARY, FINAL, DISCONTINUED, CANCELLED = "preliminary", "final", "discontinued", "cancelled"
STATES = (ORDERED, SCHEDULED, IN_PROGRESS, PERFORMED, PRELIMINARY, FINAL, DISCONTINUED, CANCELLED)
TRANSITIONS: dict[str, frozenset[str]] = {
    ORDERED: frozenset({SCHEDULED, IN_PROGRESS, CANCELLED}),
    SCHEDULED: frozenset({IN_PROGRESS, PERFORMED, DISCONTINUED, CANCELLED}),
    IN_PROGRESS: frozenset({PERFORMED, DISCONTINUED, PRELIMINARY, FINAL}),
    PERFORMED: frozenset({PRELIMINARY, FINAL}),
    DISCONTINUED: frozenset({IN_PROGRESS, PERFORMED, PRELIMINARY, FINAL}),
    PRELIMINARY: frozenset({FINAL}),
    FINAL: frozenset(),
    CANCELLED: frozenset(),
}
#: What the modality worklist offers: not yet acquired, or being acquired.
WORKLIST_STATES = (SCHEDULED, IN_PROGRESS)
#: Acquired (wholly or in part), not yet reported.
ACQUIRED_STATES = (IN_PROGRESS, PERFORMED, DISCONTINUED)
#: Not started: an order's details may still change, and it may be cancelled.
NOT_STARTED = (ORDERED, SCHEDULED)
#: From where a technologist may say "exam done" (not twice, not once reported or cancelled).
DONE_FROM = (SCHEDULED, IN_PROGRESS, DISCONTINUED)
#: Images came, the final report has not been signed (the sweep's overdue_report).
AWAITING_FINAL = (*ACQUIRED_STATES, PRELIMINARY)


def insert_scheduled(conn: sqlite3.Connection, actor: audit.Actor, patient_ref: int, accession: str,
                     study_uid: str, fields: Mapping[str, Any], status: str = SCHEDULED) -> int:
    """A new exam from registration's checked ``fields`` (inside the caller's transaction, which
    audits it); its id. ``status``: scheduled (registered at the desk: the patient is there,
    checked in) or ordered (an HIS order, with ``placer_order_number`` and ``placer_application``
    in ``fields``)."""
    if status not in (ORDERED, SCHEDULED):
        raise ValueError(f"a new exam is ordered or scheduled, not {status}")
    now = clock.to_db(clock.now())
    return int(conn.execute(
        "INSERT INTO exams (accession_number, patient_ref, modality, dicom_modality, source, procedure,"
        " procedure_code, body_part, requesting_department, requesting_physician, clinical_note,"
        " outpatient_number, inpatient_number, ward, bed, priority, scheduled_at, station_ae, study_instance_uid,"
        " status, registered_at, registered_by, updated_at, target_hours, placer_order_number, placer_application,"
        " checked_in_at)"
        " VALUES (:accession, :patient_ref, :modality, :dicom_modality, :source, :procedure, :procedure_code,"
        " :body_part, :requesting_department, :requesting_physician, :clinical_note, :outpatient_number,"
        " :inpatient_number, :ward, :bed, :priority, :scheduled_at, :station_ae, :study_uid, :status, :now,"
        " :actor, :now, :target_hours, :placer_order_number, :placer_application, :checked_in_at)",
        {"placer_order_number": None, "placer_application": None, **fields, "accession": accession,
         "patient_ref": patient_ref, "study_uid": study_uid, "status": status, "now": now, "actor": actor.name,
         "checked_in_at": now if status == SCHEDULED else None}).lastrowid)


def check_in(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any]) -> None:
    """The patient of an ordered exam arrived at the desk (签到): the exam is scheduled, and the
    worklist offers it (inside the caller's transaction)."""
    move(conn, actor, exam, SCHEDULED, "checked in at the desk")
    conn.execute("UPDATE exams SET checked_in_at = ? WHERE id = ?", (clock.to_db(clock.now()), exam["id"]))


#: What an order change (HL7 XO) may change on an exam not yet started.
ORDER_FIELDS = ("modality", "dicom_modality", "procedure", "procedure_code", "body_part", "station_ae",
                "requesting_department", "requesting_physician", "clinical_note", "outpatient_number",
                "inpatient_number", "ward", "bed", "priority", "scheduled_at", "target_hours", "source")


def change_order(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], fields: Mapping[str, Any],
                 cause: str) -> dict[str, tuple[Any, Any]]:
    """Change the details of an exam not yet started (an order changed by the HIS), inside the
    caller's transaction; audited before → after. Conflict once the exam has started. Returns
    what changed."""
    state = current_state(conn, exam["id"])
    if state not in NOT_STARTED:
        raise Conflict(N_("An exam in state %(status)s cannot be changed any more."), status=state)
    changed = {k: (exam[k], fields[k]) for k in ORDER_FIELDS if k in fields and exam[k] != fields[k]}
    if changed:
        assignments = ", ".join(f"{k} = :{k}" for k in changed)
        conn.execute(f"UPDATE exams SET {assignments}, updated_at = :now WHERE id = :id",
                     {**{k: v[1] for k, v in changed.items()}, "now": clock.to_db(clock.now()), "id": exam["id"]})
        audit.record(conn, actor, "exam.change", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"before": {k: v[0] for k, v in changed.items()},
                             "after": {k: v[1] for k, v in changed.items()}, "cause": cause})
    return changed


def current_state(conn: sqlite3.Connection, exam_id: int) -> str:
    return conn.execute("SELECT status FROM exams WHERE id = ?", (exam_id,)).fetchone()[0]


def move(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], new: str, cause: str) -> None:
    """Change the exam's state (inside the caller's transaction, from the state it has there,
    not the one ``exam`` was read with), audited with its cause; Conflict when the life cycle
    does not allow it."""
    old = current_state(conn, exam["id"])
    if new not in TRANSITIONS[old]:
        raise Conflict(N_("An exam in state %(status)s cannot become %(new)s."), status=old, new=new)
    conn.execute("UPDATE exams SET status = ?, updated_at = ? WHERE id = ?", (new, clock.to_db(clock.now()), exam["id"]))
    outbox.status_changed(conn, exam["id"], new)  # an HIS order's status goes back to the HIS
    audit.record(conn, actor, "exam.state", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                 detail={"from": old, "to": new, "cause": cause})


def advance(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], new: str, cause: str) -> bool:
    """Move forward if the life cycle allows it, else leave the state as it is (an MPPS or an
    image that arrives after the report, say); True if it moved."""
    if new in TRANSITIONS[current_state(conn, exam["id"])]:
        move(conn, actor, exam, new, cause)
        return True
    return False


def relocate(conn: sqlite3.Connection, actor: audit.Actor, patient_ref: int, ward: str, bed: str, cause: str) -> int:
    """The patient moved to another ward or bed (HL7 A02): the exams not yet finally reported
    follow, audited, inside the caller's transaction; how many."""
    rows = conn.execute("SELECT e.id, e.accession_number, e.ward, e.bed, p.patient_id FROM exams e"
                        " JOIN patients p ON p.id = e.patient_ref WHERE e.patient_ref = ? AND e.status NOT IN (?, ?)"
                        " AND (e.ward <> ? OR e.bed <> ?)", (patient_ref, FINAL, CANCELLED, ward, bed)).fetchall()
    for row in rows:
        conn.execute("UPDATE exams SET ward = ?, bed = ?, updated_at = ? WHERE id = ?",
                     (ward, bed, clock.to_db(clock.now()), row["id"]))
        audit.record(conn, actor, "exam.change", f"exam:{row['accession_number']}", patient_id=row["patient_id"],
                     detail={"before": {"ward": row["ward"], "bed": row["bed"]}, "after": {"ward": ward, "bed": bed},
                             "cause": cause})
    return len(rows)


def move_to_patient(conn: sqlite3.Connection, actor: audit.Actor, exam_ids: list[int], patient: Mapping[str, Any],
                    cause: str) -> None:
    """The exams now belong to ``patient`` (a merge, or its undoing), with their studies, reports
    and critical findings, which hang on the exam; inside the caller's transaction, audited."""
    for exam_id in exam_ids:
        row = conn.execute("SELECT e.accession_number, p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref"
                           " WHERE e.id = ?", (exam_id,)).fetchone()
        conn.execute("UPDATE exams SET patient_ref = ?, updated_at = ? WHERE id = ?",
                     (patient["id"], clock.to_db(clock.now()), exam_id))
        audit.record(conn, actor, "exam.patient", f"exam:{row['accession_number']}", patient_id=patient["patient_id"],
                     detail={"before": {"patient_id": row["patient_id"]}, "after": {"patient_id": patient["patient_id"]},
                             "cause": cause})


# ---------------------------------------------------------------- images

def images_arrived(conn: sqlite3.Connection, exam: Mapping[str, Any], new_series: bool, at: str) -> None:
    """An image was filed to the exam: count it; a scheduled exam is in progress; an "images
    missing" flag clears itself."""
    if current_state(conn, exam["id"]) == SCHEDULED:
        move(conn, audit.SYSTEM, exam, IN_PROGRESS, "first image filed")
    conn.execute("UPDATE exams SET instance_count = instance_count + 1, series_count = series_count + ?,"
                 " images_first_at = COALESCE(images_first_at, ?), images_last_at = ?,"
                 " images_missing_at = NULL, images_missing_by = NULL WHERE id = ?",
                 (int(new_series), at, at, exam["id"]))
    if exam["images_missing_at"]:
        audit.record(conn, audit.SYSTEM, "exam.images_missing_clear", f"exam:{exam['accession_number']}",
                     patient_id=exam["patient_id"], detail={"flagged_at": exam["images_missing_at"],
                                                            "flagged_by": exam["images_missing_by"]})


def set_image_counts(conn: sqlite3.Connection, exam: Mapping[str, Any], series: int, instances: int,
                     first_at: str | None, last_at: str | None) -> None:
    """Images were moved to or from the exam (re-filing): its counts and arrival times as
    counted again from the index; a scheduled exam that now has images is in progress."""
    if instances > 0 and current_state(conn, exam["id"]) == SCHEDULED:
        move(conn, audit.SYSTEM, exam, IN_PROGRESS, "images re-filed to it")
    conn.execute("UPDATE exams SET series_count = ?, instance_count = ?, images_first_at = ?, images_last_at = ?,"
                 " images_missing_at = CASE WHEN ? > 0 THEN NULL ELSE images_missing_at END WHERE id = ?",
                 (series, instances, first_at, last_at, instances, exam["id"]))


# ---------------------------------------------------------------- people and modalities

def can_mark_done(exam: Mapping[str, Any]) -> bool:
    """Whether a technologist may say the exam is done: not yet performed or reported, not cancelled."""
    return exam["status"] in DONE_FROM


def can_cancel(exam: Mapping[str, Any]) -> bool:
    return CANCELLED in TRANSITIONS[exam["status"]] and exam["instance_count"] == 0


def cancel(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], reason: str) -> None:
    """Cancel an exam never performed (no images), with a reason."""
    if exam["instance_count"] > 0:
        raise Conflict(N_("This exam has images and cannot be cancelled."))
    move(conn, actor, exam, CANCELLED, reason)
    conn.execute("UPDATE exams SET cancel_reason = ?, cancelled_at = ?, cancelled_by = ? WHERE id = ?",
                 (reason, clock.to_db(clock.now()), actor.name, exam["id"]))
    audit.record(conn, actor, "exam.cancel", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                 detail={"reason": reason})


def performed(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], cause: str,
              grace_minutes: float, images_expected: int | None = None) -> None:
    """The exam was performed (MPPS COMPLETED, or a technologist's "exam done"), with the
    number of images acquired when it is known; the expected-image check is scheduled. A report
    signed already keeps the exam's state (a modality's late MPPS)."""
    state = current_state(conn, exam["id"])
    if state == CANCELLED:
        raise Conflict(N_("An exam in state %(status)s cannot become %(new)s."), status=state, new=PERFORMED)
    now = clock.now()
    advance(conn, actor, exam, PERFORMED, cause)
    conn.execute("UPDATE exams SET performed_at = ?, performed_by = ?, images_expected = COALESCE(?, images_expected)"
                 " WHERE id = ?", (clock.to_db(now), actor.name, images_expected, exam["id"]))
    _schedule_transmission_check(conn, exam["id"], grace_minutes, now)


def fill_missing_targets(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> int:
    """Exams registered before the procedure catalogue have no report target of their own
    (``target_hours``; registration fixes it since): give them, once, at start-up, the one the
    configuration gives them, so that every exam's target is read, never worked out row by row.
    Audited as one record with the count; returns it."""
    if conn.execute("SELECT 1 FROM exams WHERE target_hours IS NULL LIMIT 1").fetchone() is None:
        return 0  # the partial index exams_target_unset: empty once this has run
    expression, params = config.turnaround_hours_sql(settings)
    with transaction(conn):
        filled = conn.execute(f"UPDATE exams SET target_hours = {expression} WHERE target_hours IS NULL",
                              params).rowcount
        audit.record(conn, audit.SYSTEM, "exam.targets", "exams", detail={"exams": filled, "rule": "configuration"})
    return filled


def flag_images_missing(conn: sqlite3.Connection, exam: Mapping[str, Any], by: str, at: str) -> None:
    """A radiologist found no images: the exam is flagged until images are filed (inside the
    caller's transaction, which audits it; :func:`images_arrived` clears it)."""
    conn.execute("UPDATE exams SET images_missing_at = ?, images_missing_by = ? WHERE id = ?", (at, by, exam["id"]))


def set_taken(conn: sqlite3.Connection, exam_id: int, by: str | None, at: str | None) -> None:
    """Who has taken the exam to report it (None: nobody), inside the caller's transaction,
    which audits it. Not a state: the reading list's note of who is on it."""
    conn.execute("UPDATE exams SET taken_by = ?, taken_at = ? WHERE id = ?", (by, at, exam_id))


#: The most images a technologist may say one exam acquired.
MAX_IMAGES_ACQUIRED = 100000


def mark_done(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], data: Mapping[str, Any],
              grace_minutes: float) -> None:
    """A technologist's "Exam done" (检查完成), for modalities without MPPS, with the number of
    images acquired if they give it (the expected-image check then waits for that many)."""
    raw = text(data, "images_acquired", max_length=7)
    count = None
    if raw:
        if not raw.isdigit() or int(raw) > MAX_IMAGES_ACQUIRED:
            raise ValidationError("images_acquired", N_("A number of images from 0 to 100000, or nothing."))
        count = int(raw)
    if not can_mark_done(exam):
        raise Conflict(N_("An exam in state %(status)s cannot become %(new)s."), status=exam["status"], new=PERFORMED)
    with transaction(conn):
        performed(conn, actor, exam, "technologist: exam done", grace_minutes, count)
        audit.record(conn, actor, "exam.done", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"images_acquired": count})


def discontinued(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], cause: str,
                 grace_minutes: float, images_expected: int | None = None) -> None:
    """The modality discontinued the procedure (MPPS DISCONTINUED): what it did acquire is
    still expected. An exam already performed or reported keeps its state."""
    advance(conn, actor, exam, DISCONTINUED, cause)
    conn.execute("UPDATE exams SET images_expected = COALESCE(?, images_expected) WHERE id = ?",
                 (images_expected, exam["id"]))
    _schedule_transmission_check(conn, exam["id"], grace_minutes, clock.now())


# ---------------------------------------------------------------- the expected-image check

def _schedule_transmission_check(conn: sqlite3.Connection, exam_id: int, grace_minutes: float, now: datetime) -> None:
    """The exam was performed: check it once the grace period is over (and at once, in case it
    has no image at all). Inside the caller's transaction."""
    conn.execute("UPDATE exams SET transmission_check_at = ? WHERE id = ?",
                 (clock.to_db(now + timedelta(minutes=grace_minutes)), exam_id))
    check_transmission(conn, exam_id, now)


def check_transmission(conn: sqlite3.Connection, exam_id: int, now: datetime) -> bool:
    """The expected-image check (:func:`transmission.check`) on one exam, inside the caller's
    transaction; the exam's check ends once it says so. True while images are missing."""
    missing = transmission.check(conn, exam_id, now)
    if not missing:
        conn.execute("UPDATE exams SET transmission_check_at = NULL WHERE id = ? AND transmission_check_at IS NOT NULL",
                     (exam_id,))
    return missing


def check_transmissions_due(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> int:
    """Check the exams whose check is pending (due, or raised at once); how many still miss images."""
    now = clock.now()
    ids = [r[0] for r in conn.execute("SELECT id FROM exams WHERE transmission_check_at IS NOT NULL"
                                      " ORDER BY transmission_check_at LIMIT 500")]
    missing = 0
    for exam_id in ids:
        with transaction(conn):
            missing += check_transmission(conn, exam_id, now)
    return missing


def report_signed(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], level: str,
                  review: bool = False, result_class: str = "", due_at: str | None = None) -> None:
    """A report was signed preliminary or final: the exam follows. A final signature on a final
    exam is an amendment (the exam stays final, marked amended). With ``review`` (the setting
    REPORT_REVIEW) a final report needs a preliminary one first. A final report's
    ``result_class`` becomes the exam's (the statistics' positive rate). ``due_at``: when the
    report was due, in the department's reporting hours, kept beside the first final
    signature's time (the statistics' "within target")."""
    state = current_state(conn, exam["id"])
    if level == FINAL:
        conn.execute("UPDATE exams SET result_class = ? WHERE id = ?", (result_class or None, exam["id"]))
    if level != FINAL:
        advance(conn, actor, exam, PRELIMINARY, "report signed preliminary")
    elif state == FINAL:
        conn.execute("UPDATE exams SET amended_at = ? WHERE id = ?", (clock.to_db(clock.now()), exam["id"]))
    elif review and state != PRELIMINARY:
        raise Conflict(N_("Reports are reviewed here: sign this report preliminary first."))
    else:
        move(conn, actor, exam, FINAL, "report signed final")
        conn.execute("UPDATE exams SET reported_at = ?, reported_by = ?, report_due_at = ? WHERE id = ?",
                     (clock.to_db(clock.now()), actor.name, due_at, exam["id"]))
