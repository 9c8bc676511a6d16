"""Correcting the filing (纠正归位): ranked candidate exams for a quarantined study, moving a
study to another exam with its files' headers rewritten, undoing that, and rejecting garbage.

A re-file writes a new file for every instance (PatientID, PatientName, PatientBirthDate,
PatientSex and AccessionNumber from the exam; the old values in the Original Attributes
Sequence), durably, before one transaction points the index at the new files and records
the change. The original files stay on disk, referenced by ``refiled_files``, so a re-file
can be undone; nothing is deleted in one step.
"""
from __future__ import annotations

import copy
import io
import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from rapidfuzz.distance import DamerauLevenshtein

from ..core import alerts, audit, clock, names, storage
from ..ris import exams, patients, worklist
from . import arrivals, filing, index
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text

log = logging.getLogger(__name__)

#: Header attributes a re-file sets from the exam, and the study columns that mirror them.
REWRITTEN = {"PatientID": "patient_id", "PatientName": "patient_name", "PatientBirthDate": "patient_birth_date",
             "PatientSex": "patient_sex", "AccessionNumber": "accession_number"}
CANDIDATE_WINDOW = timedelta(days=3)
MINIMUM_SCORE = 30


# ---------------------------------------------------------------- candidates

@dataclass(frozen=True)
class Candidate:
    exam: sqlite3.Row
    score: int
    reasons: tuple[str, ...]  # evidence for it, codes of EVIDENCE
    against: tuple[str, ...] = ()  # evidence against it


