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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         SecondaryCaptureImageStorage, generate_uid)

from . import audit, clock, filing, names, patients
from .db import transaction
from .index import Source
from .validation import N_, Conflict

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
    series_uid: str = field(default_factory=generate_uid)


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
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
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
            repaired[keyword] = target.series_uid if keyword == "SeriesInstanceUID" else generate_uid()
            fixes.append(f"{label} missing or invalid: generated")
    if repaired:
        _keep_originals(ds, repaired, "CORRECT", at)
    coerced: dict[str, Any] = {}
    outside = str(ds.get("PatientID", "") or "")
    if outside in target.patients:
        coerced.update(_patient_values(target.patients[outside]))
        fixes.append(f"outside patient ID {outside}: local {target.patients[outside]['patient_id']}")
    if target.exam is not None:
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


def _zip_members(data: bytes, limit: int) -> Iterator[tuple[str, bytes | None, str]]:
    """(name, bytes or None, refusal) of a ZIP's files; the whole ZIP is refused if it would
    expand beyond ``limit``, a member with an absolute path or '..' is refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a readable ZIP file ({exc})") from exc
    members = [m for m in archive.infolist() if not m.is_dir()]
    if sum(m.file_size for m in members) > limit:
        raise ValueError(f"the ZIP would expand beyond {limit} bytes: refused")
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
            yield member.filename, None, "a path outside the ZIP (absolute or with ..): refused"
            continue
        yield member.filename, archive.read(member), ""


def sources_of(path: Path, limit: int) -> Iterator[tuple[str, bytes | None, str]]:
    """(name, bytes, refusal) of every file under ``path``: a file, a folder (recursively, no
    symbolic links), or a ZIP."""
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            if item.name.upper() == "DICOMDIR":
                continue
            yield item.relative_to(path).as_posix(), item.read_bytes(), ""
    elif path.suffix.lower() == ".zip":
        yield from _zip_members(path.read_bytes(), limit)
    else:
        yield path.name, path.read_bytes(), ""


def import_path(conn: Any, actor: audit.Actor, settings: Mapping[str, Any], path: Path, target: Target,
                progress: Any = None) -> Report:
    """Import a file, a folder or a ZIP; ``progress(done)`` is called after each file."""
    report = Report()
    source = Source(f"import:{actor.name}")
    try:
        for done, (name, data, refusal) in enumerate(sources_of(path, int(settings["IMPORT_MAX_BYTES"])), 1):
            if data is None:
                report.lines.append(Line(name, "failed", reason=refusal))
            else:
                report.lines.extend(import_file(conn, settings, data, name, target, source))
            if progress:
                progress(done)
    except ValueError as exc:
        report.lines.append(Line(path.name, "failed", reason=str(exc)))
    _audit(conn, actor, path.name, target, report)
    return report


def _audit(conn: Any, actor: audit.Actor, what: str, target: Target, report: Report) -> None:
    with transaction(conn):
        audit.record(conn, actor, "image.import", f"import:{what}",
                     patient_id=target.exam["patient_id"] if target.exam else "",
                     detail={"exam": target.exam["accession_number"] if target.exam else None, **report.counts(),
                             "failed_files": [line.name for line in report.lines if line.result == "failed"][:50]})


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


def import_cd(conn: Any, actor: audit.Actor, settings: Mapping[str, Any], root: Path, target: Target,
              progress: Any = None) -> Report:
    """Import the instances a DICOMDIR lists; a path in it that leaves the medium is refused."""
    root = root.resolve()
    report = Report()
    source = Source(f"cd:{actor.name}")
    try:
        fs = _medium(root)
    except ValueError as exc:
        report.lines.append(Line("DICOMDIR", "failed", reason=str(exc)))
        _audit(conn, actor, root.name, target, report)
        return report
    for done, instance in enumerate(fs, start=1):
        path = Path(instance.path).resolve()
        name = path.relative_to(root).as_posix() if root in path.parents else str(instance.FileID)
        if root not in path.parents:
            report.lines.append(Line(name, "failed", reason="the DICOMDIR points outside the medium: refused"))
        elif not path.is_file():
            report.lines.append(Line(name, "failed", reason="listed in the DICOMDIR but not on the medium"))
        else:
            report.lines.extend(import_file(conn, settings, path.read_bytes(), name, target, source))
        if progress:
            progress(done)
    _audit(conn, actor, root.name, target, report)
    return report


def target_for(conn: Any, accession: str = "", mapping: Mapping[str, str] | None = None) -> Target:
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
    return Target(exam=exam, patients=local)
