"""The RIS: patients, exams, accession numbers and the state machine of an exam.

Accession numbers are generated, never typed: ``<prefix><YYMMDD><sequence><check digit>``,
e.g. ``A26112400017``. The check digit is Damm's, which catches every single wrong digit and
every swap of two neighbouring digits, the two mistakes people make reading a number aloud.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Mapping

from stdnum import damm

from ..core import audit, clock, config, datetext, uids
from . import exams, idcard, procedures
from ..core.names import pinyin_of
from ..core.db import transaction
from ..core.validation import N_, FormErrors, NotFound, ValidationError, choice, collect, matches, text

SEXES = ("M", "F", "O")
SOURCES, PRIORITIES = exams.SOURCES, exams.PRIORITIES

# The exam's life cycle is owned by exams.py.
EXAM_STATES = exams.STATES

PATIENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
DEMOGRAPHICS = ("name", "sex", "birth_date")


#: How the registration desk settles a demographic that differs from the record, field by field.
KEEP, UPDATE = "keep", "update"


class ConfirmationNeeded(FormErrors):
    """The patient ID exists with other demographics: for each field that differs, the desk
    chooses to keep what is on file or to update it (``differences``: {field: (on file, entered)})."""

    def __init__(self, existing: sqlite3.Row, differences: dict[str, tuple[Any, Any]]) -> None:
        super().__init__({field: (N_("Differs from the record of patient ID %(patient_id)s: keep what is on file,"
                                     " or update it."), {"patient_id": existing["patient_id"]})
                          for field in differences})
        self.existing = existing
        self.differences = differences


# ---------------------------------------------------------------- patients

def _name(data: Mapping[str, Any]) -> str:
    name = text(data, "name", required=True, max_length=64)
    if any(ch in name for ch in "^=\\"):
        raise ValidationError("name", N_("The characters ^ = \\ are not allowed in a name."))
    return name


def clean_patient(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validated patient fields, or FormErrors naming every bad field. The birth date may be
    typed as the desk types it, or as an age (:mod:`pacslite.core.datetext`): then it is an
    estimate (``birth_date_estimated``), and ``birth_age`` keeps the age typed."""
    fields = collect({
        "patient_id": lambda: matches(text(data, "patient_id", required=True), "patient_id", PATIENT_ID_PATTERN,
                                      N_("Letters, digits, dots, dashes and underscores only.")),
        "name": lambda: _name(data),
        "sex": lambda: choice(data, "sex", SEXES),
        "birth_date": lambda: _birth_date(data),
        "phone": lambda: matches(text(data, "phone", max_length=32), "phone", r"[0-9+() -]{3,32}",
                                 N_("Digits, spaces and + ( ) - only.")),
        "national_id": lambda: _national_id(data),
    })
    typed = fields.pop("birth_date")
    fields["birth_date"] = typed.value.isoformat() if typed else None
    fields["birth_date_estimated"] = int(typed is not None and typed.estimated)
    fields["birth_age"] = typed.age if typed else None
    return fields


def _national_id(data: Mapping[str, Any]) -> str | None:
    value = text(data, "national_id", max_length=32)
    return idcard.read(value).number if value.strip() else None


def _birth_date(data: Mapping[str, Any]) -> datetext.TypedDate | None:
    typed = datetext.read_date(text(data, "birth_date", max_length=64), "birth_date", date.today(), ages=True)
    if typed is not None and typed.value > date.today():
        raise ValidationError("birth_date", N_("Not a possible birth date."))
    return typed


