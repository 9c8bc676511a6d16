"""The modality worklist: registered exams answered to C-FIND, so modalities never type numbers.

Matching follows PS3.4 C.2.2.2 as IHE Scheduled Workflow uses it (the engine is
:mod:`pacslite.core.query`): single value, wildcard (``*`` and ``?``), date range and universal
(empty) matching on the keys below; every key the query asks for is returned, empty when
pacslite has no value for it. An exam without a station AE title is scheduled on no particular
station: a query by station gets it only when its modality is the station's (the modality set
for that AE), so a CT console is never offered an MR. Only exams scheduled or in progress are
offered (:data:`pacslite.ris.exams.WORKLIST_STATES`).
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterator, Mapping

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ..core import clock, names
from . import aes, exams, patients
from ..core.query import date_range, matches_name, matches_text, restrict

SPS = "ScheduledProcedureStepSequence"


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
          charset: str) -> Iterator[Dataset]:
    """The answers to a worklist C-FIND, each in the calling modality's character set."""
    station = _value(_sps_query(identifier), "ScheduledStationAETitle")
    station = "" if "*" in station or "?" in station else station
    for exam in find(conn, settings, identifier):
        yield restrict(answer(exam, settings, charset, station), identifier)
