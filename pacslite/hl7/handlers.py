"""HL7 v2 messages → one domain call each. :func:`handle` never raises: every message gets an
acknowledgement (AA, AE or AR with ERR), sent only after its change is committed
(:func:`pacslite.ris.messages.apply_once`).

- ADT^A01/A04/A05/A08/A28/A31 (and A03): the patient, created or updated (``patients.receive_patient``);
- ADT^A02: the patient's ward and bed, which the exams not yet reported follow (``orders.transfer``);
- ADT^A40 (merge, MRG-1 the prior ID) and A47 (change of patient ID): ``merging``;
- ORM^O01, OMI^O23, OML^O21: each ORC/OBR pair an order (``orders.receive``), all or none.
"""
from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from typing import Any, Callable, Mapping

from ..core import audit, config
from ..core.db import transaction
from ..core.validation import N_, Conflict
from ..pacs import merging
from ..ris import messages, orders, patients
from . import codec

log = logging.getLogger(__name__)

#: Where a domain field is in a message, for ERR-2.
LOCATIONS = {"patient_id": "PID-3", "national_id": "PID-3", "name": "PID-5", "birth_date": "PID-7", "sex": "PID-8",
             "phone": "PID-13", "source": "PV1-2", "ward": "PV1-3", "bed": "PV1-3", "placer_order_number": "ORC-2",
             "priority": "ORC-7", "scheduled_at": "ORC-7", "requesting_physician": "ORC-12",
             "requesting_department": "ORC-17", "procedure_code": "OBR-4", "procedure": "OBR-4",
             "clinical_note": "OBR-13", "modality": "OBR-24", "station_ae": "OBR-24"}
#: Identifier type codes (CX-5) of a resident ID card number in PID-3.
NATIONAL_ID_TYPES = ("NNCHN", "NI", "ID", "CZ")
SEXES = {"M": "M", "F": "F", "O": "O", "U": "", "A": "O", "N": ""}
PRIORITIES = {"S": "stat", "STAT": "stat", "A": "urgent", "ASAP": "urgent", "U": "urgent", "UR": "urgent"}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")

Change = Callable[[sqlite3.Connection], messages.Applied]


def handle(conn: sqlite3.Connection, settings: Mapping[str, Any], raw: bytes, address: str,
           also: Callable[[sqlite3.Connection], None] | None = None) -> bytes:
    """The acknowledgement of one message from ``address``, its change committed first (and
    ``also``, in the same transaction: the audit of an admin's *process again*)."""
    received: codec.Received | None = None

    def answer(outcome: messages.Outcome) -> bytes:
        return codec.ack(settings, raw, received, outcome, LOCATIONS)

    try:
        fields = codec.header_fields(raw)
    except codec.Unreadable as exc:
        return answer(messages.Outcome(exc.code, exc.message, exc.error_code, exc.field))
    application = fields[2].split(fields[1][:1] or "^")[0] if len(fields) > 2 else ""
    sender = _sender(settings, application, address)
    if sender is None:  # not kept: a stranger must not fill the database
        log.warning("HL7: refused a message from application %r at %s (not in HL7_SENDERS)", application[:40], address)
        return answer(messages.Outcome(messages.REJECTED, "sending application or host not allowed",
                                       messages.INTERNAL, "MSH-3"))
    try:
        received = codec.read(raw, sender.get("charset") or settings["HL7_CHARSET"])
        change = _change_for(settings, received, audit.Actor(f"hl7:{application}"[:64], address))
    except messages.Refused as exc:
        header = received.header if received else _unread_header(fields, raw)
        return messages.record_refused(conn, header, raw, address,
                                       messages.Outcome(exc.code, exc.message, exc.error_code, exc.field), answer)
    if also is not None:
        change = _with(also, change)
    ack = messages.apply_once(conn, received.header, raw, address, change, answer)
    if received.header.message_type.endswith(MERGE_EVENTS):
        merging.ensure_job(conn)  # the merged patient's files are rewritten in the background
    return ack


def _with(also: Callable[[sqlite3.Connection], None], change: Change) -> Change:
    def both(conn: sqlite3.Connection) -> messages.Applied:
        also(conn)
        return change(conn)
    return both


