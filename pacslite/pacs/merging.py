"""Patient identity: merging two records of one person, changing a patient ID, and undoing it.

A merge (HL7 ADT^A40, or the admin's duplicates page) moves every exam of the prior record to
the survivor, in one transaction with its audit: from that commit on, the worklist, Q/R,
DICOMweb and OHIF answer with the survivor, since they read the registered patient. The prior
record stays, pointing at the survivor (``merged_into``), so that a later message, registration
or study with the old ID resolves to it. A change of patient ID (ADT^A47) is a merge into a new
record under the new ID.

The stored files are then rewritten with the survivor's demographics, the old values kept in
each file's Original Attributes Sequence, as re-filing does, by the ``merge_files`` job, a batch
at a time (a patient with thousands of images would otherwise hold the HIS's acknowledgement
and the database for minutes). An admin undoes a merge while nothing new was filed to the
survivor: the exams go back, the files point at their originals again.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Mapping

from pydicom import dcmread

from ..core import audit, clock, jobs, names, storage
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text
from ..ris import patients
from ..ris import exams
from . import filing, index, refiling

log = logging.getLogger(__name__)

#: Files the job rewrites in one step (one transaction).
BATCH = 50
JOB_KIND, JOB_SUBJECT = "merge_files", "merges"
MERGE, CHANGE_ID = "merge", "change_id"
PATIENT_ATTRIBUTES = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


def _reason(data: Mapping[str, Any]) -> str:
    return text(data, "reason", required=True, max_length=500)


def merge_in(conn: sqlite3.Connection, actor: audit.Actor, prior_id: str, survivor_id: str, reason: str,
             kind: str = MERGE) -> int:
    """Merge the record ``prior_id`` into ``survivor_id``, inside the caller's transaction;
    the merge's id. Refused (Conflict, NotFound) for an unknown prior, the same record, a prior
    merged already, or a survivor that was itself merged away (a circle)."""
    prior, survivor = patients.find_patient(conn, prior_id), patients.find_patient(conn, survivor_id)
    if prior is None:
        raise NotFound(f"patient {prior_id}")
    if survivor is None:
        raise NotFound(f"patient {survivor_id}")
    if prior["id"] == survivor["id"]:
        raise Conflict(N_("A patient cannot be merged into itself."))
    if prior["merged_into"] is not None:
        into = patients.resolve_patient(conn, prior_id)
        raise Conflict(N_("Patient %(prior)s was merged into %(into)s already."), prior=prior_id,
                       into=into["patient_id"] if into else "?")
    if survivor["merged_into"] is not None:
        raise Conflict(N_("Patient %(survivor)s was itself merged into another record."), survivor=survivor_id)
    exam_ids = [row[0] for row in conn.execute("SELECT id FROM exams WHERE patient_ref = ? ORDER BY id",
                                               (prior["id"],))]
    exams.move_to_patient(conn, actor, exam_ids, survivor, f"patient {prior_id} merged into {survivor_id}")
    patients.mark_merged(conn, actor, prior, survivor, reason)
    prior_values = {k: prior[k] for k in ("patient_id", "name", "sex", "birth_date", "phone", "national_id")}
    return int(conn.execute(
        "INSERT INTO patient_merges (prior_ref, survivor_ref, kind, reason, exams, prior_values, at, by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (prior["id"], survivor["id"], kind, reason, json.dumps(exam_ids), json.dumps(prior_values, ensure_ascii=False),
         clock.to_db(clock.now()), actor.name)).lastrowid)


def change_id_in(conn: sqlite3.Connection, actor: audit.Actor, old_id: str, new_id: str, reason: str) -> int:
    """Change a patient ID (inside the caller's transaction): a new record under ``new_id``
    with the old one's demographics, and the old merged into it; the merge's id."""
    old = patients.find_patient(conn, old_id)
    if old is None:
        raise NotFound(f"patient {old_id}")
    if old["merged_into"] is not None:
        raise Conflict(N_("Patient %(prior)s was merged into %(into)s already."), prior=old_id,
                       into=patients.resolve_patient(conn, old_id)["patient_id"])
    patients.copy_with_new_id(conn, actor, old, new_id)
    return merge_in(conn, actor, old_id, new_id, reason, CHANGE_ID)


def merge_patients(conn: sqlite3.Connection, actor: audit.Actor, prior_id: str, survivor_id: str,
                   data: Mapping[str, Any]) -> int:
    """The admin's merge, with a reason; the files' rewriting is queued."""
    reason = _reason(data)
    with transaction(conn):
        merge_id = merge_in(conn, actor, prior_id, survivor_id, reason)
    ensure_job(conn)
    return merge_id


def change_patient_id(conn: sqlite3.Connection, actor: audit.Actor, old_id: str, data: Mapping[str, Any]) -> int:
    """The admin's change of a patient ID (``data["new_patient_id"]``), with a reason."""
    reason = _reason(data)
    new_id = text(data, "new_patient_id", required=True, max_length=64)
    if new_id == old_id:
        raise ValidationError("new_patient_id", N_("The new patient ID is the one the patient has."))
    with transaction(conn):
        merge_id = change_id_in(conn, actor, old_id, new_id, reason)
    ensure_job(conn)
    return merge_id


def ensure_job(conn: sqlite3.Connection, _settings: Mapping[str, Any] | None = None) -> int | None:
    """Queue the file rewriting when a merge still has files to rewrite (after a merge, and
    from the sweep: a merge committed just before a stop still gets its files rewritten)."""
    if conn.execute("SELECT 1 FROM patient_merges WHERE files_done_at IS NULL AND undone_at IS NULL"
                    " LIMIT 1").fetchone() is None:
        return None
    return jobs.start(conn, audit.SYSTEM, JOB_KIND, JOB_SUBJECT)


def header_of(patient: Mapping[str, Any]) -> dict[str, str]:
    """A patient's four attributes as a file carries them."""
    return {"PatientID": patient["patient_id"], "PatientName": names.dicom_person_name(patient["name"]),
            "PatientBirthDate": (patient["birth_date"] or "").replace("-", ""), "PatientSex": patient["sex"] or ""}


def _study_columns(values: Mapping[str, str]) -> dict[str, str]:
    return {"patient_id": values["PatientID"], "patient_name": values["PatientName"],
            "patient_sex": values["PatientSex"], "patient_birth_date": values["PatientBirthDate"]}


@jobs.register(JOB_KIND)
def rewrite_step(conn: sqlite3.Connection, settings: Mapping[str, Any], job: sqlite3.Row) -> jobs.Step:
    """Rewrite the next files of the oldest merge whose files are not all rewritten."""
    merge = conn.execute("SELECT * FROM patient_merges WHERE files_done_at IS NULL AND undone_at IS NULL"
                         " ORDER BY id LIMIT 1").fetchone()
    if merge is None:
        return jobs.Step(job["done"], max(job["total"], job["done"]), "", finished=True, message="up to date")
    exam_ids = json.loads(merge["exams"])
    rows = conn.execute(
        f"SELECT i.*, st.id AS study_id FROM instances i JOIN series se ON se.id = i.series_ref"
        f" JOIN studies st ON st.id = se.study_ref WHERE st.exam_ref IN ({','.join('?' * len(exam_ids))})"
        f" AND i.released_at IS NULL AND NOT EXISTS (SELECT 1 FROM merge_files m WHERE m.merge_ref = ?"
        f" AND m.instance_ref = i.id) ORDER BY i.id LIMIT ?", (*exam_ids, merge["id"], BATCH)).fetchall() \
        if exam_ids else []
    if not rows:
        with transaction(conn):
            conn.execute("UPDATE patient_merges SET files_done_at = ? WHERE id = ?",
                         (clock.to_db(clock.now()), merge["id"]))
        return jobs.Step(job["done"], max(job["total"], job["done"]), str(merge["id"]))
    survivor = conn.execute("SELECT * FROM patients WHERE id = ?", (merge["survivor_ref"],)).fetchone()
    values = header_of(survivor)
    store = settings["STORAGE_DIR"]
    written: list[tuple[sqlite3.Row, storage.Stored]] = []
    try:
        for row in rows:
            data = refiling.rewrite(storage.resolve(store, row["storage_path"]), values,
                                    source=f"merge of patient {json.loads(merge['prior_values'])['patient_id']}",
                                    at=merge["at"])
            written.append((row, storage.write_atomic(store, filing.CATEGORY, data, filing.SUFFIX)))
        with transaction(conn):
            now = conn.execute("SELECT undone_at FROM patient_merges WHERE id = ?", (merge["id"],)).fetchone()
            if now["undone_at"] is not None:
                raise Conflict(N_("The merge was undone meanwhile."))
            for row, stored in written:
                conn.execute("INSERT INTO merge_files (merge_ref, instance_ref, old_path, old_size, old_sha256, new_path,"
                             " new_size, new_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (merge["id"], row["id"], row["storage_path"], row["size"], row["sha256"], stored.path,
                              stored.size, stored.sha256))
                index.point_instance_at(conn, row["id"], stored.path, stored.size, stored.sha256)
            for study_id in {row["study_id"] for row in rows}:
                index.set_study_patient(conn, study_id, _study_columns(values))
    except BaseException:
        for _, stored in written:
            storage.remove(store, stored.path)
        raise
    done = job["done"] + len(rows)
    return jobs.Step(done, max(job["total"], done), str(merge["id"]))


