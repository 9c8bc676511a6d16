"""What pacslite sends the HIS over MLLP: the order status (ORM^O01 / OMG^O19 with ORC-1 SC, or
ORU^R01) and the report (ORU^R01), built from the queue's row (:mod:`pacslite.ris.outbox`) in
the HIS's character set, and delivered with a bounded wait for its acknowledgement."""
from __future__ import annotations

import socket
import sqlite3
from typing import Any, Mapping

from ..core import clock
from ..ris import outbox, patients, reports, users
from . import codec

#: The status messages' types (HL7_STATUS_AS).
STATUS_TYPES = {"ORM": ["ORM", "O01", "ORM_O01"], "OMG": ["OMG", "O19", "OMG_O19"], "ORU": ["ORU", "R01", "ORU_R01"]}
RESULT_TYPE = ["ORU", "R01", "ORU_R01"]
#: The exam's source as the patient class (PV1-2).
PATIENT_CLASS = {"outpatient": "O", "inpatient": "I", "emergency": "E", "physical_exam": "O"}
PRIORITY = {"stat": "S", "urgent": "A", "routine": "R"}


def _ts(value: str | None, tz_name: str) -> str:
    """A stored UTC time as an HL7 TS in the department's local time with its offset."""
    moment = clock.from_db(value) if value else None
    return codec.timestamp(tz_name, moment) if moment else ""


def build(conn: sqlite3.Connection, settings: Mapping[str, Any], row: sqlite3.Row) -> outbox.Built:
    """The message for a queued status or result, encoded in the destination's character set."""
    destination = settings["HL7_DESTINATION"]
    charset = codec.codec_of(destination.get("charset") or "UTF-8")
    declared = codec.DECLARED.get(charset, destination.get("charset", ""))
    version = str(destination.get("version") or "2.4")
    exam = patients.find_exam(conn, exam_id=row["exam_ref"])
    control_id = f"PL{row['id']:010d}"
    if row["kind"] == outbox.RESULT:
        kind, body = RESULT_TYPE, _result(conn, settings, exam, row)
    else:
        kind, body = STATUS_TYPES.get(settings["HL7_STATUS_AS"], STATUS_TYPES["ORM"]), _status(settings, exam, row)
    receiver = (str(destination.get("application", "")), str(destination.get("facility", "")))
    lines = [codec.msh(settings, receiver, kind, control_id, version, declared), *_patient(exam), *body]
    return outbox.Built(control_id, ("\r".join(lines) + "\r").encode(charset, errors="replace"))


def _patient(exam: Mapping[str, Any]) -> list[str]:
    pid = codec.segment("PID", "1", "", [exam["patient_id"], "", "", "", "PI"], "", exam["patient_name"], "",
                        (exam["birth_date"] or "").replace("-", ""), exam["sex"] or "U")
    visit = exam["inpatient_number"] if exam["source"] == "inpatient" else exam["outpatient_number"]
    pv1 = codec.segment("PV1", "1", PATIENT_CLASS.get(exam["source"], "O"), [exam["ward"], "", exam["bed"]],
                        *[""] * 15, visit)
    return [pid, pv1]


def _order_segments(settings: Mapping[str, Any], exam: Mapping[str, Any], control: str, order_status: str,
                    result_status: str = "", extra_obr: Mapping[int, Any] | None = None) -> list[str]:
    """ORC and OBR of the exam: the placer's number (ORC-2, OBR-2) and the accession number as
    the filler's (ORC-3, OBR-3); the procedure (OBR-4), OBR-25 the result status."""
    placer, filler = exam["placer_order_number"] or "", exam["accession_number"]
    orc = codec.segment("ORC", control, placer, filler, "", order_status, "",
                        ["", "", "", _ts(exam["scheduled_at"], settings["TIMEZONE"]), "",
                         PRIORITY.get(exam["priority"], "R")], "", _ts(exam["updated_at"], settings["TIMEZONE"]))
    fields: dict[int, Any] = {1: "1", 2: placer, 3: filler,
                              4: [exam["procedure_code"] or "", exam["procedure"], "L" if exam["procedure_code"] else ""],
                              16: ["", exam["requesting_physician"]], 24: exam["dicom_modality"], 25: result_status}
    fields.update(extra_obr or {})
    obr = codec.segment("OBR", *(fields.get(n, "") for n in range(1, max(fields) + 1)))
    return [orc, obr]


