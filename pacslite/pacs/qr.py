"""Query/Retrieve C-FIND (IHE RAD-14): which stored images a workstation may find, and the answers.

Patient Root and Study Root information models, levels PATIENT, STUDY, SERIES and IMAGE.
**Only filed images are answered** (:data:`pacslite.pacs.index.VISIBLE`): a quarantined or rejected
study is never returned as a patient's images, since it may belong to someone else. Answers
carry the registered (corrected) demographics, not what the modality typed, in the calling
AE's character set; released studies are answered with InstanceAvailability ``OFFLINE``.

The database narrows the candidates with what it can match by index (lists of UIDs, a single
accession number or patient ID, a study date range, the start of a name); every key is then
matched by :mod:`pacslite.core.query`, the same engine as the worklist. Relational queries (a lower
level without the unique keys above it) are answered too. The caller stops after
``QR_MAX_ANSWERS`` answers.
"""
from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from pydicom.dataset import Dataset

from ..core import names
from . import index
from ..core.query import QueryError, date_range, matches_name, matches_text, restrict

PATIENT_ROOT, STUDY_ROOT = "patient", "study"
LEVELS = {PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"), STUDY_ROOT: ("STUDY", "SERIES", "IMAGE")}
ONLINE, OFFLINE = "ONLINE", "OFFLINE"

_FROM = {
    "PATIENT": "FROM patients p JOIN exams e ON e.patient_ref = p.id JOIN studies s ON s.exam_ref = e.id",
    "STUDY": "FROM studies s JOIN exams e ON e.id = s.exam_ref JOIN patients p ON p.id = e.patient_ref",
    "SERIES": "FROM series se JOIN studies s ON s.id = se.study_ref JOIN exams e ON e.id = s.exam_ref"
              " JOIN patients p ON p.id = e.patient_ref",
    "IMAGE": "FROM instances i JOIN series se ON se.id = i.series_ref JOIN studies s ON s.id = se.study_ref"
             " JOIN exams e ON e.id = s.exam_ref JOIN patients p ON p.id = e.patient_ref",
}
_PATIENT_COLUMNS = "p.id AS patient_ref, p.patient_id, p.name AS patient_name, p.birth_date, p.sex"
_STUDY_COLUMNS = (", s.id AS study_ref, s.study_instance_uid, s.study_date, s.study_time, s.study_id,"
                  " s.study_description, s.series_count, s.instance_count, e.accession_number, e.procedure,"
                  " e.requesting_physician")
_SERIES_COLUMNS = (", se.id AS series_ref, se.series_instance_uid, se.modality, se.series_number,"
                   " se.series_description, se.instance_count AS series_instances")
_IMAGE_COLUMNS = (", i.id AS instance_ref, i.sop_class_uid, i.sop_instance_uid, i.instance_number, i.released_at,"
                  " i.sha256, i.storage_path, i.transfer_syntax_uid")
_COLUMNS = {"PATIENT": _PATIENT_COLUMNS, "STUDY": _PATIENT_COLUMNS + _STUDY_COLUMNS,
            "SERIES": _PATIENT_COLUMNS + _STUDY_COLUMNS + _SERIES_COLUMNS,
            "IMAGE": _PATIENT_COLUMNS + _STUDY_COLUMNS + _SERIES_COLUMNS + _IMAGE_COLUMNS}
_ORDER = {"PATIENT": "p.id", "STUDY": "s.id", "SERIES": "s.id, se.id", "IMAGE": "s.id, se.id, i.id"}
_UID_COLUMNS = {"StudyInstanceUID": "s.study_instance_uid", "SeriesInstanceUID": "se.series_instance_uid",
                "SOPInstanceUID": "i.sop_instance_uid", "SOPClassUID": "i.sop_class_uid"}
_UID_LEVEL = {"StudyInstanceUID": "STUDY", "SeriesInstanceUID": "SERIES", "SOPInstanceUID": "IMAGE",
              "SOPClassUID": "IMAGE"}
_DEPTH = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}
_PINYIN_PREFIX = re.compile(r"[A-Za-z]+")