def process_again(conn: sqlite3.Connection, settings: Mapping[str, Any], actor: audit.Actor, message_id: int) -> str:
    """An admin's *process again* of a failed message, as it arrived (after the cause was put
    right: the procedure added to the catalogue, say); the new outcome (AA, AE, AR), audited."""
    row = messages.get(conn, message_id)
    if row["outcome"] == messages.ACCEPTED:
        raise Conflict(N_("This message was accepted already."))
    ack = handle(conn, settings, bytes(row["raw"]), row["address"],
                 also=lambda c: messages.audit_reprocess(c, actor, row, messages.ACCEPTED))
    code = codec.ack_code(ack)
    if code != messages.ACCEPTED:
        with transaction(conn):
            messages.audit_reprocess(conn, actor, row, code)
    return code


def _sender(settings: Mapping[str, Any], application: str, address: str) -> dict[str, Any] | None:
    entry = settings["HL7_SENDERS"].get(application) if application else None
    if not isinstance(entry, dict) or address not in entry.get("hosts", ()):
        return None
    return entry


def _unread_header(fields: list[str], raw: bytes) -> messages.Header:
    """A message that could not be read is kept under what its MSH says, or its digest."""
    sender = "^".join(fields[2:4]) if len(fields) > 3 else (fields[2] if len(fields) > 2 else "")
    control = fields[9] if len(fields) > 9 and fields[9] else "sha256:" + hashlib.sha256(raw).hexdigest()[:32]
    return messages.Header(sender[:128], control[:64], fields[8][:32] if len(fields) > 8 else "")


def _change_for(settings: Mapping[str, Any], received: codec.Received, actor: audit.Actor) -> Change:
    """The domain call a message makes; Refused (AR) for a type or event pacslite does not take."""
    kind, _, event = received.header.message_type.partition("^")
    handler = HANDLERS.get(kind)
    if handler is None:
        raise messages.Refused(messages.REJECTED, messages.UNSUPPORTED_TYPE,
                               f"message type {kind} is not supported", "MSH-9")
    return handler(settings, received, event, actor)


# ---------------------------------------------------------------- ADT

PATIENT_EVENTS = ("A01", "A03", "A04", "A05", "A08", "A28", "A31")


def on_adt(settings: Mapping[str, Any], received: codec.Received, event: str, actor: audit.Actor) -> Change:
    pid = _required_segment(received.message, "PID")
    values = patient_values(pid)
    if event in PATIENT_EVENTS:
        def change(conn: sqlite3.Connection) -> messages.Applied:
            return messages.Applied(patients.receive_patient(conn, actor, values)["patient_id"])
        return change
    if event in MERGE_EVENTS:
        return _merges(received, event, actor)
    if event == "A02":
        pv1 = _required_segment(received.message, "PV1")
        ward, bed = codec.field(pv1, 3, 1), codec.field(pv1, 3, 3)

        def transfer(conn: sqlite3.Connection) -> messages.Applied:
            return messages.Applied(orders.transfer(conn, actor, values, ward, bed)["patient_id"])
        return transfer
    raise messages.Refused(messages.REJECTED, messages.UNSUPPORTED_EVENT, f"ADT event {event} is not supported",
                           "MSH-9")


MERGE_EVENTS = ("A40", "A47")


def _merges(received: codec.Received, event: str, actor: audit.Actor) -> Change:
    """A40: each PID (the survivor, created if unknown) with its MRG (MRG-1: the prior ID)
    merged; A47: the patient ID in MRG-1 changed to PID-3's. All in the message's transaction."""
    pairs = []
    pid = None
    for seg in received.message:
        name = str(seg[0])
        if name == "PID":
            pid = seg
        elif name == "MRG" and pid is not None:
            prior = codec.field(seg, 1)
            if not prior:
                raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, "MRG-1 carries no prior patient ID",
                                       "MRG-1")
            pairs.append((patient_values(pid), prior))
            pid = None
    if not pairs:
        raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, "the message has no PID with an MRG", "MRG")
    reason = f"HL7 ADT^{event} from {received.header.sender} ({received.header.control_id})"

    def change(conn: sqlite3.Connection) -> messages.Applied:
        for values, prior in pairs:
            if event == "A47":
                merging.change_id_in(conn, actor, prior, values["patient_id"], reason)
            else:
                if patients.find_patient(conn, values["patient_id"]) is None:
                    patients.receive_patient(conn, actor, values)
                merging.merge_in(conn, actor, prior, values["patient_id"], reason)
            patients.receive_patient(conn, actor, values)
        return messages.Applied(pairs[-1][0]["patient_id"])
    return change


