"""Importing what did not arrive as standard DICOM: scanned images (JPEG, PNG, BMP, TIFF),
non-conformant DICOM files, folders and ZIP files of them, and patient CDs (DICOMDIR).

Everything imported goes through :func:`filing.ingest`, so it is filed, quarantined and
audited like anything that arrived over the network. Every change pacslite makes to a file
(a repair, the exam's values, a local patient ID) keeps the old values in a new Original
Attributes Sequence item. Each file gets a line in the report; a bad file changes nothing.
"""
from __future__ import annotations

import copy
import io
import json
import re
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         SecondaryCaptureImageStorage)

from . import audit, clock, filing, jobs, names, patients, uids
from .db import transaction
from .index import Source
from .validation import N_, Conflict, NotFound

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass
class Line:
    name: str
    result: str  # filed, quarantined, duplicate, conflict, restored, failed
    fixes: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in self.lines:
            found[line.result] = found.get(line.result, 0) + 1
        return found


@dataclass
class Target:
    """What the imported files are coerced to: the exam's values, and/or a local patient for
    an outside patient ID (reconciliation of a CD)."""

    exam: Mapping[str, Any] | None = None
    patients: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # outside ID → local patient
    uid_root: str = ""  # UID_ROOT: every UID pacslite makes is under it (empty: 2.25 UUID UIDs)
    series_uid: str = ""

    def new_uid(self) -> str:
        return uids.new_uid(self.uid_root)

    def __post_init__(self) -> None:
        if not self.series_uid:
            self.series_uid = self.new_uid()


# ---------------------------------------------------------------- recording what was changed

def _keep_originals(ds: Dataset, values: Mapping[str, Any], reason: str, at: str) -> None:
    """Set ``values`` on ``ds``, the old values (where any) in a new Original Attributes
    Sequence item; an attribute that was absent is listed with an empty value."""
    old = Dataset()
    for keyword, value in values.items():
        if keyword in ds:
            old[keyword] = copy.deepcopy(ds[keyword])  # setting the new value changes the element in place
        else:
            setattr(old, keyword, None)
        setattr(ds, keyword, value)
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([old])
    item.AttributeModificationDateTime = clock.from_db(at).strftime("%Y%m%d%H%M%S")
    item.ModifyingSystem = "pacslite"
    item.ReasonForTheAttributeModification = reason
    item.SourceOfPreviousValues = "import"
    ds.OriginalAttributesSequence = Sequence([*ds.get("OriginalAttributesSequence", []), item])


def _exam_values(exam: Mapping[str, Any]) -> dict[str, str]:
    return {"PatientID": exam["patient_id"], "PatientName": names.dicom_person_name(exam["patient_name"]),
            "PatientBirthDate": (exam["birth_date"] or "").replace("-", ""), "PatientSex": exam["sex"] or "",
            "AccessionNumber": exam["accession_number"], "StudyInstanceUID": exam["study_instance_uid"]}


def _patient_values(patient: Mapping[str, Any]) -> dict[str, str]:
    return {"PatientID": patient["patient_id"], "PatientName": names.dicom_person_name(patient["name"]),
            "PatientBirthDate": (patient["birth_date"] or "").replace("-", ""), "PatientSex": patient["sex"] or ""}


# ---------------------------------------------------------------- scanned images

