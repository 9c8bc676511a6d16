"""The modality worklist: registered exams answered to C-FIND, so modalities never type numbers.

Matching follows PS3.4 C.2.2.2 as IHE Scheduled Workflow uses it (the engine is
:mod:`pacslite.core.query`): single value, wildcard (``*`` and ``?``), date range and universal
(empty) matching on the keys below; every key the query asks for is returned, empty when
pacslite has no value for it. An exam without a station AE title is scheduled on no particular
station: a query by station gets it only when its modality is the station's (the modality set
for that AE), so a CT console is never offered an MR. Only exams scheduled or in progress are
offered (:data:`pacslite.ris.exams.WORKLIST_STATES`).

Which exams each station was offered, and when, is kept for :data:`OFFERS_KEPT` (table
``worklist_offers``): a console can only have picked an exam it was offered, and the
quarantine's ranking weighs that (:mod:`pacslite.pacs.refiling`).
"""
from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..core import clock, names
from . import aes, exams, patients
from ..core.db import transaction
from ..core.query import date_range, matches_name, matches_text, restrict

log = logging.getLogger(__name__)
SPS = "ScheduledProcedureStepSequence"
#: How long the log of what each station was offered is kept.
OFFERS_KEPT = timedelta(days=7)


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


# ---------------------------------------------------------------- the query

def _sps_query(identifier: Dataset) -> Dataset:
    sequence = identifier.get(SPS)
    return sequence[0] if sequence else Dataset()


def find(conn: sqlite3.Connection, settings: Mapping[str, Any], identifier: Dataset) -> list[sqlite3.Row]:
    """The open exams that match a worklist identifier, in schedule order."""
    tz = settings["TIMEZONE"]
    sps = _sps_query(identifier)
    start, end = date_range(_value(sps, "ScheduledProcedureStepStartDate"))
    rows = patients.open_exams(conn, clock.local_day_bounds(start, tz)[0] if start else None,
                               clock.local_day_bounds(end, tz)[1] if end else None)
    modality = _value(sps, "Modality")
    station = _value(sps, "ScheduledStationAETitle")
    unassigned = None if station in ("", "*") else aes.station_modalities(conn, station)
    patient_id = _value(identifier, "PatientID")
    accession = _value(identifier, "AccessionNumber")
    name = _value(identifier, "PatientName")
    return [row for row in rows
            if matches_text(modality, row["dicom_modality"])
            and _on_station(station, unassigned, row)
            and matches_text(patient_id, row["patient_id"])
            and matches_text(accession, row["accession_number"])
            and matches_name(name, row["patient_name"])]


def _on_station(station: str, unassigned: set[str] | None, exam: sqlite3.Row) -> bool:
    """Whether the exam is scheduled on the queried station: its own station AE title matches;
    without one, its modality is one of the queried stations' (``unassigned``; None: any station)."""
    if unassigned is None:
        return True
    if exam["station_ae"]:
        return matches_text(station, exam["station_ae"])
    return exam["dicom_modality"] in unassigned


def answer(exam: sqlite3.Row, settings: Mapping[str, Any], charset: str, station: str) -> Dataset:
    """Every worklist attribute pacslite knows for one exam."""
    local = clock.from_db(exam["scheduled_at"]).astimezone(clock.zone(settings["TIMEZONE"]))
    ds = Dataset()
    ds.SpecificCharacterSet = names.specific_character_set(charset)
    ds.PatientName = names.person_name_for(charset, exam["patient_name"])
    ds.PatientID = exam["patient_id"]
    ds.PatientBirthDate = (exam["birth_date"] or "").replace("-", "")
    ds.PatientSex = exam["sex"]
    ds.AccessionNumber = exam["accession_number"]
    ds.RequestedProcedureID = exam["accession_number"]
    ds.RequestedProcedureDescription = names.for_charset(charset, exam["procedure"])
    ds.StudyInstanceUID = exam["study_instance_uid"]
    physician = exam["requesting_physician"]
    ds.ReferringPhysicianName = names.person_name_for(charset, physician) if physician else ""
    ds.RequestingPhysician = ds.ReferringPhysicianName
    ds.RequestedProcedurePriority = {"stat": "STAT", "urgent": "HIGH"}.get(exam["priority"], "ROUTINE")
    item = Dataset()
    item.Modality = exam["dicom_modality"]
    item.ScheduledStationAETitle = exam["station_ae"] or station
    item.ScheduledProcedureStepStartDate = local.strftime("%Y%m%d")
    item.ScheduledProcedureStepStartTime = local.strftime("%H%M%S")
    item.ScheduledProcedureStepID = exam["accession_number"]
    item.ScheduledProcedureStepDescription = names.for_charset(charset, exam["procedure"])
    item.ScheduledProcedureStepStatus = "STARTED" if exam["status"] == exams.IN_PROGRESS else "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([item])
    return ds


def query(conn: sqlite3.Connection, settings: Mapping[str, Any], identifier: Dataset,
          charset: str, calling_ae: str = "") -> Iterator[Dataset]:
    """The answers to a worklist C-FIND, each in the calling modality's character set; the
    exams answered (at most ``QR_MAX_ANSWERS``) are logged as offered to ``calling_ae``."""
    station = _value(_sps_query(identifier), "ScheduledStationAETitle")
    station = "" if "*" in station or "?" in station else station
    found = find(conn, settings, identifier)
    if calling_ae:
        try:
            record_offers(conn, calling_ae, [exam["id"] for exam in found[:int(settings["QR_MAX_ANSWERS"])]])
        except sqlite3.OperationalError as exc:  # busy for longer than the timeout: the answers still go
            log.warning("worklist offers to %s not logged: %s", calling_ae, exc)
    for exam in found:
        yield restrict(answer(exam, settings, charset, station), identifier)


# ---------------------------------------------------------------- what each station was offered

def record_offers(conn: sqlite3.Connection, calling_ae: str, exam_ids: list[int],
                  at: datetime | None = None) -> None:
    """Log that the worklist offered these exams to ``calling_ae`` now; entries not renewed for
    :data:`OFFERS_KEPT` go. One row per (station, exam): a station polling every minute adds
    nothing but a time."""
    now = clock.to_db(at or clock.now())
    with transaction(conn):
        conn.executemany(
            "INSERT INTO worklist_offers (calling_ae, exam_ref, first_at, last_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (calling_ae, exam_ref) DO UPDATE SET last_at = excluded.last_at",
            [(calling_ae, exam_id, now, now) for exam_id in exam_ids])
        conn.execute("DELETE FROM worklist_offers WHERE last_at < ?",
                     (clock.to_db(clock.from_db(now) - OFFERS_KEPT),))


def offered(conn: sqlite3.Connection, calling_ae: str, exam_ids: list[int],
            before: datetime) -> tuple[set[int], bool]:
    """Of ``exam_ids``, those the worklist had offered to ``calling_ae`` by ``before``; and
    whether the station had been offered anything in the day before (it uses the worklist)."""
    if not calling_ae:
        return set(), False
    until = clock.to_db(before)
    marks = ", ".join("?" * len(exam_ids))
    shown = {row[0] for row in conn.execute(
        f"SELECT exam_ref FROM worklist_offers WHERE calling_ae = ? AND first_at <= ? AND exam_ref IN ({marks})",
        (calling_ae, until, *exam_ids))} if exam_ids else set()
    uses = shown or conn.execute(
        "SELECT 1 FROM worklist_offers WHERE calling_ae = ? AND last_at >= ? AND first_at <= ? LIMIT 1",
        (calling_ae, clock.to_db(before - timedelta(days=1)), until)).fetchone() is not None
    return shown, bool(uses)