#: Every piece of evidence the ranking weighs, and how much it tells (negative: against). A
#: study in the quarantine carries something that disagrees with its exam; which of its values
#: are right is the question. Values that come from the receipt's barcode or the worklist (the
#: exam's own accession number with a valid check digit, the worklist's pre-assigned Study
#: Instance UID, a step the station reported) are rarely wrong; the patient block is what a
#: console most often carries over from the previous patient, and equal names are common in a
#: Chinese department, so they count for less. Near accession numbers count only where no exam
#: has the number exactly: at a busy department many numbers are two edits apart. An exam that
#: already holds its own study from the same station that day is most likely not this one's; a
#: station that uses the worklist can only have picked an exam it was offered. The time is the
#: acquisition's (the header's Study Date and Time), or the arrival's where the header has none.
#: The table is shown in the user guide (docs/user-guide.md, "How candidates are ranked").
EVIDENCE = {
    "study_uid_equal": 80, "accession_equal": 80, "accession_equal_unchecked": 50, "mpps_from_caller": 40,
    "accession_typo": 35, "patient_id_equal": 25, "awaiting_images": 15, "patient_id_typo": 15,
    "accession_close": 10, "offered_to_caller": 10, "scheduled_within_hours": 10, "station_is_caller": 10,
    "same_modality": 10, "birth_date_equal": 10, "name_similar": 10, "scheduled_within_day": 5,
    "body_part_equal": 5, "sex_equal": 3,
    "holds_study_from_caller": -40, "other_modality": -15, "not_offered_to_caller": -10, "body_part_differs": -10,
    "birth_date_differs": -5, "sex_differs": -5,
}
#: The first candidate is "clear" (one-click filing) when it leads the second by this much.
CLEAR_LEAD = 30
SCHEDULED_NEAR = timedelta(hours=2)
SAME_DAY = timedelta(hours=12)
#: Body regions: a DICOM Body Part Examined and the words a desk writes for the exam's body part
#: (in either language) are compared by region. Longer words are matched first (胸椎 is the spine).
BODY_REGIONS = {
    "SPINE": ("SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "颈椎", "胸椎", "腰椎", "骶椎", "脊柱", "椎"),
    "HEAD": ("HEAD", "BRAIN", "SKULL", "头", "颅", "脑"),
    "NECK": ("NECK", "颈"),
    "CHEST": ("CHEST", "THORAX", "LUNG", "胸", "肺"),
    "BREAST": ("BREAST", "乳"),
    "ABDOMEN": ("ABDOMEN", "LIVER", "KIDNEY", "腹", "肝", "肾"),
    "PELVIS": ("PELVIS", "HIP", "盆", "髋"),
    "LIMB": ("EXTREMITY", "SHOULDER", "ELBOW", "WRIST", "HAND", "KNEE", "ANKLE", "FOOT", "LEG", "ARM",
             "肢", "肩", "肘", "腕", "手", "膝", "踝", "足", "腿", "臂"),
}
_REGION_OF = {word: region for region, words in BODY_REGIONS.items() for word in words}
_REGION_WORDS = re.compile("|".join(sorted(map(re.escape, _REGION_OF), key=len, reverse=True)))


def body_regions(text_value: str) -> set[str]:
    """The body regions a body part names: ``"CHEST"`` and ``"胸部"`` → {"CHEST"}; unknown → empty."""
    return {_REGION_OF[match.group(0)] for match in _REGION_WORDS.finditer(text_value.upper())}


def _distance(header: str, registered: str) -> int | None:
    if not header or not registered:
        return None
    return DamerauLevenshtein.distance(header.upper(), registered.upper())


@dataclass(frozen=True)
class _Context:
    """What the ranking knows about the study beyond its header."""

    acquired: datetime  # the header's Study Date and Time, else the arrival
    modalities: set[str]
    regions: set[str]  # the body regions of its series
    accession_known: bool  # some exam has the study's accession number exactly
    patient_id_known: bool  # some candidate's patient has the study's patient ID exactly
    accession_checked: bool  # the study's accession has pacslite's form and a valid check digit
    stepped: set[int]  # exams the calling station reported a step of (MPPS)
    holding: set[int]  # exams holding another study from the calling station that day
    offered: set[int]  # exams the worklist had offered to the calling station
    uses_worklist: bool  # the calling station queried the worklist that day


def _identifiers(study: Mapping[str, Any], exam: sqlite3.Row, known: _Context) -> list[str]:
    found = []
    if exam["study_instance_uid"] and exam["study_instance_uid"] == study["study_instance_uid"]:
        found.append("study_uid_equal")
    accession = _distance(study["accession_number"], exam["accession_number"])
    if accession == 0:
        found.append("accession_equal" if known.accession_checked else "accession_equal_unchecked")
    elif accession == 1 and not known.accession_known:
        found.append("accession_typo")
    elif accession == 2 and not known.accession_known:
        found.append("accession_close")
    if exam["id"] in known.stepped:
        found.append("mpps_from_caller")
    patient_id = _distance(study["patient_id"], exam["patient_id"])
    if patient_id == 0:
        found.append("patient_id_equal")
    elif patient_id == 1 and not known.patient_id_known:
        found.append("patient_id_typo")
    return found


def _either(for_it: list[str], against: list[str], agrees: bool, yes: str, no: str) -> None:
    (for_it if agrees else against).append(yes if agrees else no)


def _circumstances(study: Mapping[str, Any], exam: sqlite3.Row, known: _Context) -> tuple[list[str], list[str]]:
    """The evidence of the exam's state, time, station, modality and body part, and of the
    patient's birth date and sex: (for, against)."""
    for_it: list[str] = []
    against: list[str] = []
    if exam["instance_count"] == 0 and exam["status"] in (exams.SCHEDULED, exams.IN_PROGRESS):
        for_it.append("awaiting_images")
    if exam["id"] in known.holding:
        against.append("holds_study_from_caller")
    if exam["id"] in known.offered:
        for_it.append("offered_to_caller")
    elif known.uses_worklist:
        against.append("not_offered_to_caller")
    apart = abs(clock.from_db(exam["scheduled_at"]) - known.acquired)
    if apart <= SCHEDULED_NEAR:
        for_it.append("scheduled_within_hours")
    elif apart <= timedelta(days=1):
        for_it.append("scheduled_within_day")
    if exam["station_ae"] and exam["station_ae"] == study["calling_ae"]:
        for_it.append("station_is_caller")
    if exam["dicom_modality"] and known.modalities:
        _either(for_it, against, exam["dicom_modality"] in known.modalities, "same_modality", "other_modality")
    regions = body_regions(exam["body_part"] or "")
    if regions and known.regions:
        _either(for_it, against, bool(regions & known.regions), "body_part_equal", "body_part_differs")
    birth = (exam["birth_date"] or "").replace("-", "")
    if study["patient_birth_date"] and birth:
        _either(for_it, against, study["patient_birth_date"] == birth, "birth_date_equal", "birth_date_differs")
    if study["patient_sex"] in ("M", "F") and exam["sex"] in ("M", "F"):
        _either(for_it, against, study["patient_sex"] == exam["sex"], "sex_equal", "sex_differs")
    return for_it, against


def _weigh(study: Mapping[str, Any], exam: sqlite3.Row, known: _Context,
           minimum: int) -> tuple[int, list[str], list[str]] | None:
    """The exam's score and the evidence for and against it, in display order; None when it
    cannot reach ``minimum`` even with a name match (the costly comparison is then not made)."""
    identifiers = _identifiers(study, exam, known)
    for_it, against = _circumstances(study, exam, known)
    score = sum(EVIDENCE[code] for code in identifiers + for_it + against)
    if score + EVIDENCE["name_similar"] < minimum:
        return None
    name = ["name_similar"] if names.same_person_name(tuple(study["patient_name"].split("=")),
                                                       exam["patient_name"]) else []
    return score + sum(EVIDENCE[code] for code in name), identifiers + name + for_it, against


def acquired_at(study: Mapping[str, Any], tz_name: str) -> datetime:
    """When the study was acquired: its header's Study Date and Time in the department's time
    zone; the arrival where the header has no usable time or one more than a day from it."""
    arrived = clock.from_db(study["first_received_at"])
    match = re.fullmatch(r"(\d{8})", study["study_date"] or "")
    time_match = re.match(r"(\d{2})(\d{2})?(\d{2})?", study["study_time"] or "")
    if not match or not time_match:
        return arrived
    try:
        local = datetime.strptime(match.group(1), "%Y%m%d").replace(
            hour=int(time_match.group(1)), minute=int(time_match.group(2) or 0), second=int(time_match.group(3) or 0),
            tzinfo=clock.zone(tz_name))
    except ValueError:
        return arrived
    return local if abs(local - arrived) <= timedelta(days=1) else arrived


def _context(conn: sqlite3.Connection, study: Mapping[str, Any], rows: list[sqlite3.Row],
             tz_name: str) -> _Context:
    arrived = clock.from_db(study["first_received_at"])
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" * len(ids))
    stepped = {r[0] for r in conn.execute(
        f"SELECT DISTINCT exam_ref FROM mpps WHERE exam_ref IN ({marks}) AND calling_ae = ?",
        (*ids, study["calling_ae"]))} if ids and study["calling_ae"] else set()
    holding = {r[0] for r in conn.execute(
        f"SELECT DISTINCT exam_ref FROM studies WHERE exam_ref IN ({marks}) AND calling_ae = ? AND id <> ?"
        f" AND first_received_at >= ? AND first_received_at <= ?",
        (*ids, study["calling_ae"], study["id"], clock.to_db(arrived - SAME_DAY), clock.to_db(arrived + SAME_DAY)))} \
        if ids and study["calling_ae"] else set()
    offered, uses_worklist = worklist.offered(conn, study["calling_ae"], ids, arrived)
    series = conn.execute("SELECT DISTINCT modality, body_part FROM series WHERE study_ref = ?",
                          (study["id"],)).fetchall()
    accession = study["accession_number"]
    return _Context(
        acquired=acquired_at(study, tz_name),
        modalities={r[0] for r in series if r[0]},
        regions=set().union(*(body_regions(r[1]) for r in series)),
        accession_known=bool(accession) and any(row["accession_number"] == accession for row in rows),
        patient_id_known=bool(study["patient_id"]) and any(row["patient_id"] == study["patient_id"] for row in rows),
        accession_checked=patients.is_valid_accession(accession, re.match(r"[A-Z]*", accession).group(0)),
        stepped=stepped, holding=holding, offered=offered, uses_worklist=uses_worklist)


def candidates(conn: sqlite3.Connection, study: Mapping[str, Any], tz_name: str, limit: int = 5) -> list[Candidate]:
    """Exams the study may belong to, best first, each with the evidence for and against it
    (:data:`EVIDENCE`): exams scheduled within three days of the study's arrival, or carrying
    its accession number, patient ID or Study Instance UID; not cancelled, not the exam it is
    filed to now. ``tz_name``: the department's time zone (the header's times are local)."""
    arrived = clock.from_db(study["first_received_at"])
    # index lookups joined by UNION: an OR across exams and patients would read every exam;
    # only the columns the ranking reads (a week of exams), the whole row for the few kept
    rows = conn.execute(
        "SELECT e.id, e.accession_number, e.study_instance_uid, e.dicom_modality, e.scheduled_at, e.station_ae,"
        " e.status, e.instance_count, e.body_part, p.patient_id, p.name AS patient_name, p.sex, p.birth_date"
        " FROM exams e JOIN patients p ON p.id = e.patient_ref"
        " WHERE e.id IN (SELECT id FROM exams WHERE scheduled_at >= ? AND scheduled_at < ?"
        " UNION SELECT id FROM exams WHERE accession_number = ?"
        " UNION SELECT id FROM exams WHERE study_instance_uid = ?"
        " UNION SELECT x.id FROM exams x JOIN patients px ON px.id = x.patient_ref WHERE px.patient_id = ?)"
        " AND e.status <> ? AND e.id IS NOT ?",
        (clock.to_db(arrived - CANDIDATE_WINDOW), clock.to_db(arrived + CANDIDATE_WINDOW), study["accession_number"],
         study["study_instance_uid"], study["patient_id"], exams.CANCELLED, study["exam_ref"])).fetchall()
    known = _context(conn, study, rows, tz_name)
    ranked = []
    for exam in rows:
        weighed = _weigh(study, exam, known, MINIMUM_SCORE)
        if weighed is not None and weighed[0] >= MINIMUM_SCORE:
            score, for_it, against = weighed
            distance = abs(clock.from_db(exam["scheduled_at"]) - known.acquired)
            ranked.append((-score, distance, exam["id"], score, tuple(for_it), tuple(against)))
    ranked.sort(key=lambda item: item[:3])
    return [Candidate(patients.find_exam(conn, exam_id=exam_id), score, for_it, against)
            for _, _, exam_id, score, for_it, against in ranked[:limit]]


def is_clear(ranked: list[Candidate]) -> bool:
    """Whether the first candidate leads the second by :data:`CLEAR_LEAD` (or stands alone):
    then it may be filed with one click; else the staff compare the images first."""
    return bool(ranked) and (len(ranked) == 1 or ranked[0].score - ranked[1].score >= CLEAR_LEAD)


@dataclass(frozen=True)
class Prior:
    """A candidate patient's most recent images, for comparing faces before choosing."""

    exam: sqlite3.Row  # the exam the images are filed to
    study: sqlite3.Row
    series: list[sqlite3.Row]  # at most COMPARED_SERIES


#: Series shown of each study in the image comparison.
COMPARED_SERIES = 3
#: The studies of a patient looked through for one of the same body region and modality.
_PRIOR_LOOKUP = 20


def priors_for_comparison(conn: sqlite3.Connection, study: Mapping[str, Any],
                          ranked: list[Candidate]) -> dict[int, Prior | None]:
    """For each candidate (by exam id), its patient's most recent other study with images,
    preferring one of the study's body region and modality; None when the patient has none.
    Read from each patient's newest studies only (index lookups), so a close call shows faces
    of the same body part side by side."""
    series = conn.execute("SELECT DISTINCT modality, body_part FROM series WHERE study_ref = ?",
                          (study["id"],)).fetchall()
    modalities = {r[0] for r in series if r[0]}
    regions = set().union(*(body_regions(r[1]) for r in series))
    found: dict[int, Prior | None] = {}
    for candidate in ranked:
        rows = conn.execute(
            "SELECT st.*, e.id AS prior_exam, e.body_part AS exam_body_part FROM studies st"
            " JOIN exams e ON e.id = st.exam_ref"
            " WHERE e.patient_ref = ? AND st.id <> ? AND st.rejected_at IS NULL AND st.instance_count > 0"
            " ORDER BY st.first_received_at DESC LIMIT ?",
            (candidate.exam["patient_ref"], study["id"], _PRIOR_LOOKUP)).fetchall()
        if not rows:
            found[candidate.exam["id"]] = None
            continue
        shown = {row["id"]: conn.execute("SELECT modality, body_part FROM series WHERE study_ref = ?",
                                         (row["id"],)).fetchall() for row in rows}

        def likeness(row: sqlite3.Row) -> int:
            kinds = shown[row["id"]]
            its_regions = body_regions(row["exam_body_part"]).union(*(body_regions(k[1]) for k in kinds))
            return 2 * bool(regions & its_regions) + bool(modalities & {k[0] for k in kinds})
        best = max(rows, key=likeness)  # max keeps the newest among equals
        found[candidate.exam["id"]] = Prior(patients.find_exam(conn, exam_id=best["prior_exam"]), best,
                                            index.series_of_study(conn, best["id"])[:COMPARED_SERIES])
    return found


def quarantine_with_candidates(conn: sqlite3.Connection, tz_name: str, limit: int = 500,
                               offset: int = 0) -> list[dict[str, Any]]:
    """The quarantine (:func:`index.quarantine`), each study with its ranked candidates (about
    15 ms a study at the paper's scale: callers page it)."""
    items = index.quarantine(conn, limit, offset)
    for item in items:
        item["candidates"] = candidates(conn, item, tz_name) if item["kind"] == "study" else []
    return items


# ---------------------------------------------------------------- looking up

def get_study(conn: sqlite3.Connection, study_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
    if row is None:
        raise NotFound(f"study {study_id}")
    return row


def instances_of_study(conn: sqlite3.Connection, study_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT i.* FROM instances i JOIN series s ON s.id = i.series_ref WHERE s.study_ref = ?"
                        " ORDER BY i.id", (study_id,)).fetchall()


def refiling_study(conn: sqlite3.Connection, refiling_id: int) -> int:
    """The study a re-filing concerns (the one its page shows)."""
    row = conn.execute("SELECT study_ref, from_study_ref FROM refilings WHERE id = ?", (refiling_id,)).fetchone()
    if row is None:
        raise NotFound(f"refiling {refiling_id}")
    return int(row["from_study_ref"] or row["study_ref"])


def refilings_of_study(conn: sqlite3.Connection, study_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT r.*, f.accession_number AS from_accession, t.accession_number AS to_accession FROM refilings r"
        " LEFT JOIN exams f ON f.id = r.from_exam_ref JOIN exams t ON t.id = r.to_exam_ref"
        " WHERE r.study_ref = ? ORDER BY r.id DESC", (study_id,)).fetchall()


def studies_of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM studies WHERE exam_ref = ? ORDER BY first_received_at", (exam_id,)).fetchall()


# ---------------------------------------------------------------- rewriting a file

def new_header_values(exam: Mapping[str, Any]) -> dict[str, str]:
    """The five attributes as the exam says they are."""
    return {"PatientID": exam["patient_id"], "PatientName": names.dicom_person_name(exam["patient_name"]),
            "PatientBirthDate": (exam["birth_date"] or "").replace("-", ""), "PatientSex": exam["sex"] or "",
            "AccessionNumber": exam["accession_number"]}


def rewrite(path: Path, values: Mapping[str, str], *, source: str, at: str) -> bytes:
    """The file with ``values`` set and the old ones in a new Original Attributes Sequence
    item (reason CORRECT); everything else, pixel data and transfer syntax included, as it was."""
    ds = dcmread(path)
    old = Dataset()
    for keyword in values:
        if keyword in ds:
            old[keyword] = copy.deepcopy(ds[keyword])  # setting the new value changes the element in place
    needs_unicode = any(not v.isascii() for v in values.values())
    if needs_unicode and ds.get("SpecificCharacterSet", "") not in ("ISO_IR 192", "GB18030"):
        ds.decode()  # every string decoded with the old character set before the set changes
        if "SpecificCharacterSet" in ds:
            old.SpecificCharacterSet = ds.SpecificCharacterSet
        ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([old])
    item.AttributeModificationDateTime = clock.from_db(at).strftime("%Y%m%d%H%M%S")
    item.ModifyingSystem = "pacslite"
    item.ReasonForTheAttributeModification = "CORRECT"
    item.SourceOfPreviousValues = source[:64]
    if "OriginalAttributesSequence" in ds:
        ds.OriginalAttributesSequence.append(item)
    else:
        ds.OriginalAttributesSequence = Sequence([item])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def original_attributes(store: str | Path, study_id: int, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """What the study's first file keeps in its Original Attributes Sequence: when, why, by
    which system, and the values it had before."""
    instances = instances_of_study(conn, study_id)
    if not instances:
        return []
    try:
        ds = dcmread(storage.resolve(store, instances[0]["storage_path"]), stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError):  # the scrub reports unreadable files; the page still opens
        return []
    items = []
    for item in ds.get("OriginalAttributesSequence", []):
        values = {}
        for old in item.get("ModifiedAttributesSequence", []):
            values.update({element.keyword: str(element.value) for element in old if element.keyword})
        items.append({"at": str(item.get("AttributeModificationDateTime", "")),
                      "reason": str(item.get("ReasonForTheAttributeModification", "")),
                      "system": str(item.get("ModifyingSystem", "")), "values": values})
    return items


# ---------------------------------------------------------------- re-file and undo

def _recount(conn: sqlite3.Connection, exam_id: int) -> None:
    """Count the exam's images again from the index (after studies moved)."""
    row = conn.execute("SELECT COALESCE(SUM(series_count), 0), COALESCE(SUM(instance_count), 0),"
                       " MIN(first_received_at), MAX(last_received_at) FROM studies WHERE exam_ref = ?",
                       (exam_id,)).fetchone()
    exam = patients.find_exam(conn, exam_id=exam_id)
    exams.set_image_counts(conn, exam, row[0], row[1], row[2], row[3])


def _header_of(study: Mapping[str, Any]) -> dict[str, str]:
    return {column: study[column] for column in REWRITTEN.values()}


def _target(conn: sqlite3.Connection, study: sqlite3.Row, data: Mapping[str, Any]) -> tuple[str, sqlite3.Row]:
    """The reason and the exam a re-file names, or the refusal."""
    reason = text(data, "reason", required=True, max_length=500)
    accession = text(data, "accession_number", required=True)
    exam = patients.find_exam(conn, accession=accession)
    if exam is None:
        raise Conflict(N_("No exam has the accession number %(accession)s."), accession=accession)
    if exam["status"] == exams.CANCELLED:
        raise Conflict(N_("Exam %(accession)s is cancelled."), accession=accession)
    if study["exam_ref"] == exam["id"]:
        raise Conflict(N_("The study is already filed to exam %(accession)s."), accession=accession)
    if study["rejected_at"]:
        raise Conflict(N_("The study was rejected; restore it first."))
    return reason, exam


def _rewrite_all(store: str | Path, instances: list[sqlite3.Row], values: Mapping[str, str], source: str,
                 at: str, written: list[tuple[sqlite3.Row, storage.Stored]]) -> None:
    """Write the rewritten copy of every instance, durably; appends each to ``written``."""
    for instance in instances:
        try:
            rewritten = rewrite(storage.resolve(store, instance["storage_path"]), values, source=source, at=at)
            written.append((instance, storage.write_atomic(store, filing.CATEGORY, rewritten, filing.SUFFIX)))
        except (OSError, InvalidDicomError, ValueError, storage.StorageError) as exc:
            raise Conflict(N_("A file of this study could not be rewritten (%(error)s). Nothing was changed."),
                           error=str(exc)) from exc


def parse_instance_numbers(text_value: str) -> set[int]:
    """``"1-20, 25"`` → {1, …, 20, 25}; refuses anything else."""
    numbers: set[int] = set()
    for part in (p.strip() for p in text_value.split(",") if p.strip()):
        match = re.fullmatch(r"(\d{1,6})(?:\s*-\s*(\d{1,6}))?", part)
        if not match:
            raise ValidationError("instances", N_("Give instance numbers like 1-20, 25."))
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first or last - first > 100_000:
            raise ValidationError("instances", N_("Give instance numbers like 1-20, 25."))
        numbers.update(range(first, last + 1))
    return numbers


def _selected_instances(conn: sqlite3.Connection, series: sqlite3.Row, numbers: set[int]) -> list[sqlite3.Row]:
    chosen = [i for i in conn.execute("SELECT * FROM instances WHERE series_ref = ? ORDER BY id", (series["id"],))
              if i["instance_number"].strip().isdigit() and int(i["instance_number"]) in numbers]
    if not chosen:
        raise ValidationError("instances", N_("No image of this series has these instance numbers."))
    return chosen


def file_to_candidate(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], study_id: int,
                      data: Mapping[str, Any]) -> int:
    """A technologist files a quarantined study, whole, to one of its likely exams
    (:func:`candidates`), with a reason: the same re-filing, audited the same way. With
    ``data["one_click"]`` and no reason, a clear first candidate (:func:`is_clear`) is filed
    with its evidence as the reason; a close one is refused (compare the images, give a
    reason). A study that is filed already, or an exam that is not a candidate, stays an
    administrator's decision."""
    study = get_study(conn, study_id)
    if study["exam_ref"] is not None or study["quarantine_reason"] is None:
        raise Conflict(N_("This study is filed: only an administrator moves it to another exam."))
    accession = text(data, "accession_number", required=True)
    ranked = candidates(conn, study, settings["TIMEZONE"])
    if accession not in {c.exam["accession_number"] for c in ranked}:
        raise Conflict(N_("Exam %(accession)s is not one of this study's likely exams: an administrator files it"
                          " elsewhere."), accession=accession)
    reason = str(data.get("reason", "") or "")
    if data.get("one_click") and not reason.strip():
        if not (is_clear(ranked) and ranked[0].exam["accession_number"] == accession):
            raise Conflict(N_("The first candidates are close: compare the images, then choose with a reason."))
        reason = f"one click: the most likely exam (score {ranked[0].score}: {', '.join(ranked[0].reasons)})"
    return refile(conn, actor, settings, study_id, {"accession_number": accession, "reason": reason},
                  quarantined_only=True)


def refile(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], study_id: int,
           data: Mapping[str, Any], series_id: int | None = None, *, quarantined_only: bool = False) -> int:
    """Move a quarantined or filed study, one of its series, or some images of a series (by
    their instance numbers, ``data["instances"]``) to the exam ``data["accession_number"]``,
    with ``data["reason"]``; returns the re-filing's id.

    A series that leaves a study with other series becomes a study of its own: its files also
    get a new StudyInstanceUID; images that leave their series get a new series in a new study
    (new SeriesInstanceUID too). The old UIDs are kept with the other old values. Files first,
    then one transaction; on any failure the new files are removed and nothing changed. The
    transaction refuses a study filed elsewhere meanwhile (two people correcting it at once), and
    with ``quarantined_only`` (a technologist's filing) any study no longer in the quarantine.
    """
    store = settings["STORAGE_DIR"]
    study = get_study(conn, study_id)
    reason, exam = _target(conn, study, data)
    if str(data.get("instances", "") or "").strip() and series_id is None:
        only = conn.execute("SELECT id FROM series WHERE study_ref = ?", (study_id,)).fetchall()
        if len(only) != 1:
            raise ValidationError("instances", N_("Choose the series these images belong to."))
        series_id = only[0]["id"]
    series = None
    if series_id is not None:
        series = conn.execute("SELECT * FROM series WHERE id = ? AND study_ref = ?", (series_id, study_id)).fetchone()
        if series is None:
            raise NotFound(f"series {series_id} of study {study_id}")
    numbers = parse_instance_numbers(str(data.get("instances", "") or "")) if series is not None else set()
    instances = (instances_of_study(conn, study_id) if series is None else conn.execute(
        "SELECT * FROM instances WHERE series_ref = ? ORDER BY id", (series["id"],)).fetchall())
    if numbers:
        chosen = _selected_instances(conn, series, numbers)
        partial = len(chosen) < len(instances)
        instances = chosen
    else:
        partial = False
    if series is not None and not partial and study["series_count"] == 1:
        series = None  # the study's only series, whole: the study moves as it is
    at = clock.to_db(clock.now())
    values = new_header_values(exam)
    if series is not None:
        values["StudyInstanceUID"] = patients.new_study_uid(settings)
    if partial:
        values["SeriesInstanceUID"] = patients.new_study_uid(settings)
    written: list[tuple[sqlite3.Row, storage.Stored]] = []
    try:
        _rewrite_all(store, instances, values, study["calling_ae"] or "unknown", at, written)
        with transaction(conn):
            filed_to = get_study(conn, study_id)["exam_ref"]
            if filed_to != study["exam_ref"] or (quarantined_only and filed_to is not None):
                raise Conflict(N_("The study was filed meanwhile: reload the page."))
            now_there = (instances_of_study(conn, study_id) if series is None else conn.execute(
                "SELECT id FROM instances WHERE series_ref = ?", (series["id"],)).fetchall())
            if not partial and len(now_there) != len(instances):
                raise Conflict(N_("Images of this study arrived meanwhile. Try again."))
            before = {**_header_of(study), "study_instance_uid": study["study_instance_uid"]}
            after = {REWRITTEN[k]: v for k, v in values.items() if k in REWRITTEN}
            after["study_instance_uid"] = values.get("StudyInstanceUID", study["study_instance_uid"])
            moved_study = study_id if series is None else index.new_study_like(
                conn, study, after["study_instance_uid"], exam["id"], series["first_received_at"],
                series["last_received_at"])
            refiling_id = conn.execute(
                "INSERT INTO refilings (study_ref, from_exam_ref, from_quarantine_reason, from_quarantine_detail,"
                " to_exam_ref, reason, before, after, at, by, from_study_ref, series_ref, instances_only)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (moved_study, study["exam_ref"], study["quarantine_reason"], study["quarantine_detail"], exam["id"],
                 reason, json.dumps(before, ensure_ascii=False), json.dumps(after, ensure_ascii=False), at,
                 actor.name, None if series is None else study_id, None if series is None else series["id"],
                 int(partial))).lastrowid
            for instance, stored in written:
                conn.execute("INSERT INTO refiled_files (refiling_ref, instance_ref, old_path, old_size, old_sha256,"
                             " new_path, new_size, new_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (refiling_id, instance["id"], instance["storage_path"], instance["size"],
                              instance["sha256"], stored.path, stored.size, stored.sha256))
                index.point_instance_at(conn, instance["id"], stored.path, stored.size, stored.sha256)
            if partial:
                new_series = index.new_series_like(conn, series, values["SeriesInstanceUID"], moved_study)
                index.move_instances(conn, [instance["id"] for instance, _ in written], new_series)
                index.recount_series(conn, series["id"])
                index.recount_series(conn, new_series)
            elif series is not None:
                index.move_series(conn, series["id"], moved_study)
            if series is not None:
                index.recount_study(conn, study_id)
                index.recount_study(conn, moved_study)
            index.set_study_filing(conn, moved_study, exam["id"], None, "{}", after)
            for exam_id in {exam["id"], study["exam_ref"]} - {None}:
                _recount(conn, exam_id)
            audit.record(conn, actor, "image.refile", f"study:{study['study_instance_uid']}",
                         patient_id=exam["patient_id"],
                         detail={"refiling": refiling_id, "reason": reason, "to": exam["accession_number"],
                                 "from_exam": study["exam_ref"], "from_quarantine": study["quarantine_reason"],
                                 "series": series["series_instance_uid"] if series is not None else None,
                                 "before": before, "after": after, "instances": len(instances)})
    except BaseException:
        for _, stored in written:
            storage.remove(store, stored.path)
        raise
    return int(refiling_id)