def from_image(data: bytes, name: str, target: Target, at: str) -> list[Dataset]:
    """Secondary Capture instances, one per frame, of a JPEG/PNG/BMP/TIFF file, carrying the
    exam's patient and study; raises ValueError when it is not an image."""
    if target.exam is None:
        raise ValueError("choose the exam these scanned images belong to")
    try:
        image = Image.open(io.BytesIO(data))
        frames = [frame.copy() for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not an image Pillow can read ({exc})") from exc
    made = []
    for number, frame in enumerate(frames, start=1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = target.new_uid()
        ds.SpecificCharacterSet = "ISO_IR 192"
        for keyword, value in _exam_values(target.exam).items():
            setattr(ds, keyword, value)
        ds.SeriesInstanceUID = target.series_uid
        ds.Modality, ds.ConversionType = "OT", "SI"
        ds.SeriesNumber, ds.InstanceNumber = 900, number
        ds.ContentDate = clock.from_db(at).strftime("%Y%m%d")
        ds.ImageComments = f"Converted by pacslite from {name}"[:10240]
        ds.DerivationDescription = f"converted from {Path(name).suffix.lstrip('.').upper() or 'image'} by pacslite"
        _set_pixels(ds, frame)
        made.append(ds)
    return made


def _set_pixels(ds: Dataset, frame: Image.Image) -> None:
    if frame.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(frame).astype(np.uint16)
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    elif frame.mode in ("L", "1"):
        pixels = np.asarray(frame.convert("L"), dtype=np.uint8)
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        pixels = np.asarray(frame.convert("RGB"), dtype=np.uint8)
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows, ds.Columns = pixels.shape[0], pixels.shape[1]
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


# ---------------------------------------------------------------- non-conformant DICOM

def _read_dicom(data: bytes) -> Dataset:
    """The dataset, with or without preamble and file meta; ValueError if it is not DICOM."""
    try:
        ds = dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        raise ValueError(f"not a readable DICOM file ({exc})") from exc
    if len([e for e in ds if e.tag.group != 0x0002]) < 2 or not any(e.tag.group >= 0x0008 for e in ds):
        raise ValueError("neither an image nor a DICOM file")
    try:
        for element in ds:  # a truncated file fails here, not later in filing
            _ = element.value
    except Exception as exc:
        raise ValueError(f"a damaged DICOM file ({exc})") from exc
    _check_pixel_length(ds)
    return ds


def _check_pixel_length(ds: Dataset) -> None:
    """Uncompressed pixel data shorter than its image: a truncated file."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta else None
    if "PixelData" not in ds or (syntax is not None and syntax.is_compressed):
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * \
            int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"a damaged DICOM file (image size unknown: {exc})") from exc
    if len(ds.PixelData) < expected:
        raise ValueError(f"a damaged DICOM file (pixel data {len(ds.PixelData)} of {expected} bytes: truncated)")


def _charset_fix(ds: Dataset) -> str | None:
    """An undeclared or wrong character set, judged from the patient's name as stored: bytes
    that are valid UTF-8, or GB18030 that decodes to ideographs, under no declaration or under
    Latin-1 (the usual mistakes). None when the declaration is plausible."""
    if "PatientName" not in ds:
        return None
    encoded = getattr(ds.PatientName, "original_string", None)
    if not isinstance(encoded, bytes) or encoded.isascii():
        return None
    declared = str(ds.get("SpecificCharacterSet", "") or "").strip()
    if declared not in ("", "ISO_IR 6", "ISO_IR 100"):
        return None
    try:
        encoded.decode("utf-8")
        return "ISO_IR 192"
    except UnicodeDecodeError:
        pass
    try:
        text_value = encoded.decode("gb18030")
    except UnicodeDecodeError:
        return None
    wide = [c for c in text_value if not c.isascii()]
    return "GB18030" if wide and all(names.is_chinese(c) for c in wide) else None


def repair(data: bytes, target: Target, at: str) -> tuple[Dataset, list[str]]:
    """A non-conformant DICOM file made conformant where it can be: (dataset, fixes made)."""
    ds = _read_dicom(data)
    fixes: list[str] = []
    repaired: dict[str, Any] = {}
    charset = _charset_fix(ds)
    if charset:  # read again, its text decoded with the character set it really uses
        declared = ds.get("SpecificCharacterSet", "") or "undeclared"
        ds = dcmread(io.BytesIO(data), force=True)
        ds.set_original_encoding(ds.is_implicit_VR, ds.is_little_endian, convert_encodings([charset]))
        repaired["SpecificCharacterSet"] = charset
        fixes.append(f"character set {declared}: {charset}")
    if "SOPClassUID" not in ds:
        if "PixelData" not in ds:
            raise ValueError("no SOP Class UID and no pixel data: cannot tell what this is")
        repaired["SOPClassUID"] = SecondaryCaptureImageStorage
        fixes.append("SOP Class UID missing: Secondary Capture")
    for keyword, label in (("SOPInstanceUID", "SOP Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
                           ("StudyInstanceUID", "Study Instance UID")):
        if not filing.is_uid(str(ds.get(keyword, "") or "")):
            repaired[keyword] = target.series_uid if keyword == "SeriesInstanceUID" else target.new_uid()
            fixes.append(f"{label} missing or invalid: generated")
    if repaired:
        _keep_originals(ds, repaired, "CORRECT", at)
    coerced: dict[str, Any] = {}
    outside = str(ds.get("PatientID", "") or "")
    if outside in target.patients:
        coerced.update(_patient_values(target.patients[outside]))
        fixes.append(f"outside patient ID {outside}: local {target.patients[outside]['patient_id']}")
    if target.exam is not None and (not target.patients or outside in target.patients):
        # with a patient mapping (a CD), only the mapped patients' images go to the exam
        coerced.update(_exam_values(target.exam))
        fixes.append(f"filed to exam {target.exam['accession_number']}")
    if coerced:
        if any(not str(v).isascii() for v in coerced.values()) and ds.get("SpecificCharacterSet") not in (
                "ISO_IR 192", "GB18030"):
            ds.decode()
            coerced["SpecificCharacterSet"] = "ISO_IR 192"
        _keep_originals(ds, coerced, "COERCE", at)
    meta_before = getattr(ds, "file_meta", None)
    if not meta_before or "TransferSyntaxUID" not in meta_before:
        fixes.append("no file meta information: added")
    syntax = (ImplicitVRLittleEndian if ds.is_implicit_VR else
              ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian)
    if meta_before and "TransferSyntaxUID" in meta_before:
        syntax = meta_before.TransferSyntaxUID
    ds.file_meta = FileMetaDataset(meta_before or Dataset())
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds, fixes


def _bytes_of(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ---------------------------------------------------------------- one file, many files

def import_file(conn: Any, settings: Mapping[str, Any], data: bytes, name: str, target: Target,
                source: Source) -> list[Line]:
    """Import one file's contents; the report's lines for it."""
    at = clock.to_db(clock.now())
    try:
        if Path(name).suffix.lower() in IMAGE_SUFFIXES and not data[128:132] == b"DICM":
            made = [(ds, [f"converted from {Path(name).suffix.lstrip('.').upper()} to Secondary Capture"])
                    for ds in from_image(data, name, target, at)]
        else:
            made = [repair(data, target, at)]
    except ValueError as exc:
        return [Line(name, "failed", reason=str(exc))]
    lines = []
    for number, (ds, fixes) in enumerate(made, start=1):
        label = name if len(made) == 1 else f"{name} [{number}]"
        try:
            outcome = filing.ingest_bytes(conn, settings["STORAGE_DIR"], _bytes_of(ds), source,
                                          high_water_percent=settings["STORAGE_HIGH_WATER_PERCENT"])
        except filing.IngestError as exc:
            lines.append(Line(label, "failed", fixes, str(exc)))
            continue
        lines.append(Line(label, outcome.result, fixes, outcome.reason))
    return lines


@dataclass(frozen=True)
class Entry:
    """One thing to import: its name in the report and how to read it (None: refused)."""

    name: str
    read: Callable[[], bytes] | None
    refusal: str = ""


def _zip_entries(path: Path, limit: int) -> list[Entry]:
    """A ZIP's files; the whole ZIP is refused if it would expand beyond ``limit``, a member
    with an absolute path or '..' is refused on its own."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        return [Entry(path.name, None, f"not a readable ZIP file ({exc})")]
    members = [m for m in archive.infolist() if not m.is_dir()]
    if sum(m.file_size for m in members) > limit:
        return [Entry(path.name, None, f"the ZIP would expand beyond {limit} bytes: refused")]
    entries = []
    for member in members:
        parts = PurePosixPath(member.filename.replace("\\", "/"))
        if parts.is_absolute() or ".." in parts.parts or (parts.parts and parts.parts[0].endswith(":")):
            entries.append(Entry(member.filename, None, "a path outside the ZIP (absolute or with ..): refused"))
        else:
            entries.append(Entry(member.filename, lambda m=member: archive.read(m)))
    return entries


def entries(path: Path, settings: Mapping[str, Any]) -> list[Entry]:
    """What to import from ``path``: a medium with a DICOMDIR (its listed files), a folder
    (recursively, no symbolic links; ZIP files in it opened), a ZIP, or a single file."""
    limit = int(settings["IMPORT_MAX_BYTES"])
    if path.is_dir() and (path / "DICOMDIR").is_file():
        return _cd_entries(path.resolve())
    if path.is_dir():
        found: list[Entry] = []
        for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            if item.suffix.lower() == ".zip":
                found.extend(Entry(f"{item.relative_to(path).as_posix()}/{e.name}", e.read, e.refusal)
                             for e in _zip_entries(item, limit))
            else:
                found.append(Entry(item.relative_to(path).as_posix(), item.read_bytes))
        return found
    if path.suffix.lower() == ".zip":
        return _zip_entries(path, limit)
    return [Entry(path.name, path.read_bytes)]


def import_entries(conn: Any, settings: Mapping[str, Any], items: list[Entry], target: Target,
                   source: Source) -> list[Line]:
    lines: list[Line] = []
    for entry in items:
        if entry.read is None:
            lines.append(Line(entry.name, "failed", reason=entry.refusal))
        else:
            lines.extend(import_file(conn, settings, entry.read(), entry.name, target, source))
    return lines


def _audit(conn: Any, actor: audit.Actor, what: str, target: Target, report: Report) -> None:
    with transaction(conn):
        audit.record(conn, actor, "image.import", f"import:{what}",
                     patient_id=target.exam["patient_id"] if target.exam else "",
                     detail={"exam": target.exam["accession_number"] if target.exam else None, **report.counts(),
                             "failed_files": [line.name for line in report.lines if line.result == "failed"][:50]})


def import_path(conn: Any, actor: audit.Actor, settings: Mapping[str, Any], path: Path, target: Target) -> Report:
    """Import a file, a folder, a ZIP or a medium with a DICOMDIR, all at once (the command line)."""
    report = Report(import_entries(conn, settings, entries(path, settings), target, Source(f"import:{actor.name}")))
    _audit(conn, actor, path.name, target, report)
    return report


# ---------------------------------------------------------------- patient CDs

def _attribute(instance: Any, keyword: str) -> str:
    return str(getattr(instance, keyword)) if keyword in instance else ""


def _medium(root: Path) -> FileSet:
    """The medium's DICOMDIR; ValueError if it is unreadable or points outside the medium
    (pydicom refuses such a path, and each file is checked again before it is read)."""
    try:
        return FileSet(root / "DICOMDIR")
    except PermissionError as exc:
        raise ValueError("the DICOMDIR points outside the medium: refused") from exc
    except (InvalidDicomError, OSError, KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a readable DICOMDIR ({exc})") from exc


def read_cd(root: Path) -> list[dict[str, Any]]:
    """The studies on a medium, by patient, from its DICOMDIR: [{patient_id, name, studies: [...]}];
    ValueError if the DICOMDIR cannot be used."""
    fs = _medium(root)
    patients_found: dict[str, dict[str, Any]] = {}
    for instance in fs:
        pid = str(instance.PatientID) if "PatientID" in instance else ""
        entry = patients_found.setdefault(pid, {"patient_id": pid, "name": _attribute(instance, "PatientName"),
                                                "studies": {}})
        study = entry["studies"].setdefault(str(instance.StudyInstanceUID), {
            "study_instance_uid": str(instance.StudyInstanceUID), "date": _attribute(instance, "StudyDate"),
            "description": _attribute(instance, "StudyDescription"), "images": 0})
        study["images"] += 1
    return [{**p, "studies": list(p["studies"].values())} for p in patients_found.values()]


def _cd_entries(root: Path) -> list[Entry]:
    """The files a DICOMDIR lists; a path in it that leaves the medium is refused."""
    try:
        fs = _medium(root)
    except ValueError as exc:
        return [Entry("DICOMDIR", None, str(exc))]
    found = []
    for instance in fs:
        path = Path(instance.path).resolve()
        if root not in path.parents:
            found.append(Entry(str(instance.FileID), None, "the DICOMDIR points outside the medium: refused"))
        elif not path.is_file():
            found.append(Entry(path.relative_to(root).as_posix(), None, "listed in the DICOMDIR but not on the medium"))
        else:
            found.append(Entry(path.relative_to(root).as_posix(), path.read_bytes))
    return found


def target_for(conn: Any, accession: str = "", mapping: Mapping[str, str] | None = None,
               uid_root: str = "") -> Target:
    """The exam (by accession number) and the outside → local patient IDs, looked up."""
    exam = None
    if accession:
        exam = patients.find_exam(conn, accession=accession)
        if exam is None:
            raise Conflict(N_("No exam has the accession number %(accession)s."), accession=accession)
    local = {}
    for outside, local_id in (mapping or {}).items():
        patient = patients.find_patient(conn, local_id) if local_id else None
        if local_id and patient is None:
            raise Conflict(N_("No patient has the patient ID %(patient_id)s."), patient_id=local_id)
        if patient is not None:
            local[outside] = patient
    return Target(exam=exam, patients=local, uid_root=uid_root)


# ---------------------------------------------------------------- imports from the page (a job)

SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")


def _safe_relative(name: str) -> PurePosixPath | None:
    """An uploaded file's relative path, if every part is a plain name (no '..', no absolute
    path, no odd characters): uploads keep their folders so that a CD's DICOMDIR still finds
    its files, inside a folder pacslite generated."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or not path.parts or not all(SAFE_PART.fullmatch(p) and p not in (".", "..")
                                                       for p in path.parts):
        return None
    return path


def stage(settings: Mapping[str, Any], uploads: list[tuple[str, bytes]]) -> tuple[Path, list[Line]]:
    """Put uploaded files (a single ZIP is unpacked) in a new folder under the instance;
    (folder, lines for what was refused)."""
    root = Path(settings["INSTANCE_DIR"]) / "imports" / uuid.uuid4().hex
    root.mkdir(parents=True)
    refused: list[Line] = []
    if len(uploads) == 1 and uploads[0][0].lower().endswith(".zip"):
        archive = root.parent / f"{root.name}.zip"
        archive.write_bytes(uploads[0][1])
        uploads = []
        for entry in _zip_entries(archive, int(settings["IMPORT_MAX_BYTES"])):
            if entry.read is None:
                refused.append(Line(entry.name, "failed", reason=entry.refusal))
            else:
                uploads.append((entry.name, entry.read()))
        archive.unlink()
    for name, data in uploads:
        relative = _safe_relative(name)
        if relative is None:
            refused.append(Line(name, "failed", reason="a file name pacslite does not accept: refused"))
            continue
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    return root, refused


def create(conn: Any, actor: audit.Actor, folder: Path, refused: list[Line]) -> int:
    with transaction(conn):
        import_id = conn.execute("INSERT INTO imports (folder, report, created_at, created_by) VALUES (?, ?, ?, ?)",
                                 (str(folder), json.dumps([asdict(line) for line in refused]),
                                  clock.to_db(clock.now()), actor.name)).lastrowid
        audit.record(conn, actor, "image.import_upload", f"import:{import_id}", detail={"refused": len(refused)})
    return int(import_id)


def get_import(conn: Any, import_id: int) -> Any:
    row = conn.execute("SELECT * FROM imports WHERE id = ?", (import_id,)).fetchone()
    if row is None:
        raise NotFound(f"import {import_id}")
    return row


def start(conn: Any, actor: audit.Actor, import_id: int, accession: str, mapping: Mapping[str, str]) -> int:
    """Check the exam and the patient mapping, then queue the import's job."""
    target_for(conn, accession, mapping)  # refuses an unknown exam or patient now, not in the job
    with transaction(conn):
        conn.execute("UPDATE imports SET accession = ?, mapping = ? WHERE id = ?",
                     (accession, json.dumps(dict(mapping)), import_id))
    return jobs.start(conn, actor, "import", f"import:{import_id}")


def lines_of(row: Any) -> list[Line]:
    return [Line(**line) for line in json.loads(row["report"])]


@jobs.register("import")
def import_step(conn: Any, settings: Mapping[str, Any], job: Any) -> jobs.Step:
    """Import the next files of an upload, adding their lines to its report."""
    row = get_import(conn, int(job["subject"].split(":", 1)[1]))
    items = entries(Path(row["folder"]), settings)
    start_at = int(job["cursor"] or 0)
    batch = items[start_at:start_at + 20]
    target = target_for(conn, row["accession"], json.loads(row["mapping"]), settings["UID_ROOT"])
    new = import_entries(conn, settings, batch, target, Source(f"import:{row['created_by']}"))
    report = lines_of(row) + new
    with transaction(conn):
        conn.execute("UPDATE imports SET report = ? WHERE id = ?",
                     (json.dumps([asdict(line) for line in report]), row["id"]))
    done = start_at + len(batch)
    if done >= len(items):
        _audit(conn, audit.Actor(row["created_by"]), f"{row['id']}", target, Report(report))
        return jobs.Step(done, len(items), str(done), finished=True, message=", ".join(
            f"{count} {result}" for result, count in sorted(Report(report).counts().items())))
    return jobs.Step(done, len(items), str(done))

