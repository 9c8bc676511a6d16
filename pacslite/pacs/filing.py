"""ingest(): the one way an image enters pacslite, and the filing (归位) of what arrives.

Every image, whether it came by C-STORE, upload or legacy import, is a complete DICOM file
in the store's temporary area when :func:`ingest` is called. ``ingest`` walks the whole
dataset to its end (:mod:`pacslite.pacs.wellformed`: 0x0000 must mean the image can be read back)
and takes the header from the same pass, decides where the study belongs, renames the file into a generated path, and commits the
index rows in one transaction, with the count in its delivery's arrival (:mod:`pacslite.pacs.arrivals`,
audited once per association and study when the delivery ends). Only when it returns has the image been
accepted; any failure raises :class:`IngestError` with the DICOM status to answer, and leaves
no file outside the temporary area and no row.

Filing: an instance goes to an exam when its StudyInstanceUID is the exam's pre-assigned one,
or when its AccessionNumber and PatientID are the exam's. The patient's name, sex and birth
date in the header must agree with the registration (each compared when present), or the
study is quarantined as a possible wrong patient. Later instances follow their study.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from itertools import zip_longest
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_partial
from pydicom.filewriter import write_dataset
from pydicom.pixels import iter_pixels
from pydicom.tag import Tag

from ..core import audit, clock, db, names, storage
from ..core.uids import is_uid
from ..ris import exams, patients
from . import arrivals, capacity, index, routing, wellformed
from .index import Header, Placement, Source, StoredFile

log = logging.getLogger(__name__)

# DICOM C-STORE statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

CATEGORY = "dicom"
#: How pacslite marks its lossy off-site copies (DerivationDescription); see offsite.py.
OFFSITE_MARK = "pacslite off-site copy"
SUFFIX = ".dcm"

FILED, QUARANTINED, DUPLICATE, CONFLICT, RESTORED = "filed", "quarantined", "duplicate", "conflict", "restored"


class IngestError(Exception):
    """The image was not accepted; ``status`` is the DICOM status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Outcome:
    """What became of an accepted image."""

    result: str  # filed, quarantined, duplicate (same bytes again), conflict (kept aside), restored (back online)
    sop_instance_uid: str
    accession_number: str = ""  # the exam it was filed to
    reason: str = ""  # the quarantine reason


# ---------------------------------------------------------------- reading

_TAGS = ["SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
         "AccessionNumber", "PatientID", "PatientName", "PatientSex", "PatientBirthDate", "StudyDate", "StudyTime",
         "StudyID", "StudyDescription", "Modality", "SeriesNumber", "SeriesDescription", "InstanceNumber",
         "DerivationDescription", "BodyPartExamined"]


_TAG_NUMBERS = [tag_for_keyword(keyword) for keyword in _TAGS]
_KEPT_TAGS = frozenset(_TAG_NUMBERS)
_LAST_TAG = max(_TAG_NUMBERS)


def _past_last_tag(tag: int, _vr: str | None, _length: int) -> bool:
    """Stop reading at the first element after the last one filing needs, and so before the
    pixel data: on a CT image it skips half the header (the header read takes 0.54 instead
    of 0.71 ms)."""
    return tag > _LAST_TAG


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # a value its character set cannot decode: keep what we can show
        return "\ufffd"
    return names.printable(str(value if value is not None else ""))


def _name_groups(ds: Any) -> tuple[str, ...]:
    try:
        name = ds.get("PatientName")
    except Exception:
        return ("\ufffd",)
    if not name:
        return ()
    return tuple(names.printable(g or "") for g in (name.alphabetic, name.ideographic, name.phonetic))


