"""The image index: studies, series and instances, what is stored and where.

This module is the only writer of studies, series, instances and instance_conflicts: filing
calls it inside its transaction, re-filing to move and purge. A study row says where the study went: to an exam (``exam_ref``) or to quarantine (``quarantine_reason``).
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping

from ..core import clock

#: What a peer may find and retrieve (SQL on ``studies s``): filed studies, not rejected.
#: Quarantined studies may belong to someone else and are never answered as a patient's images.
VISIBLE = "s.exam_ref IS NOT NULL AND s.rejected_at IS NULL"

QUARANTINE_REASONS = ("no_accession", "unknown_accession", "patient_id_mismatch", "demographics_mismatch",
                      "exam_cancelled", "duplicate_conflict")


@dataclass(frozen=True)
class Header:
    """What filing needs from a dataset, decoded; strings already safe to keep and show."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""
    name_groups: tuple[str, ...] = ()
    patient_sex: str = ""
    patient_birth_date: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    study_description: str = ""
    modality: str = ""
    series_number: str = ""
    series_description: str = ""
    instance_number: str = ""
    derivation_description: str = ""
    body_part: str = ""


@dataclass(frozen=True)
class Source:
    """Where an image came from: the calling AE and its address (or a user, for uploads), and
    the delivery it is part of (:mod:`pacslite.pacs.arrivals`; empty: the image is a delivery of its own)."""

    calling_ae: str = ""
    address: str = ""
    batch: str = ""


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Placement:
    """Where a new study goes: an exam's row id, or a quarantine reason with its detail."""

    exam_ref: int | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def find_instance(conn: sqlite3.Connection, sop_instance_uid: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()


def find_study(conn: sqlite3.Connection, study_instance_uid: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM studies WHERE study_instance_uid = ?", (study_instance_uid,)).fetchone()


def study_uid_of(conn: sqlite3.Connection, study_id: int) -> str:
    return str(conn.execute("SELECT study_instance_uid FROM studies WHERE id = ?", (study_id,)).fetchone()[0])


def series_counts_of_arrival(conn: sqlite3.Connection, arrival_id: int) -> dict[str, int]:
    """{SeriesInstanceUID: images} of what one delivery stored (by the instances' arrival index)."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT se.series_instance_uid, COUNT(*) FROM instances i JOIN series se ON se.id = i.series_ref"
        " WHERE i.arrival_ref = ? GROUP BY se.series_instance_uid ORDER BY se.series_instance_uid", (arrival_id,))}


def _header_columns(header: Header) -> dict[str, str]:
    return {"accession_number": header.accession_number, "patient_id": header.patient_id,
            "patient_name": header.patient_name, "patient_sex": header.patient_sex,
            "patient_birth_date": header.patient_birth_date}


def add_study(conn: sqlite3.Connection, header: Header, source: Source, at: str, placement: Placement) -> sqlite3.Row:
    conn.execute(
        "INSERT INTO studies (study_instance_uid, exam_ref, quarantine_reason, quarantine_detail, accession_number,"
        " patient_id, patient_name, patient_sex, patient_birth_date, study_date, study_time, study_id,"
        " study_description, calling_ae, address, first_received_at, last_received_at) VALUES (:uid, :exam_ref,"
        " :reason, :detail, :accession_number, :patient_id, :patient_name, :patient_sex, :patient_birth_date,"
        " :study_date, :study_time, :study_id, :study_description, :calling_ae, :address, :at, :at)",
        {**_header_columns(header), "uid": header.study_instance_uid, "exam_ref": placement.exam_ref,
         "reason": placement.reason, "detail": json.dumps(placement.detail, ensure_ascii=False),
         "study_date": header.study_date, "study_time": header.study_time, "study_id": header.study_id,
         "study_description": header.study_description,
         "calling_ae": source.calling_ae, "address": source.address, "at": at})
    study = find_study(conn, header.study_instance_uid)
    assert study is not None
    return study


def add_instance(conn: sqlite3.Connection, study: sqlite3.Row, header: Header, stored: StoredFile,
                 source: Source, at: str, arrival_ref: int) -> bool:
    """Insert the instance (and its series if new) and update the counts; True if the series is new."""
    series = conn.execute("SELECT id, study_ref FROM series WHERE series_instance_uid = ?",
                          (header.series_instance_uid,)).fetchone()
    new_series = series is None
    if new_series:
        series_ref = conn.execute(
            "INSERT INTO series (study_ref, series_instance_uid, modality, series_number, series_description,"
            " body_part, first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (study["id"], header.series_instance_uid, header.modality, header.series_number,
             header.series_description, header.body_part, at, at)).lastrowid
    else:
        series_ref = series["id"]
    conn.execute(
        "INSERT INTO instances (series_ref, sop_instance_uid, sop_class_uid, transfer_syntax_uid, instance_number,"
        " storage_path, size, sha256, calling_ae, received_at, arrival_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (series_ref, header.sop_instance_uid, header.sop_class_uid, header.transfer_syntax_uid,
         header.instance_number, stored.path, stored.size, stored.sha256, source.calling_ae, at, arrival_ref))
    conn.execute("UPDATE series SET instance_count = instance_count + 1, last_received_at = ? WHERE id = ?",
                 (at, series_ref))
    conn.execute("UPDATE studies SET instance_count = instance_count + 1, series_count = series_count + ?,"
                 " last_received_at = ? WHERE id = ?", (int(new_series), at, study["id"]))
    return new_series


def find_conflict(conn: sqlite3.Connection, sop_instance_uid: str, sha256: str) -> sqlite3.Row | None:
    """A kept-aside copy of this instance with exactly these bytes."""
    return conn.execute("SELECT * FROM instance_conflicts WHERE sop_instance_uid = ? AND sha256 = ?",
                        (sop_instance_uid, sha256)).fetchone()


def add_conflict(conn: sqlite3.Connection, first: sqlite3.Row, header: Header, stored: StoredFile,
                 source: Source, at: str) -> int:
    """Keep a second, different copy of an instance aside; the first copy is not touched."""
    return int(conn.execute(
        "INSERT INTO instance_conflicts (instance_ref, sop_instance_uid, study_instance_uid, transfer_syntax_uid,"
        " accession_number, patient_id, patient_name, patient_sex, patient_birth_date, storage_path, size, sha256,"
        " calling_ae, address, received_at) VALUES (:ref, :sop, :study, :ts, :accession_number, :patient_id,"
        " :patient_name, :patient_sex, :patient_birth_date, :path, :size, :sha, :ae, :address, :at)",
        {**_header_columns(header), "ref": first["id"], "sop": header.sop_instance_uid,
         "study": header.study_instance_uid, "ts": header.transfer_syntax_uid, "path": stored.path,
         "size": stored.size, "sha": stored.sha256, "ae": source.calling_ae, "address": source.address,
         "at": at}).lastrowid)


def series_of_exam(conn: sqlite3.Connection, exam_ref: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT se.*, st.study_instance_uid, st.calling_ae, st.id AS study_id FROM series se"
        " JOIN studies st ON st.id = se.study_ref"
        " WHERE st.exam_ref = ? ORDER BY se.first_received_at, CAST(se.series_number AS INTEGER)",
        (exam_ref,)).fetchall()


def filed_study_uids(conn: sqlite3.Connection, exam_ref: int) -> list[str]:
    """The UIDs of the exam's studies that are filed and not rejected, oldest first."""
    rows = conn.execute(f"SELECT s.study_instance_uid FROM studies s WHERE s.exam_ref = ? AND {VISIBLE} ORDER BY s.id",
                        (exam_ref,))
    return [row[0] for row in rows]


def quarantine(conn: sqlite3.Connection, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
    """Quarantined studies (not rejected) and kept-aside duplicates, newest first, in one shape;
    ``limit`` of them from ``offset``."""
    rows = conn.execute(
        "SELECT 'study' AS kind, id, quarantine_reason AS reason, quarantine_detail AS detail, study_instance_uid,"
        " '' AS sop_instance_uid, accession_number, patient_id, patient_name, patient_sex, patient_birth_date,"
        " study_date, study_time, study_description, calling_ae, address, series_count, instance_count,"
        " first_received_at, last_received_at, exam_ref FROM studies"
        " WHERE quarantine_reason IS NOT NULL AND rejected_at IS NULL AND instance_count > 0"
        " UNION ALL"
        " SELECT 'conflict', id, 'duplicate_conflict', '{}', study_instance_uid, sop_instance_uid, accession_number,"
        " patient_id, patient_name, patient_sex, patient_birth_date, '', '', '', calling_ae, address, 1, 1,"
        " received_at, received_at, NULL FROM instance_conflicts"
        " ORDER BY last_received_at DESC, kind, id LIMIT ? OFFSET ?", (limit, offset)).fetchall()
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


def delete_study_contents(conn: sqlite3.Connection, study_id: int, instance_ids: list[int]) -> None:
    """Purge a rejected study's series and instances (``instance_ids``) and their kept-aside
    copies, inside the caller's transaction; the caller removes the files, then the rows that
    refer to the study, then the study (:func:`delete_study`)."""
    marks = ",".join("?" * len(instance_ids))
    conn.execute(f"DELETE FROM instance_conflicts WHERE instance_ref IN ({marks})", instance_ids)
    conn.execute(f"DELETE FROM instances WHERE id IN ({marks})", instance_ids)
    conn.execute("DELETE FROM series WHERE study_ref = ?", (study_id,))


def delete_study(conn: sqlite3.Connection, study_id: int) -> None:
    """The study row itself, once nothing refers to it."""
    conn.execute("DELETE FROM studies WHERE id = ?", (study_id,))


def quarantined_studies_of_patient(conn: sqlite3.Connection, patient_id: str, since: str,
                                   until: str) -> list[sqlite3.Row]:
    """Quarantined studies whose header names this patient ID, received in [since, until)."""
    return conn.execute(
        "SELECT * FROM studies WHERE quarantine_reason IS NOT NULL AND patient_id = ?"
        " AND last_received_at >= ? AND first_received_at < ? ORDER BY last_received_at DESC",
        (patient_id, since, until)).fetchall()


def quarantine_warnings(conn: sqlite3.Connection, exam: Mapping[str, Any],
                        settings: Mapping[str, Any]) -> list[sqlite3.Row]:
    """Quarantined studies of the same patient ID received on the exam's day or the day
    before: its images may have been misfiled."""
    day = clock.local_today(settings["TIMEZONE"], clock.from_db(exam["images_first_at"] or exam["scheduled_at"]))
    since, _ = clock.local_day_bounds(day - timedelta(days=1), settings["TIMEZONE"])
    _, until = clock.local_day_bounds(day, settings["TIMEZONE"])
    return quarantined_studies_of_patient(conn, exam["patient_id"], since, until)


def paths_received_since(conn: sqlite3.Connection, since: str) -> set[str]:
    """Every stored path (instances and kept-aside copies) received at or after ``since``, and
    every file a re-filing wrote or kept (whenever the image arrived)."""
    rows = conn.execute("SELECT storage_path FROM instances WHERE received_at >= ? UNION ALL"
                        " SELECT storage_path FROM instance_conflicts WHERE received_at >= ? UNION ALL"
                        " SELECT old_path FROM refiled_files UNION ALL SELECT new_path FROM refiled_files",
                        (since, since))
    return {row[0] for row in rows}


def last_received_at(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT MAX(at) FROM (SELECT MAX(received_at) AS at FROM instances UNION ALL"
                       " SELECT MAX(received_at) FROM instance_conflicts) AS received").fetchone()
    return row[0]


# ---------------------------------------------------------------- corrections (re-filing, archive)

def point_instance_at(conn: sqlite3.Connection, instance_id: int, path: str, size: int, sha256: str) -> None:
    """The instance's file is now ``path`` (a re-filing's rewritten copy, or its original again)."""
    conn.execute("UPDATE instances SET storage_path = ?, size = ?, sha256 = ? WHERE id = ?",
                 (path, size, sha256, instance_id))


def bring_online(conn: sqlite3.Connection, instance_id: int, path: str) -> None:
    """A released instance has its file back (restored from an offline volume)."""
    conn.execute("UPDATE instances SET storage_path = ?, released_at = NULL WHERE id = ?", (path, instance_id))


def mark_released(conn: sqlite3.Connection, instance_ids: list[int], at: str) -> None:
    conn.executemany("UPDATE instances SET released_at = ? WHERE id = ?", [(at, i) for i in instance_ids])


def set_study_filing(conn: sqlite3.Connection, study_id: int, exam_ref: int | None, quarantine_reason: str | None,
                     quarantine_detail: str, header: Mapping[str, str]) -> None:
    """File the study to ``exam_ref``, or quarantine it with ``quarantine_reason``; ``header``
    holds the five header columns (accession_number, patient_id, patient_name, patient_sex,
    patient_birth_date) as its files now say."""
    conn.execute("UPDATE studies SET exam_ref = ?, quarantine_reason = ?, quarantine_detail = ?,"
                 " accession_number = ?, patient_id = ?, patient_name = ?, patient_sex = ?,"
                 " patient_birth_date = ? WHERE id = ?",
                 (exam_ref, quarantine_reason, quarantine_detail, header["accession_number"], header["patient_id"],
                  header["patient_name"], header["patient_sex"], header["patient_birth_date"], study_id))


def set_study_patient(conn: sqlite3.Connection, study_id: int, header: Mapping[str, str]) -> None:
    """The study's files now name another patient (a merge rewrote them): the four patient
    columns of ``header`` (patient_id, patient_name, patient_sex, patient_birth_date)."""
    conn.execute("UPDATE studies SET patient_id = ?, patient_name = ?, patient_sex = ?, patient_birth_date = ?"
                 " WHERE id = ?", (header["patient_id"], header["patient_name"], header["patient_sex"],
                                   header["patient_birth_date"], study_id))


def set_rejected(conn: sqlite3.Connection, study_id: int, at: str | None, by: str | None,
                 reason: str | None) -> None:
    """Reject the study (hide it from the quarantine), or, with Nones, restore it."""
    conn.execute("UPDATE studies SET rejected_at = ?, rejected_by = ?, rejected_reason = ? WHERE id = ?",
                 (at, by, reason, study_id))


def new_study_like(conn: sqlite3.Connection, study: Mapping[str, Any], uid: str, exam_ref: int,
                   first: str, last: str) -> int:
    """A study of its own for images leaving ``study``, filed to ``exam_ref``."""
    return int(conn.execute(
        "INSERT INTO studies (study_instance_uid, exam_ref, study_date, study_description, calling_ae, address,"
        " first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (uid, exam_ref, study["study_date"], study["study_description"], study["calling_ae"], study["address"],
         first, last)).lastrowid)


def new_series_like(conn: sqlite3.Connection, series: Mapping[str, Any], uid: str, study_id: int) -> int:
    """A series of its own, in ``study_id``, for images leaving ``series``."""
    return int(conn.execute(
        "INSERT INTO series (study_ref, series_instance_uid, modality, series_number, series_description,"
        " body_part, first_received_at, last_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (study_id, uid, series["modality"], series["series_number"], series["series_description"],
         series["body_part"], series["first_received_at"], series["last_received_at"])).lastrowid)


def move_series(conn: sqlite3.Connection, series_id: int, study_id: int) -> None:
    conn.execute("UPDATE series SET study_ref = ? WHERE id = ?", (study_id, series_id))


def move_instances(conn: sqlite3.Connection, instance_ids: list[int], series_id: int) -> None:
    conn.executemany("UPDATE instances SET series_ref = ? WHERE id = ?", [(series_id, i) for i in instance_ids])


def recount_series(conn: sqlite3.Connection, series_id: int) -> None:
    conn.execute("UPDATE series SET instance_count = (SELECT COUNT(*) FROM instances WHERE series_ref = :id)"
                 " WHERE id = :id", {"id": series_id})


def recount_study(conn: sqlite3.Connection, study_id: int) -> None:
    conn.execute("UPDATE studies SET series_count = (SELECT COUNT(*) FROM series WHERE study_ref = :id),"
                 " instance_count = (SELECT COALESCE(SUM(instance_count), 0) FROM series WHERE study_ref = :id)"
                 " WHERE id = :id", {"id": study_id})


def series_of_study(conn: sqlite3.Connection, study_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM series WHERE study_ref = ? ORDER BY first_received_at, id",
                        (study_id,)).fetchall()


def sibling_series(conn: sqlite3.Connection, series_id: int) -> list[sqlite3.Row]:
    """Every series of the study this series belongs to, in series-number order."""
    return conn.execute("SELECT * FROM series WHERE study_ref = (SELECT study_ref FROM series WHERE id = ?)"
                        " ORDER BY CAST(series_number AS INTEGER), id", (series_id,)).fetchall()
