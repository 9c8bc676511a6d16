"""DICOMweb (PS3.18) as pacslite answers it: what a QIDO-RS search finds, what a WADO-RS
retrieve returns, what a STOW-RS store did. HTTP itself (routes, media types, multipart
bodies) is in :mod:`pacslite.web.dicomweb`; this module takes a database connection.

- **Searches** become a Study Root C-FIND identifier and go through :func:`pacslite.pacs.qr.find`,
  the one matching engine: the same keys match the same way, and the same rules hold (filed
  images only, the registered demographics, released studies ``OFFLINE``).
- **Retrieves** name their images by UID through :func:`pacslite.pacs.qr.retrievable`, so a
  quarantined or rejected study is never served. A file goes as stored when the client takes
  its transfer syntax (``transfer-syntax=*`` takes any), otherwise in the form
  :func:`pacslite.pacs.outbound.payload` gives (decompressed, never lossily re-compressed).
- **Metadata** is the stored header with the registered demographics in place of what the
  modality typed, as a search answers; large binary values are referenced by BulkDataURI.
- **Stores** go through :func:`pacslite.pacs.filing.ingest`, so a STOW-RS part is filed or
  quarantined exactly as a C-STORE is, with the same statuses.
"""
from __future__ import annotations

import functools
import io
import itertools
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..core import names, storage
from . import filing, imaging, outbound, qr
from .index import Source
from ..core.query import QueryError

STUDY, SERIES, INSTANCE = "STUDY", "SERIES", "IMAGE"
#: The attributes each level answers without being asked (PS3.18 Table 6.7.1-2, those pacslite knows).
DEFAULT_KEYS = {
    STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
            "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
            "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances"),
    SERIES: ("StudyInstanceUID", "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
             "NumberOfSeriesRelatedInstances", "InstanceAvailability"),
    INSTANCE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber",
               "InstanceAvailability"),
}
#: What ``includefield=all`` adds at each level: the levels above (a relational search).
ABOVE = {STUDY: (), SERIES: (STUDY,), INSTANCE: (STUDY, SERIES)}
BINARY_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
#: Binary values longer than this are referenced (BulkDataURI), not inlined, in metadata.
BULK_THRESHOLD = 1024
PIXEL_DATA = 0x7FE00010
CHARSET = "ISO_IR 192"  # JSON is UTF-8: every name group goes as it is
_QUERY_PARAMETERS = ("limit", "offset", "fuzzymatching", "includefield")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class NotFound(LookupError):
    """Nothing visible has these UIDs (or the frame does not exist)."""


class NotAcceptable(ValueError):
    """The client accepts no form pacslite can give this object in."""


# ---------------------------------------------------------------- QIDO-RS

@dataclass
class Search:
    """A QIDO-RS request, read and checked: a C-FIND identifier and the page wanted."""

    level: str
    identifier: Dataset
    limit: int
    offset: int = 0


def _keyword(name: str) -> str:
    """An attribute named by keyword or by tag (``PatientID`` or ``00100020``), as its keyword."""
    if _TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
    else:
        keyword = name if tag_for_keyword(name) is not None else ""
    if not keyword:
        raise QueryError(f"{name[:40]!r} is not a DICOM attribute")
    return keyword


def _number(name: str, text: str) -> int:
    if not text.isdigit():
        raise QueryError(f"{name} must be a whole number, not {text[:20]!r}")
    return int(text)


def _fuzzy(pattern: str) -> str:
    """``fuzzymatching=true``: each name group without a wildcard matches as the start of a name."""
    return "=".join(group if not group or "*" in group or "?" in group else group + "*"
                    for group in pattern.split("="))


def _set_key(identifier: Dataset, keyword: str, value: str | None) -> None:
    vr = dictionary_VR(keyword)
    if vr == "SQ":
        raise QueryError(f"{keyword} is a sequence: pacslite does not match on sequences")
    if value is not None and vr == "UI":
        value = value.replace(",", "\\")  # a UID list is comma-separated in a URL (PS3.18 8.3.4.1)
    if value is not None and "\\" in value and vr != "UI":
        raise QueryError(f"{keyword}: a list of values only matches UIDs")
    identifier.add_new(tag_for_keyword(keyword), vr, value or None)