def get_patient(conn: sqlite3.Connection, patient_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM patients WHERE patient_id = ?", (patient_id,)).fetchone()
    if row is None:
        raise NotFound(f"patient {patient_id}")
    return row


def find_patient(conn: sqlite3.Connection, patient_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM patients WHERE patient_id = ?", (patient_id,)).fetchone()


#: Merges followed at most (a chain longer than this is refused when it would be made).
MERGE_DEPTH = 16


def resolve_patient(conn: sqlite3.Connection, patient_id: str) -> sqlite3.Row | None:
    """The patient record this ID stands for now: the record itself, or the one it was merged
    into (followed through later merges); None for an unknown ID."""
    row = find_patient(conn, patient_id)
    for _ in range(MERGE_DEPTH):
        if row is None or row["merged_into"] is None:
            return row
        row = conn.execute("SELECT * FROM patients WHERE id = ?", (row["merged_into"],)).fetchone()
    return row


def is_merged_into(conn: sqlite3.Connection, patient_id: str, patient_ref: int) -> bool:
    """Whether ``patient_id`` is an old ID of the record ``patient_ref`` (merged into it)."""
    row = resolve_patient(conn, patient_id)
    return row is not None and row["id"] == patient_ref and row["patient_id"] != patient_id


def mark_merged(conn: sqlite3.Connection, actor: audit.Actor, prior: Mapping[str, Any], survivor: Mapping[str, Any],
                reason: str) -> None:
    """The prior record is one person with the survivor (inside the caller's transaction,
    audited): it points at the survivor from now on."""
    conn.execute("UPDATE patients SET merged_into = ?, updated_at = ? WHERE id = ?",
                 (survivor["id"], clock.to_db(clock.now()), prior["id"]))
    audit.record(conn, actor, "patient.merge", f"patient:{prior['patient_id']}", patient_id=prior["patient_id"],
                 detail={"into": survivor["patient_id"], "reason": reason,
                         "prior": {k: prior[k] for k in ("name", "sex", "birth_date", "national_id")},
                         "survivor": {k: survivor[k] for k in ("name", "sex", "birth_date", "national_id")}})


def unmark_merged(conn: sqlite3.Connection, actor: audit.Actor, prior: Mapping[str, Any], reason: str) -> None:
    """Undo :func:`mark_merged` (inside the caller's transaction, audited)."""
    conn.execute("UPDATE patients SET merged_into = NULL, updated_at = ? WHERE id = ?",
                 (clock.to_db(clock.now()), prior["id"]))
    audit.record(conn, actor, "patient.unmerge", f"patient:{prior['patient_id']}", patient_id=prior["patient_id"],
                 detail={"reason": reason})


def copy_with_new_id(conn: sqlite3.Connection, actor: audit.Actor, prior: Mapping[str, Any], new_id: str) -> sqlite3.Row:
    """A new record with the prior's demographics under ``new_id`` (a change of patient ID,
    inside the caller's transaction); ValidationError when the ID is bad or taken."""
    fields = clean_patient({"patient_id": new_id, "name": prior["name"], "sex": prior["sex"] or "",
                            "birth_date": prior["birth_date"] or "", "phone": prior["phone"] or "",
                            "national_id": prior["national_id"] or ""})
    if find_patient(conn, fields["patient_id"]) is not None:
        raise ValidationError("patient_id", N_("A patient with this ID exists already."))
    fields["birth_date_estimated"] = prior["birth_date_estimated"]
    _insert_patient(conn, actor, fields)
    return get_patient(conn, fields["patient_id"])


def likely_duplicates(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Pairs of records (not merged) that are likely one person: the same resident ID card
    number, or the same name and birth date; each pair once, newest first."""
    pairs = conn.execute(
        "SELECT a.id AS a, b.id AS b, 'national_id' AS why FROM patients a JOIN patients b"
        " ON b.national_id = a.national_id AND b.id > a.id"
        " WHERE a.national_id IS NOT NULL AND a.national_id <> '' AND a.merged_into IS NULL AND b.merged_into IS NULL"
        " UNION SELECT a.id, b.id, 'name_birth_date' FROM patients a JOIN patients b"
        " ON b.name = a.name AND b.birth_date = a.birth_date AND b.id > a.id"
        " WHERE a.birth_date IS NOT NULL AND a.merged_into IS NULL AND b.merged_into IS NULL"
        " ORDER BY b DESC LIMIT ?", (limit,)).fetchall()
    ids = {pair[0] for pair in pairs} | {pair[1] for pair in pairs}
    rows = {row["id"]: row for row in conn.execute(
        f"SELECT p.*, (SELECT COUNT(*) FROM exams e WHERE e.patient_ref = p.id) AS exam_count FROM patients p"
        f" WHERE p.id IN ({','.join('?' * len(ids))})", sorted(ids))} if ids else {}
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    for a, b, why in pairs:
        pair = seen.setdefault((a, b), {"a": rows[a], "b": rows[b], "why": []})
        pair["why"].append(why)
    return list(seen.values())


def create_patient(conn: sqlite3.Connection, actor: audit.Actor, data: Mapping[str, Any]) -> sqlite3.Row:
    fields = clean_patient(data)
    with transaction(conn):
        if find_patient(conn, fields["patient_id"]) is not None:
            raise ValidationError("patient_id", N_("A patient with this ID exists already."))
        _insert_patient(conn, actor, fields)
    return get_patient(conn, fields["patient_id"])


def _insert_patient(conn: sqlite3.Connection, actor: audit.Actor, fields: dict[str, Any]) -> int:
    words, initials = pinyin_of(fields["name"])
    now = clock.to_db(clock.now())
    cur = conn.execute(
        "INSERT INTO patients (patient_id, name, name_pinyin, name_initials, sex, birth_date, birth_date_estimated,"
        " phone, national_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (fields["patient_id"], fields["name"], words, initials, fields["sex"], fields["birth_date"],
         fields["birth_date_estimated"], fields["phone"], fields["national_id"], now, now))
    audit.record(conn, actor, "patient.create", f"patient:{fields['patient_id']}",
                 patient_id=fields["patient_id"], detail=_audited(fields))
    return int(cur.lastrowid)


def update_patient(conn: sqlite3.Connection, actor: audit.Actor, patient_id: str, data: Mapping[str, Any]) -> sqlite3.Row:
    """Edit a patient's demographics; the patient ID itself does not change here."""
    fields = clean_patient({**data, "patient_id": patient_id})
    with transaction(conn):
        _apply_changes(conn, actor, get_patient(conn, patient_id), fields)
    return get_patient(conn, patient_id)


def receive_patient(conn: sqlite3.Connection, actor: audit.Actor, values: Mapping[str, str | None]) -> sqlite3.Row:
    """Create or update a patient from a message (HL7 ADT, an order's PID), inside the caller's
    transaction: ``values`` holds only the fields the message carried; an empty string clears
    one (HL7's ``""``), a field the message did not carry keeps what is on file. Every change,
    and a differing name, sex or birth date above all, is audited before → after. FormErrors
    for a bad value, and nothing changes."""
    patient_id = values.get("patient_id") or ""
    existing = resolve_patient(conn, patient_id) if patient_id else None  # an old ID: its survivor
    if existing is None:
        fields = clean_patient({key: value or "" for key, value in values.items()})
        _insert_patient(conn, actor, fields)
        return get_patient(conn, fields["patient_id"])
    on_file = {"patient_id": existing["patient_id"], "name": existing["name"], "sex": existing["sex"] or "",
               "birth_date": existing["birth_date"] or "", "phone": existing["phone"] or "",
               "national_id": existing["national_id"] or ""}
    fields = clean_patient({**on_file, **{key: value or "" for key, value in values.items()},
                            "patient_id": existing["patient_id"]})
    if "birth_date" not in values or fields["birth_date"] == existing["birth_date"]:
        fields["birth_date_estimated"] = existing["birth_date_estimated"]
    _apply_changes(conn, actor, existing, fields)
    return get_patient(conn, existing["patient_id"])


def _settled(existing: sqlite3.Row, fields: Mapping[str, Any], resolutions: Mapping[str, str],
             update_all: bool) -> dict[str, Any]:
    """The patient as registered now: blanks filled from the record, each differing
    demographic kept or updated as the desk chose; ConfirmationNeeded for those not chosen."""
    settled = dict(fields)
    for key in ("phone", "birth_date", "national_id"):
        if not settled[key]:
            settled[key] = existing[key]
    if not fields["birth_date"]:
        settled["birth_date_estimated"] = existing["birth_date_estimated"]
    if _same_age(existing, fields):  # "67岁" again for a patient on file born 1958-03-12: the same
        settled["birth_date"], settled["birth_date_estimated"] = existing["birth_date"], existing["birth_date_estimated"]
    unresolved = {}
    for key, pair in _differences(existing, settled, DEMOGRAPHICS).items():
        choice_made = UPDATE if update_all else resolutions.get(key)
        if choice_made == KEEP:
            settled[key] = existing[key]
        elif choice_made != UPDATE:
            unresolved[key] = pair
    if unresolved:
        raise ConfirmationNeeded(existing, unresolved)
    return settled


def _same_age(existing: sqlite3.Row, fields: Mapping[str, Any]) -> bool:
    """An age typed for a patient on file whose birth date gives that age today."""
    if not (fields.get("birth_age") and existing["birth_date"]):
        return False
    count, unit = fields["birth_age"]
    return datetext.age_in(date.fromisoformat(existing["birth_date"]), date.today(), unit) == count


def _audited(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A patient's fields as the audit keeps them (the age typed is in the estimate's flag)."""
    return {k: v for k, v in fields.items() if k != "birth_age"}


def _differences(existing: sqlite3.Row, fields: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    return {k: (existing[k], fields[k]) for k in keys if (existing[k] or None) != (fields[k] or None)}


def _apply_changes(conn: sqlite3.Connection, actor: audit.Actor, existing: sqlite3.Row, fields: Mapping[str, Any]) -> None:
    changed = _differences(existing, fields, ("name", "sex", "birth_date", "birth_date_estimated", "phone",
                                              "national_id"))
    if not changed:
        return
    words, initials = pinyin_of(fields["name"])
    conn.execute("UPDATE patients SET name = ?, name_pinyin = ?, name_initials = ?, sex = ?, birth_date = ?,"
                 " birth_date_estimated = ?, phone = ?, national_id = ?, updated_at = ? WHERE id = ?",
                 (fields["name"], words, initials, fields["sex"], fields["birth_date"],
                  fields["birth_date_estimated"], fields["phone"], fields["national_id"], clock.to_db(clock.now()),
                  existing["id"]))
    audit.record(conn, actor, "patient.update", f"patient:{existing['patient_id']}",
                 patient_id=existing["patient_id"],
                 detail={"before": {k: v[0] for k, v in changed.items()}, "after": {k: v[1] for k, v in changed.items()}})


def search_patients(conn: sqlite3.Connection, query: str, limit: int = 50) -> list[sqlite3.Row]:
    """Patients by ID (exact or prefix, as typed or in capitals), resident ID card number
    (exact), name (anywhere in it), full pinyin or pinyin initials (their start).

    Each way is its own index lookup, and the name one reads only the name index: one query
    over every condition at once read the 120,000 patients of the paper's scale whole (55 ms)."""
    query = query.strip()[:64]
    if not query:
        return []
    compact = re.sub(r"\s+", "", query.lower())
    return conn.execute(
        "SELECT * FROM patients WHERE id IN ("
        " SELECT id FROM patients WHERE patient_id IN (?1, ?2) OR national_id = ?2"
        " UNION SELECT id FROM patients WHERE patient_id >= ?1 AND patient_id < ?1 || ?6"
        " UNION SELECT id FROM patients WHERE patient_id >= ?2 AND patient_id < ?2 || ?6"
        " UNION SELECT id FROM patients WHERE name LIKE ?3 ESCAPE '\\'"
        " UNION SELECT id FROM patients WHERE REPLACE(name_pinyin, ' ', '') >= ?4"
        " AND REPLACE(name_pinyin, ' ', '') < ?4 || ?6"
        " UNION SELECT id FROM patients WHERE name_initials >= ?4 AND name_initials < ?4 || ?6)"
        " ORDER BY (patient_id = ?1) DESC, name LIMIT ?5",
        (query, query.upper(), "%" + _escape_like(query) + "%", compact, limit, chr(0x10FFFF))).fetchall()


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---------------------------------------------------------------- accession numbers and UIDs

def accession_number(prefix: str, day: date, sequence: int) -> str:
    body = f"{day:%y%m%d}{sequence:04d}"
    return f"{prefix}{body}{damm.calc_check_digit(body)}"


def is_valid_accession(value: str, prefix: str) -> bool:
    """Whether ``value`` has pacslite's form and a correct check digit."""
    if not value.startswith(prefix):
        return False
    digits = value[len(prefix):]
    return digits.isdigit() and len(digits) >= 11 and damm.is_valid(digits)


def _next_accession(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> str:
    prefix = settings["ACCESSION_PREFIX"]
    if not re.fullmatch(r"[A-Z]{0,4}", prefix):
        raise RuntimeError("ACCESSION_PREFIX must be 0 to 4 capital letters")
    day = clock.local_today(settings["TIMEZONE"])
    sequence = conn.execute(
        "INSERT INTO accession_counters (day, last) VALUES (?, 1)"
        " ON CONFLICT (day) DO UPDATE SET last = accession_counters.last + 1 RETURNING last", (day.isoformat(),)).fetchone()[0]
    return accession_number(prefix, day, sequence)


def new_study_uid(settings: Mapping[str, Any]) -> str:
    """A StudyInstanceUID under UID_ROOT, or a UUID-derived 2.25 UID when no root is set."""
    return uids.new_uid(settings["UID_ROOT"])


# ---------------------------------------------------------------- exams

@dataclass(frozen=True)
class Registration:
    accession_number: str
    study_instance_uid: str
    patient_id: str
    status: str
    patient_created: bool


def parse_scheduled(value: Any, tz_name: str) -> datetime:
    """ISO 8601 date-time; without an offset it is local time in the department's zone."""
    if value in (None, ""):
        return clock.now()
    if not isinstance(value, str):
        raise ValidationError("scheduled_at", N_("Use the form YYYY-MM-DD HH:MM."))
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError("scheduled_at", N_("Use the form YYYY-MM-DD HH:MM.")) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock.zone(tz_name))
    return moment


def combine_local(day: str, at: str, tz_name: str) -> str:
    """The web form's separate date and time, typed as the desk types them
    (:mod:`pacslite.core.datetext`), as one ISO text; FormErrors under ``scheduled_date`` and
    ``scheduled_time``. A blank date is today in the department's zone (not UTC's today,
    which differs at night); a blank time is midnight."""
    today = clock.local_today(tz_name)
    typed = collect({"day": lambda: datetext.read_date(day or "", "scheduled_date", today),
                     "at": lambda: datetext.read_time(at or "", "scheduled_time")})
    if typed["day"] is None and typed["at"] is None:
        return ""
    on = typed["day"].value if typed["day"] else today
    return f"{on.isoformat()}T{(typed['at'] or time(0)).isoformat('minutes')}"


def _scheduled_at(data: Mapping[str, Any], tz_name: str) -> str:
    """When the exam is scheduled: the form's date and time boxes, or the API's ``scheduled_at``."""
    if data.get("scheduled_date") or data.get("scheduled_time"):
        return clock.to_db(parse_scheduled(combine_local(data.get("scheduled_date", ""),
                                                         data.get("scheduled_time", ""), tz_name), tz_name))
    return clock.to_db(parse_scheduled(data.get("scheduled_at"), tz_name))


def clean_exam(data: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validated exam fields, or FormErrors naming every bad field; the modality is looked up
    in the configured list. The procedure and station are the catalogue's
    (:func:`procedures.exam_procedure`)."""
    codes = [m["code"] for m in settings["MODALITIES"]]
    fields = collect({
        "modality": lambda: choice(data, "modality", codes),
        "source": lambda: choice(data, "source", SOURCES),
        "body_part": lambda: text(data, "body_part", max_length=64),
        "requesting_department": lambda: text(data, "requesting_department", max_length=64),
        "requesting_physician": lambda: text(data, "requesting_physician", max_length=64),
        "clinical_note": lambda: text(data, "clinical_note", max_length=1024, multiline=True),
        "outpatient_number": lambda: text(data, "outpatient_number", max_length=32),
        "inpatient_number": lambda: text(data, "inpatient_number", max_length=32),
        "ward": lambda: text(data, "ward", max_length=64),
        "bed": lambda: text(data, "bed", max_length=16),
        "priority": lambda: choice(data, "priority", PRIORITIES, required=False, default="routine"),
        "scheduled_at": lambda: _scheduled_at(data, settings["TIMEZONE"]),
    })
    fields["dicom_modality"] = config.modality(settings, fields["modality"])["dicom"]
    return fields


def register_exam(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                  patient_data: Mapping[str, Any], exam_data: Mapping[str, Any], *,
                  confirm_demographics: bool = False, resolutions: Mapping[str, str] | None = None) -> Registration:
    """Register an exam, creating the patient or updating its demographics.

    Every bad field of both is reported at once (FormErrors). For a patient ID that exists, a
    blank optional field (phone, birth date) keeps what is on file: an empty box never erases
    a stored value. A name, sex or birth date that differs raises :class:`ConfirmationNeeded`
    unless ``resolutions`` says, for each such field, ``keep`` (what is on file) or ``update``
    (what was entered), or ``confirm_demographics`` (the API) updates them all; what changes
    is audited.
    """
    with transaction(conn):
        both = collect({"patient": lambda: clean_patient(patient_data),
                        "exam": lambda: checked_exam(conn, settings, exam_data)})
        patient_fields, exam_fields = both["patient"], both["exam"]
        existing = resolve_patient(conn, patient_fields["patient_id"])  # an old (merged) ID: its survivor
        if existing is None:
            patient_ref = _insert_patient(conn, actor, patient_fields)
        else:
            patient_fields = _settled(existing, {**patient_fields, "patient_id": existing["patient_id"]},
                                      resolutions or {}, confirm_demographics)
            _apply_changes(conn, actor, existing, patient_fields)
            patient_ref = existing["id"]
        registration = add_exam(conn, actor, settings, patient_ref, patient_fields["patient_id"], exam_fields)
    return Registration(registration.accession_number, registration.study_instance_uid, registration.patient_id,
                        registration.status, existing is None)


def checked_exam(conn: sqlite3.Connection, settings: Mapping[str, Any], exam_data: Mapping[str, Any]) -> dict[str, Any]:
    """An exam's fields as the desk form, the API or an order gives them, checked (FormErrors
    naming every bad field): the procedure and station from the catalogue, the report target."""
    both = collect({"exam": lambda: clean_exam(exam_data, settings),
                    "procedure": lambda: procedures.exam_procedure(conn, settings, exam_data)})
    chosen, procedure = both["procedure"]
    fields = {**both["exam"], **chosen, "body_part": both["exam"]["body_part"] or (
        procedure["body_part"] if procedure is not None else "")}
    fields["target_hours"] = procedures.report_target(conn, settings, fields["modality"], fields["source"],
                                                      fields["priority"], procedure)
    return fields


#: An accession number the HIS gives (HL7_ACCESSION_FIELD): a DICOM SH value pacslite can file by.
HIS_ACCESSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}"


def add_exam(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], patient_ref: int,
             patient_id: str, exam_fields: Mapping[str, Any], *, status: str = exams.SCHEDULED,
             accession: str = "") -> Registration:
    """A new exam of a patient on file from :func:`checked_exam`'s fields, inside the caller's
    transaction, audited: its accession number generated, or the HIS's (``accession``, which
    must be new), and its StudyInstanceUID."""
    if accession:
        matches(accession, "accession_number", HIS_ACCESSION_PATTERN, N_("Up to 16 letters, digits, dots, dashes"
                                                                        " and underscores."))
        if find_exam(conn, accession=accession) is not None:
            raise ValidationError("accession_number", N_("An exam with this accession number exists already."))
    else:
        accession = _next_accession(conn, settings)
    study_uid = new_study_uid(settings)
    exams.insert_scheduled(conn, actor, patient_ref, accession, study_uid, exam_fields, status)
    audit.record(conn, actor, "exam.register", f"exam:{accession}", patient_id=patient_id,
                 detail={**exam_fields, "study_instance_uid": study_uid, "status": status})
    return Registration(accession, study_uid, patient_id, status, False)


_EXAM_SELECT = ("SELECT e.*, p.patient_id, p.name AS patient_name, p.name_pinyin, p.sex, p.birth_date, p.phone,"
                " p.national_id"
                " FROM exams e JOIN patients p ON p.id = e.patient_ref")


def exam_select() -> str:
    """``SELECT`` of exams (``e``) with their patient (``p``), for queries elsewhere to extend."""
    return _EXAM_SELECT


def get_exam(conn: sqlite3.Connection, accession: str) -> sqlite3.Row:
    row = conn.execute(f"{_EXAM_SELECT} WHERE e.accession_number = ?", (accession,)).fetchone()
    if row is None:
        raise NotFound(f"exam {accession}")
    return row


def find_exam(conn: sqlite3.Connection, *, accession: str = "", study_uid: str = "",
              exam_id: int | None = None) -> sqlite3.Row | None:
    """The exam with this accession number, pre-assigned StudyInstanceUID or row id, or None."""
    for column, value in (("e.accession_number", accession), ("e.study_instance_uid", study_uid), ("e.id", exam_id)):
        if value:
            return conn.execute(f"{_EXAM_SELECT} WHERE {column} = ?", (value,)).fetchone()
    return None


def open_exams(conn: sqlite3.Connection, start: str | None, end: str | None) -> list[sqlite3.Row]:
    """Exams the worklist offers (scheduled or in progress), scheduled in [start, end) (UTC
    text; None: open)."""
    clauses, params = [f"e.status IN ({', '.join('?' * len(exams.WORKLIST_STATES))})"], list(exams.WORKLIST_STATES)
    if start is not None:
        clauses.append("e.scheduled_at >= ?")
        params.append(start)
    if end is not None:
        clauses.append("e.scheduled_at < ?")
        params.append(end)
    return conn.execute(f"{_EXAM_SELECT} WHERE {' AND '.join(clauses)} ORDER BY e.scheduled_at, e.id",
                        params).fetchall()


def exams_of_patient(conn: sqlite3.Connection, patient_id: str) -> list[sqlite3.Row]:
    return conn.execute(f"{_EXAM_SELECT} WHERE p.patient_id = ? ORDER BY e.scheduled_at DESC", (patient_id,)).fetchall()


def exam_filter(*, modality: str = "", source: str = "", status: str = "", priority: str = "",
                query: str = "", department: str = "") -> tuple[list[str], list[Any]]:
    """SQL conditions (on ``e`` exams and ``p`` patients) and their parameters for the exam
    lists' filters; ``query`` matches accession, patient ID, name, pinyin, initials, procedure;
    ``department`` the requesting department, without regard to case."""
    clauses: list[str] = []
    params: list[Any] = []
    if department:
        clauses.append("LOWER(e.requesting_department) = LOWER(?)")
        params.append(department)
    for column, value in (("e.modality", modality), ("e.source", source), ("e.status", status),
                          ("e.priority", priority)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    query = query.strip()[:64]
    if query:
        like = "%" + _escape_like(query) + "%"
        compact = _escape_like(re.sub(r"\s+", "", query.lower())) + "%"
        clauses.append("(e.accession_number LIKE ? ESCAPE '\\' OR p.patient_id LIKE ? ESCAPE '\\'"
                       " OR p.name LIKE ? ESCAPE '\\' OR REPLACE(p.name_pinyin, ' ', '') LIKE ? ESCAPE '\\'"
                       " OR p.name_initials LIKE ? ESCAPE '\\' OR e.procedure LIKE ? ESCAPE '\\')")
        params += [like, like, like, compact, compact, like]
    return clauses, params


PRIORITY_ORDER = "CASE e.priority WHEN 'stat' THEN 0 WHEN 'urgent' THEN 1 ELSE 2 END"


def list_exams(conn: sqlite3.Connection, settings: Mapping[str, Any], *, day: date | None = None,
               modality: str = "", source: str = "", status: str = "", query: str = "", department: str = "",
               limit: int = 500) -> list[sqlite3.Row]:
    """Exams scheduled on one local day (default today), filtered; most urgent first."""
    start, end = clock.local_day_bounds(day or clock.local_today(settings["TIMEZONE"]), settings["TIMEZONE"])
    clauses, params = exam_filter(modality=modality, source=source, status=status, query=query,
                                  department=department)
    clauses += ["e.scheduled_at >= ?", "e.scheduled_at < ?"]
    params += [start, end]
    order = f"{PRIORITY_ORDER}, e.scheduled_at"
    return conn.execute(f"{_EXAM_SELECT} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT ?",
                        (*params, limit)).fetchall()


def flagged_missing_images(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(f"{_EXAM_SELECT} WHERE e.images_missing_at IS NOT NULL ORDER BY e.images_missing_at"
                        f" LIMIT 500").fetchall()


def count_flagged_missing_images(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM exams WHERE images_missing_at IS NOT NULL").fetchone()[0]


def cancel_exam(conn: sqlite3.Connection, actor: audit.Actor, accession: str, data: Mapping[str, Any]) -> None:
    """Cancel an exam that has no images, with a reason."""
    reason = text(data, "reason", required=True, max_length=200)
    with transaction(conn):
        exams.cancel(conn, actor, get_exam(conn, accession), reason)


def api_view(exam: sqlite3.Row) -> dict[str, Any]:
    """The exam as the JSON API gives it to the hospital information system."""
    return {
        "accession_number": exam["accession_number"],
        "study_instance_uid": exam["study_instance_uid"],
        "patient_id": exam["patient_id"],
        "patient": {"patient_id": exam["patient_id"], "name": exam["patient_name"], "sex": exam["sex"],
                    "birth_date": exam["birth_date"], "phone": exam["phone"], "national_id": exam["national_id"]},
        "status": exam["status"],
        "modality": exam["modality"],
        "dicom_modality": exam["dicom_modality"],
        "source": exam["source"],
        "procedure": exam["procedure"],
        "procedure_code": exam["procedure_code"],
        "body_part": exam["body_part"],
        "requesting_department": exam["requesting_department"],
        "requesting_physician": exam["requesting_physician"],
        "outpatient_number": exam["outpatient_number"],
        "inpatient_number": exam["inpatient_number"],
        "ward": exam["ward"],
        "bed": exam["bed"],
        "priority": exam["priority"],
        "scheduled_at": exam["scheduled_at"],
        "station_ae": exam["station_ae"],
        "report_target_hours": exam["target_hours"],
        "registered_at": exam["registered_at"],
        "cancel_reason": exam["cancel_reason"],
        "images": {"series": exam["series_count"], "instances": exam["instance_count"],
                   "expected": exam["images_expected"]},
        "performed_at": exam["performed_at"],
        "report_amended": exam["amended_at"] is not None,
    }
