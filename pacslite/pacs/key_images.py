"""Key images (关键图像): images the radiologist marks while reporting, with a short note and the
window they were seen in. They show beside the report and on the printed 图文报告; and once a
final version of the report is signed, they are stored in the study as a DICOM **Key Object
Selection** document (KOS, title "Of Interest", PS3.3 A.35.4), filed like any image through
:func:`filing.ingest`, so that workstations, Q/R and OHIF see them.

Storing the KOS is a background duty (:func:`store_due`): a signature (in :mod:`ris.reports`,
which knows nothing of images) is followed within seconds by the document of that version, and
a failure is tried again. An amendment signed with other key images stores a new document in
the same series; the old one stays.
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any, Mapping

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from ..core import audit, clock, names
from ..core.db import transaction
from ..core.validation import N_, Conflict
from ..ris import patients
from . import filing, imaging
from .index import Source

log = logging.getLogger(__name__)

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document Storage
#: The KOS's series: one per exam, derived from its StudyInstanceUID's root.
SERIES_NUMBER = "9901"
NOTE_MAX = 200
#: How many key images a report may have (the printed page lays out 2–6).
MAX_KEYS = 6
BATCH = 5


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT k.*, i.sop_instance_uid, i.sop_class_uid, se.series_instance_uid, se.id AS series_id,"
                        " i.instance_number, st.study_instance_uid FROM key_images k JOIN instances i"
                        " ON i.id = k.instance_ref JOIN series se ON se.id = i.series_ref"
                        " JOIN studies st ON st.id = se.study_ref WHERE k.exam_ref = ? ORDER BY k.id LIMIT ?",
                        (exam_id, MAX_KEYS)).fetchall()


def mark(conn: sqlite3.Connection, actor: audit.Actor, instance_id: int, data: Mapping[str, Any]) -> int:
    """Mark an image (its ``frame``) of an exam as a key image, with ``note`` and the window
    (``center``, ``width``) it was seen in; marked again, its note and window change. Refused
    once the exam has MAX_KEYS, and for an image not filed to an exam."""
    instance = imaging.get_instance(conn, instance_id)
    if instance is None or instance["exam_ref"] is None:
        raise Conflict(N_("Only an image filed to an exam can be a key image."))
    frame_text = str(data.get("frame") or "0")
    frame = int(frame_text) if frame_text.isdigit() else 0
    note = str(data.get("note") or "").strip()[:NOTE_MAX]
    center = imaging.window_value(data.get("center"), "window")
    width = imaging.window_value(data.get("width"), "window")
    exam = patients.find_exam(conn, exam_id=instance["exam_ref"])
    now = clock.to_db(clock.now())
    with transaction(conn):
        found = conn.execute("SELECT id FROM key_images WHERE exam_ref = ? AND instance_ref = ? AND frame = ?",
                             (exam["id"], instance_id, frame)).fetchone()
        if found is None:
            if conn.execute("SELECT COUNT(*) FROM key_images WHERE exam_ref = ?", (exam["id"],)).fetchone()[0] >= MAX_KEYS:
                raise Conflict(N_("A report has at most %(count)d key images."), count=MAX_KEYS)
            key_id = int(conn.execute(
                "INSERT INTO key_images (exam_ref, instance_ref, frame, center, width, note, marked_by, marked_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (exam["id"], instance_id, frame, center, width, note, actor.name, now)).lastrowid)
        else:
            key_id = found["id"]
            conn.execute("UPDATE key_images SET center = ?, width = ?, note = ?, marked_by = ?, marked_at = ?"
                         " WHERE id = ?", (center, width, note, actor.name, now, key_id))
        audit.record(conn, actor, "report.key_image", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"instance": instance["sop_instance_uid"], "frame": frame, "note": note})
    return key_id


def unmark(conn: sqlite3.Connection, actor: audit.Actor, key_id: int) -> None:
    with transaction(conn):
        row = conn.execute("SELECT k.*, e.accession_number, p.patient_id FROM key_images k JOIN exams e"
                           " ON e.id = k.exam_ref JOIN patients p ON p.id = e.patient_ref WHERE k.id = ?",
                           (key_id,)).fetchone()
        if row is None:
            raise Conflict(N_("This key image is no longer marked."))
        conn.execute("DELETE FROM key_images WHERE id = ?", (key_id,))
        audit.record(conn, actor, "report.key_image_remove", f"exam:{row['accession_number']}",
                     patient_id=row["patient_id"], detail={"instance": row["instance_ref"], "frame": row["frame"]})


# ---------------------------------------------------------------- the Key Object Selection document

def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def kos_dataset(exam: Mapping[str, Any], version: Mapping[str, Any], keys: list[Mapping[str, Any]],
                at: datetime, timezone: str) -> Dataset:
    """The KOS of a signed version: "Of Interest" (DCM 113000), each key image referenced, with
    its note as a text item; in the study of the (first) key image, a series of its own
    (modality KO), the evidence listed per study and series."""
    local = at.astimezone(clock.zone(timezone))
    study_uid = keys[0]["study_instance_uid"]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = KOS_SOP_CLASS, generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "pacslite key objects"])
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "KO", SERIES_NUMBER, str(version["version"])
    ds.SeriesDescription = "Key images"
    ds.AccessionNumber, ds.PatientID = exam["accession_number"], exam["patient_id"]
    ds.PatientName = names.dicom_person_name(exam["patient_name"])
    ds.PatientBirthDate = (exam["birth_date"] or "").replace("-", "")
    ds.PatientSex = exam["sex"] or ""
    ds.StudyDate = ds.ContentDate = local.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = local.strftime("%H%M%S")
    ds.StudyID = exam["accession_number"][:16]  # a DICOMDIR needs one; the study's own is not known here
    ds.ReferringPhysicianName, ds.Manufacturer = "", "pacslite"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("113000", "DCM", "Of Interest")]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = [template]
    by_study: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    content = []
    for key in keys:
        by_study.setdefault(key["study_instance_uid"], {}).setdefault(key["series_instance_uid"], []).append(key)
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = key["sop_class_uid"], key["sop_instance_uid"]
        if key["frame"]:
            reference.ReferencedFrameNumber = str(key["frame"] + 1)
        item.ReferencedSOPSequence = [reference]
        content.append(item)
    notes = [key for key in keys if key["note"]]
    if notes:
        text_item = Dataset()
        text_item.RelationshipType, text_item.ValueType = "CONTAINS", "TEXT"
        text_item.ConceptNameCodeSequence = [_code("113012", "DCM", "Key Object Description")]
        text_item.TextValue = "\n".join(f"{n + 1}: {key['note']}" for n, key in enumerate(keys) if key["note"])[:1024]
        content.insert(0, text_item)
    ds.ContentSequence = content
    evidence_items = []
    for study, by_series in by_study.items():
        evidence = Dataset()
        evidence.StudyInstanceUID = study
        series_items = []
        for series_uid, series_keys in by_series.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            references = []
            for key in series_keys:
                reference = Dataset()
                reference.ReferencedSOPClassUID = key["sop_class_uid"]
                reference.ReferencedSOPInstanceUID = key["sop_instance_uid"]
                references.append(reference)
            series.ReferencedSOPSequence = references
            series_items.append(series)
        evidence.ReferencedSeriesSequence = series_items
        evidence_items.append(evidence)
    ds.CurrentRequestedProcedureEvidenceSequence = evidence_items
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def _bytes(ds: Dataset) -> bytes:
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


#: Versions signed this long ago and more are not looked at again (the duty runs every few
#: seconds; a document that could not be stored for a week needs a person anyway).
LOOK_BACK = timedelta(days=7)


def _due(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Final versions signed (in LOOK_BACK) with key images whose document is not stored yet:
    one index range of recent signatures."""
    since = clock.to_db(clock.now() - LOOK_BACK)
    return conn.execute(
        "SELECT v.* FROM report_versions v INDEXED BY report_versions_signed WHERE v.signed_at >= ?"
        " AND v.status = 'final'"
        " AND EXISTS (SELECT 1 FROM key_images k WHERE k.exam_ref = v.exam_ref)"
        " AND NOT EXISTS (SELECT 1 FROM key_object_documents d WHERE d.version_ref = v.id)"
        " AND v.version = (SELECT MAX(w.version) FROM report_versions w WHERE w.exam_ref = v.exam_ref"
        "  AND w.status = 'final') ORDER BY v.signed_at LIMIT ?", (since, BATCH)).fetchall()