def read_search(params: Iterable[tuple[str, str]], level: str, max_results: int,
                study_uid: str | None = None, series_uid: str | None = None) -> Search:
    """The identifier a QIDO-RS query string asks for at ``level`` (under the study or series of
    the path, if any). QueryError for what cannot be answered."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    limit, offset, fuzzy, include_all = max_results, 0, False, False
    wanted: list[str] = list(DEFAULT_KEYS[level])
    matching: dict[str, str] = {}
    for name, value in params:
        if name == "limit":
            limit = min(_number(name, value), max_results)
        elif name == "offset":
            offset = _number(name, value)
        elif name == "fuzzymatching":
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for field_name in (f.strip() for f in value.split(",") if f.strip()):
                if field_name == "all":
                    include_all = True
                else:
                    wanted.append(_keyword(field_name))
        else:
            keyword = _keyword(name)
            if keyword in matching:
                raise QueryError(f"{keyword} is given twice")
            matching[keyword] = value
    if include_all:
        wanted.extend(itertools.chain.from_iterable(DEFAULT_KEYS[above] for above in ABOVE[level]))
    if study_uid is not None:
        matching["StudyInstanceUID"] = study_uid
    if series_uid is not None:
        matching["SeriesInstanceUID"] = series_uid
    for keyword in dict.fromkeys(wanted):
        if keyword not in matching:
            _set_key(identifier, keyword, None)
    for keyword, value in matching.items():
        if fuzzy and dictionary_VR(keyword) == "PN":
            value = _fuzzy(value)
        _set_key(identifier, keyword, value)
    return Search(level, identifier, limit, offset)


@dataclass
class Found:
    """One page of search answers as DICOM JSON, and whether more matched beyond it."""

    answers: list[dict[str, Any]]
    more: bool


def search(conn: sqlite3.Connection, settings: Mapping[str, Any], wanted: Search, base_url: str) -> Found:
    """The page of answers ``wanted`` asks for, each with a RetrieveURL where one applies."""
    answers = qr.find(conn, settings, wanted.identifier, qr.STUDY_ROOT, CHARSET)
    page = list(itertools.islice(answers, wanted.offset, wanted.offset + wanted.limit + 1))
    more = len(page) > wanted.limit
    out = []
    for answer in page[:wanted.limit]:
        answer.RetrieveURL = _retrieve_url(base_url, answer, wanted.level)
        if "QueryRetrieveLevel" in answer:  # C-FIND's, not among PS3.18's QIDO-RS answer attributes
            del answer.QueryRetrieveLevel
        out.append(answer.to_json_dict())
    return Found(out, more)


def _retrieve_url(base_url: str, answer: Dataset, level: str) -> str:
    url = f"{base_url}/studies/{answer.StudyInstanceUID}"
    if level in (SERIES, INSTANCE):
        url += f"/series/{answer.SeriesInstanceUID}"
    if level == INSTANCE:
        url += f"/instances/{answer.SOPInstanceUID}"
    return url


# ---------------------------------------------------------------- WADO-RS: which images

def images(conn: sqlite3.Connection, study_uid: str, series_uid: str | None = None,
           instance_uid: str | None = None) -> list[sqlite3.Row]:
    """The filed images of a study, series or instance, in order; NotFound if there are none."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = INSTANCE if instance_uid else SERIES if series_uid else STUDY
    identifier.StudyInstanceUID = study_uid
    if series_uid:
        identifier.SeriesInstanceUID = series_uid
    if instance_uid:
        identifier.SOPInstanceUID = instance_uid
    try:
        rows = qr.retrievable(conn, identifier, qr.STUDY_ROOT)
    except QueryError as exc:
        raise NotFound(str(exc)) from None
    if not rows:
        raise NotFound("no such study, series or instance")
    return rows