def undo_refiling(conn: sqlite3.Connection, actor: audit.Actor, refiling_id: int, data: Mapping[str, Any]) -> None:
    """Put the study back where it was, pointing at its original files again. The rewritten
    files stay on disk, referenced by the re-filing."""
    reason = text(data, "reason", required=True, max_length=500)
    with transaction(conn):
        refiling = conn.execute("SELECT * FROM refilings WHERE id = ?", (refiling_id,)).fetchone()
        if refiling is None:
            raise NotFound(f"refiling {refiling_id}")
        if refiling["undone_at"]:
            raise Conflict(N_("This re-filing was already undone."))
        studies = (refiling["study_ref"], refiling["from_study_ref"])
        later = conn.execute("SELECT 1 FROM refilings WHERE id > ? AND undone_at IS NULL AND (study_ref IN (?, ?)"
                             " OR from_study_ref IN (?, ?))", (refiling_id, *studies, *studies)).fetchone()
        if later:
            raise Conflict(N_("The study was re-filed again since. Undo the later re-filing first."))
        if conn.execute("SELECT 1 FROM refiled_files WHERE refiling_ref = ? AND purged_at IS NOT NULL",
                        (refiling_id,)).fetchone():
            raise Conflict(N_("The original files were purged after the retention period; this cannot be undone."))
        for moved in conn.execute("SELECT * FROM refiled_files WHERE refiling_ref = ?", (refiling_id,)).fetchall():
            index.point_instance_at(conn, moved["instance_ref"], moved["old_path"], moved["old_size"],
                                    moved["old_sha256"])
        before = json.loads(refiling["before"])
        if refiling["instances_only"]:  # the images go back to their series; the new one stays empty
            moved_ids = [r[0] for r in conn.execute("SELECT instance_ref FROM refiled_files WHERE refiling_ref = ?",
                                                    (refiling_id,))]
            emptied = {r[0] for r in conn.execute(
                f"SELECT DISTINCT series_ref FROM instances WHERE id IN ({','.join('?' * len(moved_ids))})",
                moved_ids)}
            index.move_instances(conn, moved_ids, refiling["series_ref"])
            for series_id in emptied | {refiling["series_ref"]}:
                index.recount_series(conn, series_id)
            index.recount_study(conn, refiling["from_study_ref"])
            index.recount_study(conn, refiling["study_ref"])
        elif refiling["series_ref"] is not None:  # the series goes back to its study; its own study stays empty
            index.move_series(conn, refiling["series_ref"], refiling["from_study_ref"])
            index.recount_study(conn, refiling["from_study_ref"])
            index.recount_study(conn, refiling["study_ref"])
        else:
            index.set_study_filing(conn, refiling["study_ref"], refiling["from_exam_ref"],
                                   refiling["from_quarantine_reason"], refiling["from_quarantine_detail"], before)
        for exam_id in {refiling["to_exam_ref"], refiling["from_exam_ref"]} - {None}:
            _recount(conn, exam_id)
        now = clock.to_db(clock.now())
        conn.execute("UPDATE refilings SET undone_at = ?, undone_by = ?, undo_reason = ? WHERE id = ?",
                     (now, actor.name, reason, refiling_id))
        study = get_study(conn, refiling["from_study_ref"] or refiling["study_ref"])
        audit.record(conn, actor, "image.refile_undo", f"study:{study['study_instance_uid']}",
                     patient_id=before["patient_id"], detail={"refiling": refiling_id, "reason": reason})