def _value(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except (ValueError, TypeError, LookupError) as exc:
        raise QueryError(f"{keyword} cannot be read: {exc}") from None
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _uids(text: str, keyword: str) -> list[str]:
    """A list of UIDs (PS3.4 C.2.2.2.2): no wildcards, each a valid UID."""
    found = [u.strip() for u in text.split("\\") if u.strip()]
    if any(not re.fullmatch(r"[0-9]+(\.[0-9]+)*", u) or len(u) > 64 for u in found) or len(found) > 1000:
        raise QueryError(f"{keyword} must be a list of UIDs")
    return found


@dataclass
class Query:
    """A C-FIND identifier, read and checked."""

    model: str
    level: str
    identifier: Dataset

    @functools.cached_property
    def _keys(self) -> dict[str, str]:
        return {}

    def key(self, keyword: str) -> str:
        """The key's text (read once: every candidate row is matched against it)."""
        keys = self._keys
        if keyword not in keys:
            keys[keyword] = _value(self.identifier, keyword)
        return keys[keyword]

    @functools.cached_property
    def _asked(self) -> frozenset[str]:
        return frozenset(element.keyword for element in self.identifier)

    def asks(self, keyword: str) -> bool:
        return keyword in self._asked


def read_query(identifier: Dataset, model: str) -> Query:
    level = _value(identifier, "QueryRetrieveLevel").upper()
    if level not in LEVELS[model]:
        raise QueryError(f"QueryRetrieveLevel {level[:16]!r} is not one of {', '.join(LEVELS[model])}")
    return Query(model, level, identifier)


# ---------------------------------------------------------------- candidates, by index

def _narrowing(query: Query) -> tuple[list[str], list[Any]]:
    """SQL conditions that only narrow (a superset of the answers): index-friendly keys."""
    clauses, params = [index.VISIBLE], []
    depth = _DEPTH[query.level]
    for keyword, column in _UID_COLUMNS.items():
        text = query.key(keyword)
        if text and _DEPTH[_UID_LEVEL[keyword]] <= depth:
            uids = _uids(text, keyword)
            if uids:
                clauses.append(f"{column} IN ({', '.join('?' * len(uids))})")
                params.extend(uids)
    for keyword, column in (("PatientID", "p.patient_id"), ("AccessionNumber", "e.accession_number")):
        text = query.key(keyword)
        if text and "*" not in text and "?" not in text and (depth >= 1 or keyword == "PatientID"):
            clauses.append(f"{column} = ?")
            params.append(text)
    if depth >= 1:
        start, end = date_range(query.key("StudyDate"))
        if start is not None:
            clauses.append("s.study_date >= ?")
            params.append(start.strftime("%Y%m%d"))
        if end is not None:
            clauses.append("s.study_date <= ?")
            params.append(end.strftime("%Y%m%d"))
    clauses.extend(_name_prefix(query.key("PatientName"), params))
    return clauses, params


def _prefix_range(prefix: str) -> tuple[str, str]:
    """[prefix, the next string after every one starting with prefix): an index range."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _name_prefix(pattern: str, params: list[Any]) -> list[str]:
    """The literal start of a name query as an index range: on the ideographs, or on the pinyin
    written without spaces (``WANG^XIAOMING`` and ``wangxiao*`` start ``wangxiao``)."""
    groups = [g for g in pattern.split("=") if g]
    if len(groups) != 1:
        return []
    literal = re.split(r"[*?]", groups[0], maxsplit=1)[0]
    if names.is_chinese(literal):
        ideographs = "".join(c for c in literal if names.is_chinese(c))
        if ideographs and literal.replace("^", "").startswith(ideographs):
            params.extend(_prefix_range(ideographs))
            return ["p.name >= ? AND p.name < ?"]
        return []
    letters = _PINYIN_PREFIX.match(literal.replace("^", "").replace(" ", ""))
    if letters and len(letters.group(0)) >= 2:
        params.extend(_prefix_range(letters.group(0).lower()))
        return ["REPLACE(p.name_pinyin, ' ', '') >= ? AND REPLACE(p.name_pinyin, ' ', '') < ?"]
    return []


def _candidates(conn: sqlite3.Connection, query: Query) -> Iterator[sqlite3.Row]:
    clauses, params = _narrowing(query)
    group = " GROUP BY p.id" if query.level == "PATIENT" else ""
    columns = _COLUMNS[query.level] + (", COUNT(DISTINCT s.id) AS studies" if query.level == "PATIENT" else "")
    order = _ORDER[query.level]
    if len(clauses) > 1:  # narrowed by an index: sort what it finds, do not scan in id order to avoid sorting
        order = ", ".join(f"+{column.strip()}" for column in order.split(","))
    sql = f"SELECT {columns} {_FROM[query.level]} WHERE {' AND '.join(clauses)}{group} ORDER BY {order}"
    yield from conn.execute(sql, params)


# ---------------------------------------------------------------- matching every key

def _in_range(query_text: str, value: str, parse: Any) -> bool:
    if not query_text:
        return True
    start, end = parse(query_text)
    return (start is None or value >= start) and (end is None or value <= end)


def _date_range(text: str) -> tuple[str | None, str | None]:
    start, end = date_range(text)
    return (start.strftime("%Y%m%d") if start else None), (end.strftime("%Y%m%d") if end else None)


def _time_range(text: str) -> tuple[str | None, str | None]:
    def clean(part: str) -> str | None:
        part = part.strip().split(".")[0].replace(":", "")
        if part and not part.isdigit():
            raise QueryError(f"not a DICOM time: {text[:20]!r}")
        return part or None
    start, _, end = text.partition("-") if "-" in text else (text, "", text)
    low, high = clean(start), clean(end)
    return low, (high + "999999"[len(high):] if high else None)


def _uid_matches(text: str, keyword: str, value: str) -> bool:
    return not text or value in _uids(text, keyword)


def _patient_matches(query: Query, row: sqlite3.Row) -> bool:
    return (matches_name(query.key("PatientName"), row["patient_name"])
            and matches_text(query.key("PatientID"), row["patient_id"])
            and _in_range(query.key("PatientBirthDate"), (row["birth_date"] or "").replace("-", ""), _date_range)
            and matches_text(query.key("PatientSex"), row["sex"] or ""))


def _study_matches(conn: sqlite3.Connection, query: Query, row: sqlite3.Row) -> bool:
    if not (_uid_matches(query.key("StudyInstanceUID"), "StudyInstanceUID", row["study_instance_uid"])
            and _in_range(query.key("StudyDate"), row["study_date"], _date_range)
            and _in_range(query.key("StudyTime"), row["study_time"], _time_range)
            and matches_text(query.key("AccessionNumber"), row["accession_number"])
            and matches_text(query.key("StudyID"), row["study_id"])
            and matches_text(query.key("StudyDescription"), _description(row), ignore_case=True)
            and matches_text(query.key("ReferringPhysicianName"), _physician(row, with_ideographs=False),
                             ignore_case=True)):
        return False
    wanted = query.key("ModalitiesInStudy")
    if wanted:
        found = _modalities(conn, row["study_ref"])
        return any(matches_text(w, m) for w in wanted.split("\\") for m in found)
    return True


def _series_matches(query: Query, row: sqlite3.Row) -> bool:
    return (_uid_matches(query.key("SeriesInstanceUID"), "SeriesInstanceUID", row["series_instance_uid"])
            and matches_text(query.key("Modality"), row["modality"])
            and matches_text(query.key("SeriesNumber"), row["series_number"])
            and matches_text(query.key("SeriesDescription"), row["series_description"], ignore_case=True))


def _image_matches(query: Query, row: sqlite3.Row) -> bool:
    return (_uid_matches(query.key("SOPInstanceUID"), "SOPInstanceUID", row["sop_instance_uid"])
            and _uid_matches(query.key("SOPClassUID"), "SOPClassUID", row["sop_class_uid"])
            and matches_text(query.key("InstanceNumber"), row["instance_number"]))


def _matches(conn: sqlite3.Connection, query: Query, row: sqlite3.Row) -> bool:
    depth = _DEPTH[query.level]
    return (_patient_matches(query, row)
            and (depth < 1 or _study_matches(conn, query, row))
            and (depth < 2 or _series_matches(query, row))
            and (depth < 3 or _image_matches(query, row)))


# ---------------------------------------------------------------- answers

def _description(row: sqlite3.Row) -> str:
    return row["study_description"] or row["procedure"] or ""


def _physician(row: sqlite3.Row, with_ideographs: bool) -> str:
    physician = row["requesting_physician"] or ""
    return names.dicom_person_name(physician, with_ideographs=with_ideographs) if physician else ""


def _modalities(conn: sqlite3.Connection, study_ref: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT modality FROM series WHERE study_ref = ? AND modality != ''"
                                       " ORDER BY modality", (study_ref,))]


def _availability(conn: sqlite3.Connection, column: str, ref: int) -> str:
    """ONLINE while any of the study's (or series') images is online, else OFFLINE."""
    join = "JOIN series se ON se.id = i.series_ref WHERE se.study_ref = ?" if column == "study" \
        else "WHERE i.series_ref = ?"
    online = conn.execute(f"SELECT 1 FROM instances i {join} AND i.released_at IS NULL LIMIT 1", (ref,)).fetchone()
    return ONLINE if online else OFFLINE


def _patient_counts(conn: sqlite3.Connection, patient_ref: int) -> tuple[int, int, int]:
    row = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(s.series_count), 0), COALESCE(SUM(s.instance_count), 0)"
                       f" FROM studies s JOIN exams e ON e.id = s.exam_ref WHERE e.patient_ref = ? AND {index.VISIBLE}",
                       (patient_ref,)).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def answer(conn: sqlite3.Connection, query: Query, row: sqlite3.Row, settings: Mapping[str, Any],
           charset: str) -> Dataset:
    """The attributes the query asks for that pacslite knows at its level (the caller adds the
    asked ones it does not know, empty). Only what is asked is made: a pydicom element costs
    about 12 µs, and a day's studies are hundreds of answers."""
    ds = Dataset()
    ds.SpecificCharacterSet = names.specific_character_set(charset)
    for keyword, value in _known(conn, query, row, settings, charset).items():
        if query.asks(keyword):
            setattr(ds, keyword, value())
    return ds