def online(rows: Sequence[sqlite3.Row]) -> tuple[list[sqlite3.Row], int]:
    """The images that can be read now, and how many are released to an archive volume."""
    present = [row for row in rows if not row["released_at"]]
    return present, len(rows) - len(present)


# ---------------------------------------------------------------- WADO-RS: instances

def goes_as_stored(row: Mapping[str, Any], syntaxes: Sequence[str]) -> bool:
    """Whether the client takes the instance in the transfer syntax it is stored in."""
    return "*" in syntaxes or row["transfer_syntax_uid"] in syntaxes


def instance_bytes(store: str | Path, row: sqlite3.Row, syntaxes: Sequence[str]) -> tuple[Path | bytes, str]:
    """The instance as a Part 10 file in the first of ``syntaxes`` pacslite can give ("*": as
    stored): the stored file unchanged, or the image decompressed. NotAcceptable otherwise."""
    stored = row["transfer_syntax_uid"]
    if goes_as_stored(row, syntaxes):
        return storage.resolve(store, row["storage_path"]), stored
    for syntax in syntaxes:
        try:
            payload = outbound.payload(store, row, {syntax})
        except outbound.Unsendable:
            continue
        if isinstance(payload, Path):
            return payload, syntax
        return _encoded(payload, UID(syntax)), syntax
    raise NotAcceptable(f"{row['sop_instance_uid']} is stored as {stored}; it cannot be given as"
                        f" {', '.join(syntaxes)}")


def _encoded(ds: Dataset, syntax: UID) -> bytes:
    meta = ds.file_meta if isinstance(getattr(ds, "file_meta", None), FileMetaDataset) else FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# ---------------------------------------------------------------- WADO-RS: metadata and bulk data

def with_registered_demographics(ds: Dataset, row: Mapping[str, Any]) -> Dataset:
    """The header as a search answers it: the patient and accession number as registered."""
    ds.SpecificCharacterSet = CHARSET
    ds.PatientName = names.person_name_for(CHARSET, row["patient_name"])
    ds.PatientID = row["patient_id"]
    ds.PatientBirthDate = (row["birth_date"] or "").replace("-", "")
    ds.PatientSex = row["sex"] or ""
    ds.AccessionNumber = row["accession_number"]
    return ds


#: The version of what the metadata cache holds; a new one ignores the old files.
METADATA_FORMAT = "dicomweb-metadata-1"
_BULK = "bulkdata/"


def metadata(store: str | Path, row: Mapping[str, Any], instance_url: str, cache: imaging.Cache) -> dict[str, Any]:
    """The instance's DICOM JSON metadata with the registered demographics; binary values over
    :data:`BULK_THRESHOLD` bytes (the pixel data among them) referenced by BulkDataURI under
    ``instance_url``. What comes from the file is cached by its hash: the file never changes
    under it, and reading a header through pydicom costs milliseconds per instance."""
    key = f"{row['sha256']}:{METADATA_FORMAT}"
    cached = cache.read(key)
    if cached is None:
        from_file = _file_metadata(storage.resolve(store, row["storage_path"]))
        cache.write(key, json.dumps(from_file, separators=(",", ":")).encode())
    else:
        from_file = json.loads(cached)
    out = {**from_file, **_registered_json(row["patient_name"], row["patient_id"], row["birth_date"] or "",
                                           row["sex"] or "", row["accession_number"])}
    for key, value in out.items():
        uri = value.get("BulkDataURI")
        if uri and uri.startswith(_BULK):
            out[key] = {**value, "BulkDataURI": f"{instance_url}/{uri}"}
    out["00083002"] = {"vr": "UI", "Value": [row["transfer_syntax_uid"]]}  # AvailableTransferSyntaxUID
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=256)
def _registered_json(name: str, patient_id: str, birth_date: str, sex: str, accession: str) -> dict[str, Any]:
    ds = with_registered_demographics(Dataset(), {"patient_name": name, "patient_id": patient_id,
                                                  "birth_date": birth_date, "sex": sex,
                                                  "accession_number": accession})
    return ds.to_json_dict()