def undo(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], merge_id: int,
         data: Mapping[str, Any]) -> None:
    """Undo a merge while nothing new was filed to the survivor since: the exams go back to the
    prior record, which stands on its own again; rewritten files point at their originals."""
    reason = _reason(data)
    with transaction(conn):
        merge = get(conn, merge_id)
        if merge["undone_at"]:
            raise Conflict(N_("This merge was undone already."))
        later = conn.execute("SELECT 1 FROM patient_merges WHERE id > ? AND undone_at IS NULL AND (prior_ref IN (?, ?)"
                             " OR survivor_ref IN (?, ?))", (merge_id, merge["prior_ref"], merge["survivor_ref"],
                                                             merge["prior_ref"], merge["survivor_ref"])).fetchone()
        if later:
            raise Conflict(N_("A later merge involves these patients: undo it first."))
        if conn.execute("SELECT 1 FROM studies s JOIN exams e ON e.id = s.exam_ref WHERE e.patient_ref = ?"
                        " AND s.last_received_at >= ? LIMIT 1", (merge["survivor_ref"], merge["at"])).fetchone():
            raise Conflict(N_("Images were filed to the surviving patient since the merge; it cannot be undone."))
        prior = conn.execute("SELECT * FROM patients WHERE id = ?", (merge["prior_ref"],)).fetchone()
        moved = [exam_id for exam_id in json.loads(merge["exams"]) if conn.execute(
            "SELECT 1 FROM exams WHERE id = ? AND patient_ref = ?", (exam_id, merge["survivor_ref"])).fetchone()]
        exams.move_to_patient(conn, actor, moved, prior, f"merge {merge_id} undone")
        patients.unmark_merged(conn, actor, prior, reason)
        first_file: dict[int, str] = {}
        for row in conn.execute("SELECT m.*, se.study_ref FROM merge_files m JOIN instances i ON i.id = m.instance_ref"
                                " JOIN series se ON se.id = i.series_ref WHERE m.merge_ref = ?", (merge_id,)).fetchall():
            index.point_instance_at(conn, row["instance_ref"], row["old_path"], row["old_size"], row["old_sha256"])
            first_file.setdefault(row["study_ref"], row["old_path"])
        for study_id, path in first_file.items():  # the columns say what the files say again
            index.set_study_patient(conn, study_id, _study_columns(_header_in(settings["STORAGE_DIR"], path)))
        conn.execute("UPDATE patient_merges SET undone_at = ?, undone_by = ?, undo_reason = ? WHERE id = ?",
                     (clock.to_db(clock.now()), actor.name, reason, merge_id))
        audit.record(conn, actor, "patient.merge_undo", f"patient:{prior['patient_id']}",
                     patient_id=prior["patient_id"], detail={"merge": merge_id, "reason": reason, "exams": len(moved)})