def patient_values(pid: Any) -> dict[str, str]:
    """The patient's fields PID carries: absent ones left out, HL7's ``""`` as "" (clear)."""
    values: dict[str, str | None] = {}
    for n in range(1, codec.repetitions(pid, 3) + 1):
        number, kind = codec.field(pid, 3, 1, n), codec.field(pid, 3, 5, n).upper()
        if kind in NATIONAL_ID_TYPES:
            values.setdefault("national_id", codec.present(number))
        elif number and "patient_id" not in values:
            values["patient_id"] = number
    if not values.get("patient_id"):
        raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, "PID-3 carries no patient ID", "PID-3")
    values["name"] = codec.present(person_name(pid, 5))
    values["birth_date"] = codec.present(codec.field(pid, 7)[:8])
    sex = codec.field(pid, 8).upper()
    values["sex"] = codec.present(sex if sex == '""' else SEXES.get(sex, sex))
    values["phone"] = codec.present(_phone(pid))
    return {key: value for key, value in values.items() if value is not None}


def person_name(segment: Any, number: int, family: int = 1) -> str:
    """A person's name (XPN, or XCN with ``family`` 2): the repetition in Chinese characters if
    there is one, family name before given names (without a space between characters)."""
    best = ""
    for n in range(1, max(codec.repetitions(segment, number), 1) + 1):
        parts = [codec.field(segment, number, family + i, n) for i in range(3)]
        if parts[0] == '""':
            return '""'
        joiner = "" if _CJK.search("".join(parts)) else " "
        name = joiner.join(p for p in parts if p)
        if name and (not best or (_CJK.search(name) and not _CJK.search(best))):
            best = name
    return best


def _phone(pid: Any) -> str:
    phone = codec.field(pid, 13, 1) or codec.field(pid, 13, 12)
    return phone if phone == '""' else re.sub(r"[^0-9+() -]", "", phone)[:32]


def _required_segment(message: Any, name: str) -> Any:
    found = codec.segments(message, name)
    if not found:
        raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, f"the message has no {name} segment", name)
    return found[0]


# ---------------------------------------------------------------- orders

def on_order(settings: Mapping[str, Any], received: codec.Received, event: str, actor: audit.Actor) -> Change:
    """ORM^O01, OMI^O23, OML^O21: every ORC with the OBR (and TQ1) after it is one order, applied
    together in the message's transaction."""
    message = received.message
    values = patient_values(_required_segment(message, "PID"))
    pv1 = (codec.segments(message, "PV1") or [None])[0]
    placer = received.header.sender.split("^")[0]
    found = [_order(settings, placer, group, pv1) for group in _order_groups(message)]
    if not found:
        raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, "the message has no ORC segment", "ORC")

    def change(conn: sqlite3.Connection) -> messages.Applied:
        done = [orders.receive(conn, actor, settings, values, order) for order in found]
        return messages.Applied(values["patient_id"], ",".join(o.accession_number for o in done if o.accession_number))
    return change


def _order_groups(message: Any) -> list[dict[str, Any]]:
    """Each ORC with the OBR, TQ1 and NTE segments that follow it."""
    groups: list[dict[str, Any]] = []
    for seg in message:
        name = str(seg[0])
        if name == "ORC":
            groups.append({"ORC": seg})
        elif groups and name in ("OBR", "TQ1", "IPC") and name not in groups[-1]:
            groups[-1][name] = seg
    return groups