def _status(settings: Mapping[str, Any], exam: Mapping[str, Any], row: sqlite3.Row) -> list[str]:
    code = settings["HL7_STATUS_CODES"].get(row["status"], "")
    if settings["HL7_STATUS_AS"] == "ORU":
        return _order_segments(settings, exam, "SC", code, {"A": "P", "CM": "F", "CA": "X", "DC": "X"}.get(code, "I"))
    return _order_segments(settings, exam, "SC", code)


def _result(conn: sqlite3.Connection, settings: Mapping[str, Any], exam: Mapping[str, Any],
            row: sqlite3.Row) -> list[str]:
    """ORC RE, OBR with the signer (OBR-32) and the writer under review (OBR-33), and OBX for the
    findings, the impression, the result class and the critical-finding flag, each with the
    result status (OBX-11: P, F, or C for an amendment)."""
    version = reports.version_by_id(conn, row["report_version_ref"])
    status = row["result_status"]
    signer = version["signed_by"] or version["preliminary_by"] or version["updated_by"]
    named = users.display_names(conn, [signer, version["created_by"]])
    tz = settings["TIMEZONE"]
    signed_at = _ts(version["signed_at"] or version["preliminary_at"], tz)
    writer = named.get(version["created_by"], "") if version["created_by"] != signer else ""
    segments = _order_segments(settings, exam, "RE", "CM" if status != outbox.PRELIMINARY_RESULT else "A", status, {
        7: _ts(exam["performed_at"] or exam["images_first_at"], tz), 22: signed_at,
        32: ["", named.get(signer, signer)], 33: ["", writer] if writer else ""})
    result_class = version["result_class"] or ""
    observations = [("FT", ["FINDINGS", "Findings", "L"], version["findings"], ""),
                    ("FT", ["IMPRESSION", "Impression", "L"], version["impression"], ""),
                    ("CE", ["RESULT_CLASS", "Result class", "L"], [result_class, result_class, "L"] if result_class
                     else "", "AA" if result_class == "critical" else ("A" if result_class == "abnormal" else "N")),
                    ("CE", ["CRITICAL", "Critical finding", "L"], ["Y" if result_class == "critical" else "N"],
                     "AA" if result_class == "critical" else "")]
    for n, (kind, code, value, flag) in enumerate(observations, start=1):
        segments.append(codec.segment("OBX", str(n), kind, code, "", value, "", "", flag, "", "", status, "", "",
                                      signed_at, "", ["", named.get(signer, signer)]))
    return segments


def deliver(settings: Mapping[str, Any], message: bytes) -> outbox.Answer:
    """Send one message and read its acknowledgement (HL7_ACK_SECONDS at most)."""
    destination = settings["HL7_DESTINATION"]
    timeout = float(settings["HL7_ACK_SECONDS"])
    try:
        with socket.create_connection((destination["host"], int(destination["port"])), timeout=timeout) as sock:
            sock.sendall(codec.START + message + codec.END)
            data = b""
            while not data.endswith(codec.END) and len(data) < 1024 * 1024:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
    except OSError as exc:
        return outbox.Answer("", f"{type(exc).__name__}: {exc}")
    if not (data.startswith(codec.START) and data.endswith(codec.END)):
        return outbox.Answer("", "the answer was not an MLLP frame")
    ack = data[1:-2]
    try:
        received = codec.read(ack, destination.get("charset") or "UTF-8")
        msa = codec.segments(received.message, "MSA")[0]
    except (codec.Unreadable, IndexError):
        return outbox.Answer("", "the answer was not an HL7 acknowledgement", ack)
    return outbox.Answer(codec.field(msa, 1).upper(), codec.field(msa, 3), ack)