def _file_metadata(path: Path) -> dict[str, Any]:
    """The file's data set as DICOM JSON, large binary values as relative ``bulkdata/<tag>``
    URIs. Large values are deferred by the reader, so the pixel data is never read for this."""
    ds = dcmread(path, defer_size=BULK_THRESHOLD)
    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        key = f"{int(tag):08X}"
        deferred = getattr(raw, "value", b"") is None and getattr(raw, "length", 0)
        if deferred:
            vr = raw.VR or _dictionary_vr(int(tag))
            if vr in BINARY_VRS:
                out[key] = {"vr": vr, "BulkDataURI": f"{_BULK}{key}"}
                continue
        element = ds[tag]
        if element.VR in BINARY_VRS and element.value is not None and len(element.value) > BULK_THRESHOLD:
            out[key] = {"vr": element.VR, "BulkDataURI": f"{_BULK}{key}"}
        else:
            out[key] = element.to_json_dict(None, BULK_THRESHOLD)
    return out


def _dictionary_vr(tag: int) -> str:
    """An implicit-VR element's VR by the dictionary; pixel data is OW, anything unknown UN."""
    try:
        return dictionary_VR(tag).split(" or ")[-1]
    except KeyError:
        return "UN"


def bulk_value(store: str | Path, row: sqlite3.Row, tag: int) -> bytes:
    """A top-level binary value the metadata referenced (not the pixel data: that goes by frame)."""
    ds = dcmread(storage.resolve(store, row["storage_path"]), stop_before_pixels=True)
    element = ds.get(tag)
    if element is None or element.VR not in BINARY_VRS or element.value is None:
        raise NotFound(f"{tag:08X} is not a bulk data value of this instance")
    return bytes(element.value)


# ---------------------------------------------------------------- WADO-RS: frames and rendered

@dataclass
class Frames:
    """Frames of one instance: their bytes and the transfer syntax they are in."""

    data: list[bytes] = field(default_factory=list)
    transfer_syntax: str = ""


def frame_numbers(text: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5]; QueryError unless each is a whole number from 1. A frame asked
    twice is given once (in the order first asked), so that the answer is never more than the
    instance's frames: ``1,1,1,…`` made a 20 KB URL answer 329 MB."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise QueryError(f"{text[:40]!r} is not a list of frame numbers") from None
    if not numbers or min(numbers) < 1 or len(numbers) > 10_000:
        raise QueryError("frame numbers start at 1")
    return list(dict.fromkeys(numbers))


def frames(store: str | Path, row: sqlite3.Row, numbers: Sequence[int] | None, syntaxes: Sequence[str]) -> Frames:
    """The pixel data of frames ``numbers`` (from 1; None: all): as stored when the client takes
    the stored transfer syntax ("*" takes any), otherwise decompressed (Explicit VR Little Endian)."""
    ds = dcmread(storage.resolve(store, row["storage_path"]))
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data")
    count = imaging.frame_count(ds)
    numbers = numbers or range(1, count + 1)
    if max(numbers) > count:
        raise NotFound(f"the instance has {count} frame(s)")
    stored = UID(row["transfer_syntax_uid"])
    as_stored = "*" in syntaxes or stored in syntaxes
    if stored.is_compressed and as_stored:
        return Frames([get_frame(ds.PixelData, n - 1, number_of_frames=count) for n in numbers], stored)
    if stored.is_compressed:
        if not set(syntaxes) & {ExplicitVRLittleEndian, ""}:
            raise NotAcceptable(f"the frames are stored as {stored}")
        ds.decompress(generate_instance_uid=False)
    elif not as_stored and not set(syntaxes) & {ExplicitVRLittleEndian, ""}:
        raise NotAcceptable(f"the frames are stored uncompressed ({stored})")
    bits = int(ds.BitsAllocated)
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits
    if size % 8:
        raise NotAcceptable(f"frames of {bits}-bit pixels that do not fill whole bytes")
    size //= 8
    pixels = ds.PixelData
    syntax = stored if as_stored else ExplicitVRLittleEndian
    return Frames([bytes(pixels[(n - 1) * size:n * size]) for n in numbers], syntax)