# ---------------------------------------------------------------- rejecting garbage

def reject_study(conn: sqlite3.Connection, actor: audit.Actor, study_id: int, data: Mapping[str, Any]) -> None:
    """Hide a quarantined study that belongs to no patient (test images); restorable."""
    reason = text(data, "reason", required=True, max_length=500)
    with transaction(conn):
        study = get_study(conn, study_id)
        if study["exam_ref"] is not None:
            raise Conflict(N_("Only a quarantined study can be rejected; re-file a filed one."))
        if study["rejected_at"]:
            raise Conflict(N_("The study is already rejected."))
        index.set_rejected(conn, study_id, clock.to_db(clock.now()), actor.name, reason)
        audit.record(conn, actor, "image.reject", f"study:{study['study_instance_uid']}",
                     patient_id=study["patient_id"], detail={"reason": reason, "instances": study["instance_count"]})


def restore_study(conn: sqlite3.Connection, actor: audit.Actor, study_id: int, data: Mapping[str, Any]) -> None:
    reason = text(data, "reason", required=True, max_length=500)
    with transaction(conn):
        study = get_study(conn, study_id)
        if not study["rejected_at"]:
            raise Conflict(N_("The study is not rejected."))
        index.set_rejected(conn, study_id, None, None, None)
        audit.record(conn, actor, "image.restore", f"study:{study['study_instance_uid']}",
                     patient_id=study["patient_id"],
                     detail={"reason": reason, "rejected_reason": study["rejected_reason"]})