def read_header(path: Path) -> Header:
    """The tags filing needs, read without the pixel data; raises IngestError if unreadable."""
    try:
        with open(path, "rb") as fp:
            ds = read_partial(fp, stop_when=_past_last_tag, specific_tags=_TAG_NUMBERS)
        return _header_of(ds, str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
    except (InvalidDicomError, AttributeError, ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        raise IngestError(CANNOT_UNDERSTAND, f"not a readable DICOM dataset: {exc}") from exc


def check_whole(path: Path) -> Header:
    """Walk the whole file (:func:`wellformed.check_file`: 0x0000 must mean it can be read back)
    and give the tags filing needs from the same pass; raises IngestError (0xC000) otherwise."""
    try:
        walked = wellformed.check_file(path, keep=_KEPT_TAGS)
    except (wellformed.Malformed, OSError) as exc:
        raise IngestError(CANNOT_UNDERSTAND, f"not a whole data set: {exc}") from exc
    ds = Dataset({tag: RawDataElement(Tag(tag), vr, len(value), value, 0, walked.implicit, walked.little_endian)
                  for tag, (vr, value) in walked.kept.items()})
    try:
        return _header_of(ds, walked.syntax)
    except (AttributeError, ValueError, KeyError, TypeError) as exc:
        raise IngestError(CANNOT_UNDERSTAND, f"not a readable DICOM dataset: {exc}") from exc


def _header_of(ds: Dataset, transfer_syntax: str) -> Header:
    if not is_uid(transfer_syntax):
        raise ValueError("no transfer syntax in the file meta information")
    return Header(
        sop_class_uid=_text(ds, "SOPClassUID"), sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"), series_instance_uid=_text(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=names.printable(transfer_syntax),
        accession_number=_text(ds, "AccessionNumber"), patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"), name_groups=_name_groups(ds),
        patient_sex=_text(ds, "PatientSex").upper(), patient_birth_date=_text(ds, "PatientBirthDate"),
        study_date=_text(ds, "StudyDate"), study_time=_text(ds, "StudyTime"), study_id=_text(ds, "StudyID"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"), series_number=_text(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"), instance_number=_text(ds, "InstanceNumber"),
        derivation_description=_text(ds, "DerivationDescription"), body_part=_text(ds, "BodyPartExamined").upper())



def check_identity(header: Header, sop_class_uid: str | None, sop_instance_uid: str | None) -> None:
    """The dataset must carry valid UIDs, and the ones the command announced; and it must not be
    a pacslite off-site copy (lossy: never filed back as a diagnostic original)."""
    if header.derivation_description.startswith(OFFSITE_MARK):
        raise IngestError(DATA_SET_MISMATCH, "a pacslite off-site copy (lossy) is not a diagnostic original")
    for keyword in ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid"):
        if not is_uid(getattr(header, keyword)):
            raise IngestError(DATA_SET_MISMATCH, f"{keyword} missing or not a valid UID")
    if sop_class_uid is not None and header.sop_class_uid != sop_class_uid:
        raise IngestError(DATA_SET_MISMATCH, "SOP Class UID differs from the one in the request")
    if sop_instance_uid is not None and header.sop_instance_uid != sop_instance_uid:
        raise IngestError(DATA_SET_MISMATCH, "SOP Instance UID differs from the one in the request")


# ---------------------------------------------------------------- the same image, encoded otherwise

#: Attributes that say how the pixels are encoded, not what they are.
_ENCODING_TAGS = {0x7FE00010, 0x00280006, 0xFFFCFFFC}  # PixelData, PlanarConfiguration, padding


def _canonical_header(ds: Any) -> bytes:
    """The data set without its pixels, encoded one fixed way (implicit VR little endian,
    undefined lengths): equal for the same values in any transfer syntax."""
    for tag in [t for t in ds.keys() if t in _ENCODING_TAGS or t.element == 0]:
        del ds[tag]
    for element in ds.iterall():
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = True, True
    write_dataset(out, ds)
    return out.getvalue()


def same_content(first: Path, second: Path) -> bool:
    """Whether two files hold the same image: equal pixels once decoded (frame by frame) and
    equal values in every other attribute. False whenever either cannot be decoded."""
    try:
        a, b = dcmread(first), dcmread(second)
        if ("PixelData" in a) != ("PixelData" in b):
            return False
        if "PixelData" in a:
            missing = object()
            for x, y in zip_longest(iter_pixels(first), iter_pixels(second), fillvalue=missing):
                if x is missing or y is missing or not np.array_equal(x, y):
                    return False
        return _canonical_header(a) == _canonical_header(b)
    except Exception:  # undecodable: not shown to be the same, so kept aside
        log.info("could not compare %s with %s", first, second, exc_info=True)
        return False


# ---------------------------------------------------------------- filing

def demographic_differences(header: Header, exam: sqlite3.Row) -> dict[str, dict[str, str]]:
    """Name, sex and birth date that disagree with the registered patient (absent: not compared)."""
    differences: dict[str, dict[str, str]] = {}
    if names.same_person_name(header.name_groups, exam["patient_name"]) is False:
        differences["name"] = {"header": header.patient_name, "registered": exam["patient_name"]}
    if header.patient_sex and header.patient_sex != exam["sex"]:
        differences["sex"] = {"header": header.patient_sex, "registered": exam["sex"]}
    registered_birth = (exam["birth_date"] or "").replace("-", "")
    if header.patient_birth_date and registered_birth and header.patient_birth_date != registered_birth:
        differences["birth_date"] = {"header": header.patient_birth_date, "registered": exam["birth_date"]}
    return differences


def place_study(conn: sqlite3.Connection, header: Header) -> Placement:
    """Where a study not seen before belongs: its exam, or quarantine with the reason."""
    by_uid = patients.find_exam(conn, study_uid=header.study_instance_uid)
    exam = by_uid
    if exam is None:
        if not header.accession_number:
            return Placement(reason="no_accession")
        exam = patients.find_exam(conn, accession=header.accession_number)
        if exam is None:
            return Placement(reason="unknown_accession", detail={"accession_number": header.accession_number})
    if exam["status"] == exams.CANCELLED:
        return Placement(reason="exam_cancelled", detail={"accession_number": exam["accession_number"]})
    if header.patient_id != exam["patient_id"] and (by_uid is None or header.patient_id) \
            and not patients.is_merged_into(conn, header.patient_id, exam["patient_ref"]):  # an old, merged ID
        return Placement(reason="patient_id_mismatch", detail={
            "accession_number": exam["accession_number"], "header": header.patient_id,
            "registered": exam["patient_id"]})
    differences = demographic_differences(header, exam)
    if differences:
        return Placement(reason="demographics_mismatch",
                         detail={"accession_number": exam["accession_number"], **differences})
    return Placement(exam_ref=exam["id"])


def _record(conn: sqlite3.Connection, header: Header, stored: StoredFile, source: Source, at: str,
            same_as: str | None = None) -> Outcome:
    """Write the index rows for an accepted file (inside the transaction); the audit row is its
    delivery's (:mod:`pacslite.pacs.arrivals`), except for a restore or a conflicting copy.

    ``same_as``: the hash of the stored copy this file was found to hold the same image as.
    """
    actor = audit.Actor(f"ae:{source.calling_ae}" if source.calling_ae else "upload", source.address)
    first = index.find_instance(conn, header.sop_instance_uid)
    if first is not None and first["sha256"] == stored.sha256 and first["released_at"]:
        # its online copy was released after archiving: the same bytes bring it back online
        index.bring_online(conn, first["id"], stored.path)
        audit.record(conn, actor, "image.restore", f"instance:{header.sop_instance_uid}",
                     patient_id=header.patient_id, detail={"sha256": stored.sha256, "path": stored.path})
        return Outcome(RESTORED, header.sop_instance_uid)
    if first is not None and first["sha256"] in (stored.sha256, same_as):
        return Outcome(DUPLICATE, header.sop_instance_uid)  # the same bytes, or the same image, again
    if first is not None and index.find_conflict(conn, header.sop_instance_uid, stored.sha256) is not None:
        return Outcome(DUPLICATE, header.sop_instance_uid)  # a copy kept aside already
    if first is not None:
        conflict_id = index.add_conflict(conn, first, header, stored, source, at)
        audit.record(conn, actor, "image.duplicate_conflict", f"instance:{header.sop_instance_uid}",
                     patient_id=header.patient_id, outcome="failure",
                     detail={"conflict": conflict_id, "sha256": stored.sha256, "first_sha256": first["sha256"]})
        return Outcome(CONFLICT, header.sop_instance_uid, reason="duplicate_conflict")
    study = index.find_study(conn, header.study_instance_uid)
    if study is None:
        study = index.add_study(conn, header, source, at, place_study(conn, header))
    arrival = arrivals.add(conn, source, study, header.patient_id, at)
    new_series = index.add_instance(conn, study, header, stored, source, at, arrival)
    if study["exam_ref"] is not None:
        exam = patients.find_exam(conn, exam_id=study["exam_ref"])
        exams.images_arrived(conn, exam, new_series, at)
        routing.on_filed(conn, study["id"], source.calling_ae, header.modality, at)
        outcome = Outcome(FILED, header.sop_instance_uid, accession_number=exam["accession_number"])
    else:
        outcome = Outcome(QUARANTINED, header.sop_instance_uid, reason=study["quarantine_reason"])
    arrivals.close_single(conn, source, arrival)  # audited here, or when its delivery ends
    return outcome


# ---------------------------------------------------------------- the way in

def ingest(conn: sqlite3.Connection, store: str | Path, tmp_file: Path, source: Source, *,
           sop_class_uid: str | None = None, sop_instance_uid: str | None = None,
           high_water_percent: float | None = None) -> Outcome:
    """Accept the complete DICOM file ``tmp_file`` (in the store's temporary area) or raise.

    ``sop_class_uid`` and ``sop_instance_uid`` are what the C-STORE request announced;
    ``high_water_percent``, the store's high-water mark (above it: 0xA700). On
    return the file is durable at a generated path and indexed; on IngestError the file is
    still in the temporary area (the caller removes it) and nothing else changed.
    """
    header = check_whole(tmp_file)
    check_identity(header, sop_class_uid, sop_instance_uid)
    if high_water_percent is not None and capacity.above_high_water(store, high_water_percent):
        raise IngestError(OUT_OF_RESOURCES, f"the store is filled to its high-water mark ({high_water_percent} %)")
    try:
        storage.fsync_file(tmp_file)
        size, sha256 = storage.sha256_file(tmp_file)
    except OSError as exc:
        raise IngestError(OUT_OF_RESOURCES, f"cannot secure the file: {exc}") from exc
    same_as = _same_image_as(conn, store, header.sop_instance_uid, tmp_file, sha256)
    try:
        relative = storage.place(store, tmp_file, CATEGORY, SUFFIX)
    except storage.StorageError as exc:
        raise IngestError(OUT_OF_RESOURCES, f"cannot store the file: {exc}") from exc
    stored = StoredFile(relative, size, sha256)
    at = clock.to_db(clock.now())
    try:
        outcome = db.group_transaction(conn, lambda shared: _record(shared, header, stored, source, at, same_as))
    except Exception as exc:
        _unplace(store, relative, tmp_file)
        log.exception("ingest of %s failed after the file was placed", header.sop_instance_uid)
        raise IngestError(OUT_OF_RESOURCES, f"cannot index the file: {exc}") from exc
    if outcome.result == DUPLICATE:
        storage.remove(store, relative)  # decided under the write lock, so two copies at once cannot both stay
    return outcome


def _same_image_as(conn: sqlite3.Connection, store: str | Path, sop_instance_uid: str, path: Path,
                   sha256: str) -> str | None:
    """The hash of the stored copy of this instance that holds the same image in another
    encoding (a re-send in another transfer syntax), or None. Decoded outside the write lock."""
    first = index.find_instance(conn, sop_instance_uid)
    if first is None or first["sha256"] == sha256 or first["released_at"]:
        return None
    return str(first["sha256"]) if same_content(storage.resolve(store, first["storage_path"]), path) else None


def ingest_bytes(conn: sqlite3.Connection, store: str | Path, data: bytes, source: Source,
                 high_water_percent: float | None = None) -> Outcome:
    """Ingest a DICOM file given as bytes (upload, import): written to the temporary area first."""
    try:
        tmp_file = storage.write_tmp(store, data, SUFFIX)
    except storage.StorageError as exc:
        raise IngestError(OUT_OF_RESOURCES, f"cannot write the file: {exc}") from exc
    try:
        return ingest(conn, store, tmp_file, source, high_water_percent=high_water_percent)
    finally:
        tmp_file.unlink(missing_ok=True)


def _unplace(store: str | Path, relative: str, tmp_file: Path) -> None:
    """Put a placed file back into the temporary area after its transaction failed."""
    try:
        storage.resolve(store, relative).rename(tmp_file)
    except OSError:
        storage.remove(store, relative)


# ---------------------------------------------------------------- start-up

#: With other processes sharing the store, a file is left over only when older than this: an
#: image's transaction commits (or fails, removing its file) well within it, the write lock's
#: timeout included.
SHARED_STORE_GRACE_SECONDS = 600.0


def recover(conn: sqlite3.Connection, store: str | Path, shared: bool = False) -> tuple[int, int]:
    """Undo what a killed process left: (temporary files removed, unindexed files removed).

    A file is placed before its transaction commits; if the process died in between, the
    file has no row and was never acknowledged. Such files can only be in the day folders
    from the last committed image on, so only those are scanned. ``shared``: other processes
    may be storing into the same folders now (PostgreSQL), so only files older than
    SHARED_STORE_GRACE_SECONDS are taken for leftovers.
    """
    grace = SHARED_STORE_GRACE_SECONDS if shared else 0.0
    cutoff = time.time() - grace
    removed_tmp = storage.clean_tmp(store, grace)
    last = clock.from_db(index.last_received_at(conn))
    since = (last - timedelta(days=1)).replace(hour=0, minute=0, second=0) if last else None
    known = index.paths_received_since(conn, clock.to_db(since)) if since else set()
    root = Path(store)
    removed = 0
    for day_dir in sorted((root / CATEGORY).glob("*/*/*")):
        if since is not None and day_dir.relative_to(root / CATEGORY).as_posix() < since.strftime("%Y/%m/%d"):
            continue  # days before the last commit: every file there was committed
        for entry in day_dir.iterdir():
            relative = entry.relative_to(root).as_posix()
            if entry.is_file() and relative not in known and (not shared or storage.modified_at(entry) < cutoff):
                log.warning("removing %s: placed but never committed (the process stopped in between)", relative)
                entry.unlink()
                removed += 1
    return removed_tmp, removed