def _order(settings: Mapping[str, Any], placer: str, group: Mapping[str, Any], pv1: Any) -> orders.Order:
    orc, obr, tq1 = group["ORC"], group.get("OBR"), group.get("TQ1")
    control = codec.field(orc, 1).upper()
    number = codec.field(orc, 2) or (codec.field(obr, 2) if obr is not None else "")
    exam: dict[str, Any] = {}

    def put(key: str, value: str) -> None:
        carried = codec.present(value)
        if carried is not None:
            exam[key] = carried

    if obr is not None:
        put("procedure_code", codec.field(obr, 4, 1))
        put("procedure", codec.field(obr, 4, 2) or codec.field(obr, 4, 1))
        put("modality", _modality(settings, codec.field(obr, 24)))
        put("clinical_note", "; ".join(v for v in (codec.field(obr, 13), codec.field(obr, 31, 2)) if v))
    if "IPC" in group:
        put("modality", _modality(settings, codec.field(group["IPC"], 5)))
    put("priority", PRIORITIES.get(_timing(orc, obr, tq1, 6).upper(), "routine" if _timing(orc, obr, tq1, 6) else ""))
    put("scheduled_at", _hl7_time(_timing(orc, obr, tq1, 4) or (codec.field(obr, 36) if obr is not None else "")))
    put("requesting_physician", person_name(orc, 12, family=2) or (person_name(obr, 16, family=2) if obr else ""))
    put("requesting_department", codec.field(orc, 17, 2) or codec.field(orc, 17, 1)
        or (codec.field(pv1, 10) if pv1 is not None else ""))
    if pv1 is not None:
        put("ward", codec.field(pv1, 3, 1))
        put("bed", codec.field(pv1, 3, 3))
        patient_class = codec.field(pv1, 2).upper()
        if patient_class:
            source = settings["HL7_PATIENT_CLASS"].get(patient_class, "outpatient")
            exam["source"] = source
            number_key = "inpatient_number" if source == "inpatient" else "outpatient_number"
            put(number_key, codec.field(pv1, 19))
    if control == "NW":
        exam.setdefault("source", "outpatient")
    return orders.Order(placer, number, control, codec.field(orc, 5).upper(), exam,
                        _his_accession(settings, orc, obr), codec.field(orc, 16, 2) or codec.field(orc, 16, 1))


def _timing(orc: Any, obr: Any, tq1: Any, component: int) -> str:
    """Quantity/timing's start (4) or priority (6): ORC-7, OBR-27, or TQ1 (7, 9) in v2.5."""
    value = codec.field(orc, 7, component) or (codec.field(obr, 27, component) if obr is not None else "")
    if not value and tq1 is not None:
        value = codec.field(tq1, 7 if component == 4 else 9)
    return value


def _hl7_time(value: str) -> str:
    """An HL7 TS (YYYYMMDD[HHMM[SS]][+ZZZZ]) as ISO 8601; local time without an offset."""
    found = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(?:(\d{2})(?:\.\d+)?)?)?([+-]\d{4})?", value)
    if value == '""' or not value:
        return value if value != '""' else ""
    if not found:
        raise messages.Refused(messages.ERROR, messages.DATA_TYPE, f"{value!r} is not an HL7 date and time",
                               "scheduled_at")
    year, month, day, hour, minute, second, offset = found.groups()
    text = f"{year}-{month}-{day}T{hour or '00'}:{minute or '00'}:{second or '00'}"
    return text + (f"{offset[:3]}:{offset[3:]}" if offset else "")


def _modality(settings: Mapping[str, Any], value: str) -> str:
    """A modality as the HIS names it (the department's code or the DICOM one) → the code."""
    if not value or value == '""':
        return value
    if config.modality(settings, value):
        return value
    for entry in settings["MODALITIES"]:
        if entry["dicom"] == value.upper():
            return entry["code"]
    return value


def _his_accession(settings: Mapping[str, Any], orc: Any, obr: Any) -> str:
    where = settings["HL7_ACCESSION_FIELD"]
    if not where:
        return ""
    name, _, number = where.partition("-")
    segment = orc if name == "ORC" else obr
    value = codec.field(segment, int(number)) if segment is not None and number.isdigit() else ""
    if not value:
        raise messages.Refused(messages.ERROR, messages.REQUIRED_MISSING, f"{where} carries no accession number",
                               where)
    return value


HANDLERS: dict[str, Callable[[Mapping[str, Any], codec.Received, str, audit.Actor], Change]] = {
    "ADT": on_adt, "ORM": on_order, "OMI": on_order, "OML": on_order,
}