def rendered(cache: imaging.Cache, store: str | Path, row: Mapping[str, Any], view: imaging.View,
             image_type: str) -> bytes:
    """A frame as the browser's viewer shows it, through the render cache: image/png as
    cached, or image/jpeg (DICOMweb's default) made from it."""
    data = cache.get_or_render(row["sha256"], storage.resolve(store, row["storage_path"]), view).data
    return imaging.jpeg(data) if image_type == "image/jpeg" else data


# ---------------------------------------------------------------- STOW-RS

@dataclass
class StoreResult:
    """What became of one part of a STOW-RS request."""

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    failure: int | None = None  # the DICOM status of the failure; None: stored
    reason: str = ""
    outcome: str = ""  # filing's result when stored (filed, quarantined, duplicate, …)
    study_instance_uid: str = ""
    series_instance_uid: str = ""


def store_part(conn: sqlite3.Connection, settings: Mapping[str, Any], tmp_file: Path, source: Source,
               study_uid: str | None) -> StoreResult:
    """Ingest one part (a Part 10 file in the store's temporary area) as a C-STORE would be."""
    try:
        header = filing.read_header(tmp_file)
    except filing.IngestError as exc:
        return StoreResult(failure=exc.status, reason=str(exc))
    result = StoreResult(header.sop_class_uid, header.sop_instance_uid, study_instance_uid=header.study_instance_uid,
                         series_instance_uid=header.series_instance_uid)
    if study_uid is not None and header.study_instance_uid != study_uid:
        result.failure, result.reason = filing.DATA_SET_MISMATCH, f"not an instance of study {study_uid}"
        return result
    try:
        outcome = filing.ingest(conn, settings["STORAGE_DIR"], tmp_file, source,
                                high_water_percent=settings["STORAGE_HIGH_WATER_PERCENT"])
    except filing.IngestError as exc:
        result.failure, result.reason = exc.status, str(exc)
        return result
    result.outcome = outcome.result
    return result


def unreadable_part(reason: str, status: int = filing.CANNOT_UNDERSTAND) -> StoreResult:
    """A part that was not a DICOM file at all (another media type, an empty body)."""
    return StoreResult(failure=status, reason=reason)


def store_response(results: Sequence[StoreResult], base_url: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the response data set (PS3.18 10.5.3): 200 all stored, 202 some
    failed, 409 none stored."""
    response = Dataset()
    stored = [r for r in results if r.failure is None]
    failed = [r for r in results if r.failure is not None]
    if stored:
        response.ReferencedSOPSequence = [_referenced(r, base_url) for r in stored]
    if failed:
        response.FailedSOPSequence = [_failed(r) for r in failed]
    if stored and len({r.study_instance_uid for r in stored}) == 1 and stored[0].outcome != filing.QUARANTINED:
        response.RetrieveURL = f"{base_url}/studies/{stored[0].study_instance_uid}"
    status = 200 if not failed else 202 if stored else 409
    return status, response.to_json_dict()


def _referenced(result: StoreResult, base_url: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = result.sop_class_uid
    item.ReferencedSOPInstanceUID = result.sop_instance_uid
    if result.outcome != filing.QUARANTINED:  # a quarantined image is kept, not filed: nothing to retrieve yet
        item.RetrieveURL = (f"{base_url}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
                            f"/instances/{result.sop_instance_uid}")
    return item


def _failed(result: StoreResult) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = result.sop_class_uid or None
    item.ReferencedSOPInstanceUID = result.sop_instance_uid or None
    item.FailureReason = result.failure
    return item