def store_due(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> int:
    """Store the KOS of each newest final version signed with key images (the background
    duty); how many were stored. A version whose key images and notes are those of the last
    document stores none again (an amendment of the text only)."""
    stored = 0
    for version in _due(conn):
        exam = patients.find_exam(conn, exam_id=version["exam_ref"])
        keys = of_exam(conn, exam["id"])
        fingerprint = _fingerprint(keys)
        last = conn.execute("SELECT d.fingerprint FROM key_object_documents d JOIN report_versions v"
                            " ON v.id = d.version_ref WHERE v.exam_ref = ? ORDER BY d.id DESC LIMIT 1",
                            (exam["id"],)).fetchone()
        if last is not None and last["fingerprint"] == fingerprint:
            _record(conn, version, "", len(keys), fingerprint)
            continue
        ds = kos_dataset(exam, version, keys, clock.now(), settings["TIMEZONE"])
        try:
            filing.ingest_bytes(conn, settings["STORAGE_DIR"], _bytes(ds), Source("pacslite:key-images"))
        except filing.IngestError as exc:
            log.warning("key images of %s not stored: %s", exam["accession_number"], exc)
            continue
        _record(conn, version, str(ds.SOPInstanceUID), len(keys), fingerprint)
        stored += 1
    return stored


def _fingerprint(keys: list[Mapping[str, Any]]) -> str:
    text = "\n".join(f"{k['sop_instance_uid']}:{k['frame']}:{k['note']}" for k in keys)
    return hashlib.sha256(text.encode()).hexdigest()


def _record(conn: sqlite3.Connection, version: Mapping[str, Any], sop_instance_uid: str, images: int,
            fingerprint: str) -> None:
    with transaction(conn):
        conn.execute("INSERT INTO key_object_documents (version_ref, sop_instance_uid, images, fingerprint, stored_at)"
                     " VALUES (?, ?, ?, ?, ?)",
                     (version["id"], sop_instance_uid, images, fingerprint, clock.to_db(clock.now())))


def documents_of(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT d.*, v.version FROM key_object_documents d JOIN report_versions v ON v.id = d.version_ref"
                        " WHERE v.exam_ref = ? AND d.sop_instance_uid <> '' ORDER BY d.id", (exam_id,)).fetchall()