def _known(conn: sqlite3.Connection, query: Query, row: sqlite3.Row, settings: Mapping[str, Any],
           charset: str) -> dict[str, Callable[[], Any]]:
    """What pacslite knows of the row at the query's level: keyword → how to get its value."""
    known: dict[str, Callable[[], Any]] = {
        "QueryRetrieveLevel": lambda: query.level, "RetrieveAETitle": lambda: settings["AE_TITLE"],
        "PatientName": lambda: names.person_name_for(charset, row["patient_name"]),
        "PatientID": lambda: row["patient_id"],
        "PatientBirthDate": lambda: (row["birth_date"] or "").replace("-", ""),
        "PatientSex": lambda: row["sex"] or ""}
    if query.level == "PATIENT" or query.asks("NumberOfPatientRelatedStudies") or query.asks(
            "NumberOfPatientRelatedSeries") or query.asks("NumberOfPatientRelatedInstances"):
        studies, series, instances = _patient_counts(conn, row["patient_ref"])  # one query for the three
        known.update({"NumberOfPatientRelatedStudies": lambda: studies,
                      "NumberOfPatientRelatedSeries": lambda: series,
                      "NumberOfPatientRelatedInstances": lambda: instances})
    if query.level == "PATIENT":
        return known
    physician = row["requesting_physician"] or ""
    known.update({
        "StudyInstanceUID": lambda: row["study_instance_uid"], "StudyDate": lambda: row["study_date"],
        "StudyTime": lambda: row["study_time"], "StudyID": lambda: row["study_id"],
        "AccessionNumber": lambda: row["accession_number"],
        "StudyDescription": lambda: names.for_charset(charset, _description(row)),
        "ReferringPhysicianName": lambda: names.person_name_for(charset, physician) if physician else "",
        "ModalitiesInStudy": lambda: _modalities(conn, row["study_ref"]),
        "NumberOfStudyRelatedSeries": lambda: row["series_count"],
        "NumberOfStudyRelatedInstances": lambda: row["instance_count"]})
    if query.level == "STUDY":
        known["InstanceAvailability"] = lambda: _availability(conn, "study", row["study_ref"])
        return known
    known.update({
        "SeriesInstanceUID": lambda: row["series_instance_uid"], "Modality": lambda: row["modality"],
        "SeriesNumber": lambda: row["series_number"] or None,
        "SeriesDescription": lambda: names.for_charset(charset, row["series_description"]),
        "NumberOfSeriesRelatedInstances": lambda: row["series_instances"]})
    if query.level == "SERIES":
        known["InstanceAvailability"] = lambda: _availability(conn, "series", row["series_ref"])
        return known
    known.update({
        "SOPClassUID": lambda: row["sop_class_uid"], "SOPInstanceUID": lambda: row["sop_instance_uid"],
        "InstanceNumber": lambda: row["instance_number"] or None,
        "InstanceAvailability": lambda: OFFLINE if row["released_at"] else ONLINE})
    return known


