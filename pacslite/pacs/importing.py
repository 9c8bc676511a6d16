"""Importing what did not arrive as standard DICOM: scanned images (JPEG, PNG, BMP, TIFF),
non-conformant DICOM files, folders and ZIP files of them, and patient CDs (DICOMDIR).

Everything imported goes through :func:`filing.ingest`, so it is filed, quarantined and
audited like anything that arrived over the network. Every change pacslite makes to a file
(a repair, the exam's values, a local patient ID) keeps the old values in a new Original
Attributes Sequence item. Each file gets a line in the report; a bad file changes nothing.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, SecondaryCaptureImageStorage)

from ..core import audit, clock, jobs, names, storage, uids
from ..ris import patients
from . import arrivals, filing
from ..core.db import transaction
from .index import Source
from ..core.validation import N_, Conflict, NotFound

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
#: Files are copied in blocks of this size: nothing imported is held whole in memory.
COPY_BLOCK = 1024 * 1024


def note(message: str, **params: Any) -> list[Any]:
    """A fix or a refusal as the report keeps it: an English msgid (marked with N_) and its
    values, translated where it is shown (the pages) and read as English elsewhere (the CLI)."""
    return [message, params]


def english(text: str | list[Any]) -> str:
    """A note (or a plain text: an exception's message, a quarantine reason) in English."""
    if isinstance(text, list):
        message, params = text
        return message % params if params else message
    return text


class Refused(ValueError):
    """A file that cannot be imported, and why (an English msgid and its values, as a note)."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.note = note(message, **params)


def why(exc: Exception) -> Any:
    """What a report line says of a refusal: its note, or an unexpected error's own words."""
    return exc.note if isinstance(exc, Refused) else str(exc)


@dataclass
class Line:
    name: str
    result: str  # filed, quarantined, duplicate, conflict, restored, failed
    fixes: list[Any] = field(default_factory=list)  # notes
    reason: Any = ""  # a note, an exception's message, or the quarantine reason's code


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

#: A scanned page may have at most this many pixels (an A3 page at 300 dpi has 17.4 million):
#: one page is decoded at a time, and its pixels are held twice (the image and the DICOM
#: pixel data), so this bounds what an import holds in memory.
MAX_SCAN_PIXELS = 20_000_000


def from_image(path: Path, name: str, target: Target, at: str) -> Iterator[tuple[int, int, Dataset]]:
    """Secondary Capture instances, one per page, of a JPEG/PNG/BMP/TIFF file, carrying the
    exam's patient and study, made one page at a time: (page number, pages, dataset); raises
    ValueError when it is not an image."""
    if target.exam is None:
        raise Refused(N_("choose the exam these scanned images belong to"))
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise Refused(N_("not an image Pillow can read (%(error)s)"), error=str(exc)) from exc
    with image:
        count = int(getattr(image, "n_frames", 1))
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if frame.width * frame.height > MAX_SCAN_PIXELS:
                raise Refused(N_("page %(page)d has %(width)d × %(height)d pixels, more than the %(max)d a scan"
                                 " may have"), page=number, width=frame.width, height=frame.height,
                              max=MAX_SCAN_PIXELS)
            try:
                frame.load()
            except OSError as exc:
                raise Refused(N_("page %(page)d cannot be read (%(error)s)"), page=number, error=str(exc)) from exc
            yield number, count, _scan_page(frame, number, name, target, at)


def _scan_page(frame: Image.Image, number: int, name: str, target: Target, at: str) -> Dataset:
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
    return ds


def _set_pixels(ds: Dataset, frame: Image.Image) -> None:
    if frame.mode in ("I;16", "I;16B", "I;16L", "I"):
        ds.PixelData = np.asarray(frame).astype("<u2").tobytes()
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    elif frame.mode in ("L", "1"):
        ds.PixelData = (frame if frame.mode == "L" else frame.convert("L")).tobytes()
        ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        ds.PixelData = (frame if frame.mode == "RGB" else frame.convert("RGB")).tobytes()  # planar configuration 0
        ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.Rows, ds.Columns = frame.height, frame.width
    ds.PixelRepresentation = 0
    if len(ds.PixelData) % 2:
        ds.PixelData += b"\0"


# ---------------------------------------------------------------- non-conformant DICOM

#: A deflated file is rewritten whole (its pixels cannot be copied as they are): at most this big.
MAX_DEFLATED_BYTES = 64 * 1024 * 1024


@dataclass
class DicomFile:
    """A DICOM file to repair: its header (read without the pixel data), and where in the file
    the pixel data element starts: everything from there on is copied as it is."""

    path: Path
    ds: Dataset
    tail: int | None  # offset of the pixel data element; None: the dataset was read whole


def _starts_like_dicom(path: Path) -> bool:
    """Whether the first element (after the preamble, if there is one) is in a plausible group:
    even, from 0002 (file meta) to 7FE0 (pixel data), read either way round. Spares pydicom
    from "reading" gigabytes of zeros, which it would take as millions of empty elements."""
    with open(path, "rb") as handle:
        head = handle.read(140)
    start = 132 if head[128:132] == b"DICM" else 0
    if len(head) < start + 8:
        return False
    first = head[start:start + 2]
    groups = (int.from_bytes(first, "little"), int.from_bytes(first, "big"))
    return any(2 <= group <= 0x7FE0 and group % 2 == 0 for group in groups)


def _header_of(path: Path) -> tuple[Dataset, int, int]:
    """(header, offset of the pixel data element or the end, file size)."""
    if not _starts_like_dicom(path):
        raise Refused(N_("neither an image nor a DICOM file"))
    try:
        with open(path, "rb") as handle:
            ds = dcmread(handle, force=True, stop_before_pixels=True)
            return ds, handle.tell(), os.fstat(handle.fileno()).st_size
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        raise Refused(N_("not a readable DICOM file (%(error)s)"), error=str(exc)) from exc


def _read_dicom(path: Path) -> DicomFile:
    """The file's header, with or without preamble and file meta; ValueError if it is not DICOM."""
    ds, tail, ends_at = _header_of(path)
    if len([e for e in ds if e.tag.group != 0x0002]) < 2 or not any(e.tag.group >= 0x0008 for e in ds):
        raise Refused(N_("neither an image nor a DICOM file"))
    try:
        for element in ds:  # a truncated header fails here, not later in filing
            _ = element.value
    except Exception as exc:
        raise Refused(N_("a damaged DICOM file (%(error)s)"), error=str(exc)) from exc
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") in (DeflatedExplicitVRLittleEndian,):
        if ends_at > MAX_DEFLATED_BYTES:
            raise Refused(N_("a deflated file of %(size)d bytes: more than the %(max)d imported"), size=ends_at,
                          max=MAX_DEFLATED_BYTES)
        return DicomFile(path, dcmread(path, force=True), None)
    return DicomFile(path, ds, tail if tail < ends_at else None)


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


def repair(path: Path, target: Target, at: str, out: Path) -> list[Any]:
    """A non-conformant DICOM file made conformant where it can be, written to ``out``
    (its pixel data copied as it is); the fixes made."""
    source = _read_dicom(path)
    ds = source.ds
    fixes: list[Any] = []
    repaired: dict[str, Any] = {}
    charset = _charset_fix(ds)
    if charset:  # read again, its text decoded with the character set it really uses
        declared = ds.get("SpecificCharacterSet", "") or "undeclared"
        ds = source.ds = _header_of(path)[0] if source.tail is not None else dcmread(path, force=True)
        ds.set_original_encoding(ds.is_implicit_VR, ds.is_little_endian, convert_encodings([charset]))
        repaired["SpecificCharacterSet"] = charset
        fixes.append(note(N_("character set %(declared)s: %(charset)s"), declared=declared, charset=charset))
    if "SOPClassUID" not in ds:
        if source.tail is None and "PixelData" not in ds:
            raise Refused(N_("no SOP Class UID and no pixel data: cannot tell what this is"))
        repaired["SOPClassUID"] = SecondaryCaptureImageStorage
        fixes.append(note(N_("SOP Class UID missing: Secondary Capture")))
    for keyword, label in (("SOPInstanceUID", "SOP Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
                           ("StudyInstanceUID", "Study Instance UID")):
        if not uids.is_uid(str(ds.get(keyword, "") or "")):
            repaired[keyword] = target.series_uid if keyword == "SeriesInstanceUID" else target.new_uid()
            fixes.append(note(N_("%(attribute)s missing or invalid: generated"), attribute=label))
    if repaired:
        _keep_originals(ds, repaired, "CORRECT", at)
    coerced: dict[str, Any] = {}
    outside = str(ds.get("PatientID", "") or "")
    if outside in target.patients:
        coerced.update(_patient_values(target.patients[outside]))
        fixes.append(note(N_("outside patient ID %(outside)s: local %(local)s"), outside=outside,
                          local=target.patients[outside]["patient_id"]))
    if target.exam is not None and (not target.patients or outside in target.patients):
        # with a patient mapping (a CD), only the mapped patients' images go to the exam
        coerced.update(_exam_values(target.exam))
        fixes.append(note(N_("filed to exam %(accession)s"), accession=target.exam["accession_number"]))
    if coerced:
        if any(not str(v).isascii() for v in coerced.values()) and ds.get("SpecificCharacterSet") not in (
                "ISO_IR 192", "GB18030"):
            ds.decode()
            coerced["SpecificCharacterSet"] = "ISO_IR 192"
        _keep_originals(ds, coerced, "COERCE", at)
    meta_before = getattr(ds, "file_meta", None)
    if not meta_before or "TransferSyntaxUID" not in meta_before:
        fixes.append(note(N_("no file meta information: added")))
    syntax = (ImplicitVRLittleEndian if ds.is_implicit_VR else
              ExplicitVRLittleEndian if ds.is_little_endian else ExplicitVRBigEndian)
    if meta_before and "TransferSyntaxUID" in meta_before:
        syntax = meta_before.TransferSyntaxUID
    ds.file_meta = FileMetaDataset(meta_before or Dataset())
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    _write(source, out)
    return fixes


def _write(source: DicomFile, out: Path) -> None:
    """The repaired header, then the original file's bytes from the pixel data on, copied in
    blocks (a 2 GB image is never held in memory)."""
    source.ds.save_as(out, enforce_file_format=True)
    if source.tail is None:
        return
    with open(source.path, "rb") as original, open(out, "ab") as target:
        original.seek(source.tail)
        shutil.copyfileobj(original, target, COPY_BLOCK)


# ---------------------------------------------------------------- one file, many files

def _is_part10(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _ingest_line(conn: Any, settings: Mapping[str, Any], made: Path, label: str, fixes: list[Any],
                 source: Source) -> Line:
    """Ingest a file written to the temporary area; its line in the report."""
    try:
        outcome = filing.ingest(conn, settings["STORAGE_DIR"], made, source,
                                high_water_percent=settings["STORAGE_HIGH_WATER_PERCENT"])
    except filing.IngestError as exc:
        return Line(label, "failed", fixes, str(exc))
    finally:
        made.unlink(missing_ok=True)
    return Line(label, outcome.result, fixes, outcome.reason)


def _scratch(settings: Mapping[str, Any]) -> Path:
    """A new file name in the store's temporary area (filing renames it from there)."""
    return storage.tmp_dir(settings["STORAGE_DIR"]) / f"{uuid.uuid4().hex}.dcm"


def import_file(conn: Any, settings: Mapping[str, Any], path: Path, name: str, target: Target,
                source: Source) -> list[Line]:
    """Import one file; the report's lines for it (a scanned page at a time)."""
    at = clock.to_db(clock.now())
    if Path(name).suffix.lower() in IMAGE_SUFFIXES and not _is_part10(path):
        return _import_scan(conn, settings, path, name, target, source, at)
    made = _scratch(settings)
    try:
        fixes = repair(path, target, at, made)
    except (ValueError, OSError) as exc:
        made.unlink(missing_ok=True)
        return [Line(name, "failed", reason=why(exc))]
    return [_ingest_line(conn, settings, made, name, fixes, source)]


def _import_scan(conn: Any, settings: Mapping[str, Any], path: Path, name: str, target: Target,
                 source: Source, at: str) -> list[Line]:
    fixes = [note(N_("converted from %(format)s to Secondary Capture"),
                  format=Path(name).suffix.lstrip(".").upper())]
    lines = []
    try:
        for number, count, ds in from_image(path, name, target, at):
            made = _scratch(settings)
            ds.save_as(made, enforce_file_format=True)
            del ds  # one page in memory at a time
            lines.append(_ingest_line(conn, settings, made, name if count == 1 else f"{name} [{number}]", fixes,
                                      source))
    except ValueError as exc:
        lines.append(Line(name, "failed", reason=why(exc)))
    return lines


@dataclass(frozen=True)
class Entry:
    """One thing to import: its name in the report and where it is (None: refused). A member
    of a ZIP is extracted, in blocks, only when it is imported."""

    name: str
    path: Path | None
    member: str = ""  # the member of the ZIP at ``path``
    refusal: Any = ""  # a note, or an exception's message


class Budget:
    """What ZIPs may expand to over a whole import (``IMPORT_MAX_BYTES``), not per ZIP."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


def _zip_entries(path: Path, budget: Budget, prefix: str = "") -> list[Entry]:
    """A ZIP's files; the whole ZIP is refused if it would expand beyond what is left of the
    import's budget, a member with an absolute path or '..' is refused on its own. Members are
    named ``prefix`` + their name; the ZIP itself ``prefix`` (without its slash) or its file name."""
    whole = prefix.rstrip("/") or path.name
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        return [Entry(whole, None, refusal=note(N_("not a readable ZIP file (%(error)s)"), error=str(exc)))]
    if not budget.take(sum(m.file_size for m in members)):
        return [Entry(whole, None, refusal=note(N_("the ZIP would expand beyond %(limit)d bytes (what one import may"
                                                    " unpack): refused"), limit=budget.limit))]
    found = []
    for member in members:
        parts = PurePosixPath(member.filename.replace("\\", "/"))
        if parts.is_absolute() or ".." in parts.parts or (parts.parts and parts.parts[0].endswith(":")):
            found.append(Entry(prefix + member.filename, None,
                               refusal=note(N_("a path outside the ZIP (absolute or with ..): refused"))))
        else:
            found.append(Entry(prefix + member.filename, path, member.filename))
    return found


def extract(entry: Entry, destination: Path) -> None:
    """Copy a ZIP member to ``destination`` in blocks (never whole in memory)."""
    assert entry.path is not None and entry.member
    with zipfile.ZipFile(entry.path) as archive, archive.open(entry.member) as member, \
            open(destination, "xb") as out:
        shutil.copyfileobj(member, out, COPY_BLOCK)


def entries(path: Path, settings: Mapping[str, Any]) -> list[Entry]:
    """What to import from ``path``: a medium with a DICOMDIR (its listed files), a folder
    (recursively, no symbolic links; ZIP files in it opened), a ZIP, or a single file."""
    budget = Budget(int(settings["IMPORT_MAX_BYTES"]))
    if path.is_dir() and (path / "DICOMDIR").is_file():
        return _cd_entries(path.resolve())
    if path.is_dir():
        found: list[Entry] = []
        for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
            relative = item.relative_to(path).as_posix()
            if item.suffix.lower() == ".zip":
                found.extend(_zip_entries(item, budget, prefix=relative + "/"))
            else:
                found.append(Entry(relative, item))
        return found
    if path.suffix.lower() == ".zip":
        return _zip_entries(path, budget)
    return [Entry(path.name, path)]


def import_entry(conn: Any, settings: Mapping[str, Any], entry: Entry, target: Target, source: Source) -> list[Line]:
    if entry.path is None:
        return [Line(entry.name, "failed", reason=entry.refusal)]
    if not entry.member:
        return import_file(conn, settings, entry.path, entry.name, target, source)
    unpacked = storage.tmp_dir(settings["STORAGE_DIR"]) / f"{uuid.uuid4().hex}{PurePosixPath(entry.member).suffix}"
    try:
        extract(entry, unpacked)
        return import_file(conn, settings, unpacked, entry.name, target, source)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Line(entry.name, "failed",
                     reason=note(N_("cannot be read from the ZIP (%(error)s)"), error=str(exc)))]
    finally:
        unpacked.unlink(missing_ok=True)


def import_entries(conn: Any, settings: Mapping[str, Any], items: list[Entry], target: Target,
                   source: Source) -> list[Line]:
    lines: list[Line] = []
    for entry in items:
        lines.extend(import_entry(conn, settings, entry, target, source))
    return lines


def _audit(conn: Any, actor: audit.Actor, what: str, target: Target, report: Report) -> None:
    with transaction(conn):
        audit.record(conn, actor, "image.import", f"import:{what}",
                     patient_id=target.exam["patient_id"] if target.exam else "",
                     detail={"exam": target.exam["accession_number"] if target.exam else None, **report.counts(),
                             "failed_files": [line.name for line in report.lines if line.result == "failed"][:50]})


def import_path(conn: Any, actor: audit.Actor, settings: Mapping[str, Any], path: Path, target: Target) -> Report:
    """Import a file, a folder, a ZIP or a medium with a DICOMDIR, all at once (the command line)."""
    with arrivals.delivery(conn, Source(f"import:{actor.name}")) as source:
        report = Report(import_entries(conn, settings, entries(path, settings), target, source))
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
        raise Refused(N_("the DICOMDIR points outside the medium: refused")) from exc
    except (InvalidDicomError, OSError, KeyError, ValueError, AttributeError) as exc:
        raise Refused(N_("not a readable DICOMDIR (%(error)s)"), error=str(exc)) from exc


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
        return [Entry("DICOMDIR", None, refusal=why(exc))]
    found = []
    for instance in fs:
        path = Path(instance.path).resolve()
        if root not in path.parents:
            found.append(Entry(str(instance.FileID), None,
                               refusal=note(N_("the DICOMDIR points outside the medium: refused"))))
        elif not path.is_file():
            found.append(Entry(path.relative_to(root).as_posix(), None,
                               refusal=note(N_("listed in the DICOMDIR but not on the medium"))))
        else:
            found.append(Entry(path.relative_to(root).as_posix(), path))
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


def stage(settings: Mapping[str, Any], uploads: list[tuple[str, Callable[[Path], Any]]]) -> tuple[Path, list[Line]]:
    """Put uploaded files (name, a function that saves it to a path) in a new folder under the
    instance, a single ZIP unpacked member by member; (folder, lines for what was refused).
    Nothing is held whole in memory."""
    root = Path(settings["INSTANCE_DIR"]) / "imports" / uuid.uuid4().hex
    root.mkdir(parents=True)
    refused: list[Line] = []
    if len(uploads) == 1 and uploads[0][0].lower().endswith(".zip"):
        archive = root.parent / f"{root.name}.zip"
        uploads[0][1](archive)
        try:
            for entry in _zip_entries(archive, Budget(int(settings["IMPORT_MAX_BYTES"]))):
                refusal = entry.refusal if entry.path is None else _place(root, entry.name, entry)
                if refusal:
                    refused.append(Line(entry.name, "failed", reason=refusal))
        finally:
            archive.unlink()
        return root, refused
    for name, save in uploads:
        refusal = _place(root, name, save)
        if refusal:
            refused.append(Line(name, "failed", reason=refusal))
    return root, refused


def _place(root: Path, name: str, source: Entry | Callable[[Path], Any]) -> Any:
    """Save one upload (or ZIP member) under ``root`` by its relative name; why not (a note), or ''."""
    relative = _safe_relative(name)
    if relative is None:
        return note(N_("a file name pacslite does not accept: refused"))
    target = root / relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            raise FileExistsError(str(target))
        if isinstance(source, Entry):
            extract(source, target)
        else:
            source(target)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        return note(N_("another file or a folder has this name already: refused"))
    except (OSError, zipfile.BadZipFile) as exc:
        return note(N_("cannot be saved (%(error)s)"), error=str(exc))
    return ""


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
    source = Source(f"import:{row['created_by']}", batch=f"import-{row['id']}")  # one delivery over all steps
    new = import_entries(conn, settings, batch, target, source)
    report = lines_of(row) + new
    with transaction(conn):
        conn.execute("UPDATE imports SET report = ? WHERE id = ?",
                     (json.dumps([asdict(line) for line in report]), row["id"]))
    done = start_at + len(batch)
    if done >= len(items):
        arrivals.close(conn, source.batch)
        _audit(conn, audit.Actor(row["created_by"]), f"{row['id']}", target, Report(report))
        return jobs.Step(done, len(items), str(done), finished=True, message=", ".join(
            f"{count} {result}" for result, count in sorted(Report(report).counts().items())))
    return jobs.Step(done, len(items), str(done))