def rejected_studies(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM studies WHERE rejected_at IS NOT NULL ORDER BY rejected_at DESC").fetchall()


# ---------------------------------------------------------------- purging after the retention period

@dataclass(frozen=True)
class Purged:
    files: int
    studies: int


def _superseded_files(conn: sqlite3.Connection, before: str) -> list[tuple[int, str]]:
    """(refiled_files id, path) of files a re-filing made unused before ``before``: the
    original of a re-filing in force, or the rewritten file of an undone one."""
    rows = conn.execute(
        "SELECT f.id, CASE WHEN r.undone_at IS NULL THEN f.old_path ELSE f.new_path END AS path"
        " FROM refiled_files f JOIN refilings r ON r.id = f.refiling_ref WHERE f.purged_at IS NULL"
        " AND COALESCE(r.undone_at, r.at) <= ?", (before,)).fetchall()
    in_use = {row[0] for row in conn.execute("SELECT storage_path FROM instances")}
    return [(row["id"], row["path"]) for row in rows if row["path"] not in in_use]


def _remove_study_rows(conn: sqlite3.Connection, study_id: int) -> list[str]:
    """Delete a rejected study's rows; the paths of every file they referenced."""
    instance_ids = [r[0] for r in conn.execute(
        "SELECT i.id FROM instances i JOIN series s ON s.id = i.series_ref WHERE s.study_ref = ?", (study_id,))]
    marks = ",".join("?" * len(instance_ids))
    paths = [r[0] for r in conn.execute(f"SELECT storage_path FROM instances WHERE id IN ({marks})", instance_ids)]
    paths += [r[0] for r in conn.execute(f"SELECT storage_path FROM instance_conflicts WHERE instance_ref IN ({marks})",
                                         instance_ids)]
    for row in conn.execute(f"SELECT old_path, new_path FROM refiled_files WHERE instance_ref IN ({marks})",
                            instance_ids):
        paths += [row[0], row[1]]
    conn.execute(f"DELETE FROM refiled_files WHERE instance_ref IN ({marks})", instance_ids)
    conn.execute("DELETE FROM refilings WHERE study_ref = ?", (study_id,))
    index.delete_study_contents(conn, study_id, instance_ids)
    alerts.forget_study(conn, study_id)
    arrivals.forget_study(conn, study_id)
    index.delete_study(conn, study_id)
    return sorted(set(paths))


def purge(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
          now: Any = None) -> Purged:
    """The second step of every removal: files superseded by a re-filing longer than
    ``REFILE_RETENTION_DAYS`` ago, and studies rejected longer than ``REJECT_RETENTION_DAYS``
    ago. Rows go in one audited transaction; the files after it commits."""
    now = now or clock.now()
    refile_before = clock.to_db(now - timedelta(days=settings["REFILE_RETENTION_DAYS"]))
    reject_before = clock.to_db(now - timedelta(days=settings["REJECT_RETENTION_DAYS"]))
    with transaction(conn):
        superseded = _superseded_files(conn, refile_before)
        conn.executemany("UPDATE refiled_files SET purged_at = ? WHERE id = ?",
                         [(clock.to_db(now), file_id) for file_id, _ in superseded])
        paths = [path for _, path in superseded]
        studies = conn.execute("SELECT id, study_instance_uid, rejected_reason FROM studies"
                               " WHERE rejected_at IS NOT NULL AND rejected_at <= ?", (reject_before,)).fetchall()
        for study in studies:
            paths += _remove_study_rows(conn, study["id"])
        if paths or studies:
            audit.record(conn, actor, "image.purge", "store", detail={
                "superseded_files": len(superseded), "files": len(paths),
                "rejected_studies": [{"study": s["study_instance_uid"], "reason": s["rejected_reason"]}
                                     for s in studies]})
    for path in paths:
        try:
            storage.remove(settings["STORAGE_DIR"], path)
        except OSError:
            log.warning("purge: could not remove %s", path)
    return Purged(len(paths), len(studies))