def _header_in(store: str, path: str) -> dict[str, str]:
    """The patient attributes a stored file carries."""
    ds = dcmread(storage.resolve(store, path), stop_before_pixels=True,
                 specific_tags=["SpecificCharacterSet", *PATIENT_ATTRIBUTES])
    return {keyword: str(ds.get(keyword, "") or "") for keyword in PATIENT_ATTRIBUTES}


def get(conn: sqlite3.Connection, merge_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT m.*, p.patient_id AS prior_id FROM patient_merges m JOIN patients p ON p.id = m.prior_ref"
                       " WHERE m.id = ?", (merge_id,)).fetchone()
    if row is None:
        raise NotFound(f"merge {merge_id}")
    return row


def merges_of(conn: sqlite3.Connection, patient_ref: int) -> list[sqlite3.Row]:
    """The merges a record took part in, as prior or survivor, newest first (with both IDs)."""
    return conn.execute(
        "SELECT m.*, a.patient_id AS prior_id, b.patient_id AS survivor_id,"
        " (SELECT COUNT(*) FROM merge_files f WHERE f.merge_ref = m.id) AS files_rewritten"
        " FROM patient_merges m JOIN patients a ON a.id = m.prior_ref JOIN patients b ON b.id = m.survivor_ref"
        " WHERE m.prior_ref = ? OR m.survivor_ref = ? ORDER BY m.id DESC LIMIT 50", (patient_ref, patient_ref)).fetchall()