def find(conn: sqlite3.Connection, settings: Mapping[str, Any], identifier: Dataset, model: str,
         charset: str) -> Iterator[Dataset]:
    """The answers to a Query/Retrieve C-FIND, each with only the requested keys, in the
    calling AE's character set. QueryError for an identifier that cannot be answered."""
    query = read_query(identifier, model)
    for row in _candidates(conn, query):
        if _matches(conn, query, row):
            yield restrict(answer(conn, query, row, settings, charset), identifier)


# ---------------------------------------------------------------- what a retrieve sends

#: The unique key of each level: a retrieve names what it wants by these (PS3.4 C.4.2.2.1).
UNIQUE_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
               "IMAGE": "SOPInstanceUID"}


def _unique(text: str, keyword: str) -> None:
    """A retrieve's unique key names its objects (PS3.4 C.4.2.2.1): one patient ID, or UIDs
    (one or a list); a wildcard or a range would widen it to everything it matches."""
    if keyword == "PatientID":
        if any(c in text for c in "*?\\"):
            raise QueryError("PatientID in a retrieve must be one patient ID, without wildcards")
    elif not _uids(text, keyword) or any(c in text for c in "*?-"):
        raise QueryError(f"{keyword} in a retrieve must be a UID or a list of UIDs")


def retrievable(conn: sqlite3.Connection, identifier: Dataset, model: str) -> list[sqlite3.Row]:
    """The images a C-MOVE or C-GET identifier names (by the unique keys of its level and the
    levels above), filed ones only, in study, series and image order."""
    query = read_query(identifier, model)
    wanted = Dataset()
    wanted.QueryRetrieveLevel = "IMAGE"
    depth = _DEPTH[query.level]
    for level, keyword in UNIQUE_KEYS.items():
        text = query.key(keyword)
        if _DEPTH[level] <= depth and text:
            _unique(text, keyword)
            setattr(wanted, keyword, text.split("\\") if "\\" in text else text)
        elif _DEPTH[level] == depth:
            raise QueryError(f"a {query.level} retrieve needs {keyword}")
    images = Query(model, "IMAGE", wanted)
    return [row for row in _candidates(conn, images) if _matches(conn, images, row)]
