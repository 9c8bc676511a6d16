"""The procedure catalogue (检查项目), and each modality's report target and location.

The registration desk picks an exam's procedure from its modality's catalogue and its station
from the configured AEs of that modality (an unknown station is refused). The procedure brings
its body part, default station, report targets and the preparation the receipt prints. A
modality with no catalogue entry keeps a free-text procedure, so that a fresh install registers
before the administrator has filled the catalogue; once it has entries, only they are accepted.

An exam's report target is decided here once, at registration (:func:`report_target`), and kept
on the exam, so that a later change to the catalogue does not move a deadline already printed
on a receipt:

1. the procedure's target for the exam's source, else its routine target;
2. else ``TURNAROUND_BY_SOURCE["CT/emergency"]`` of the configuration;
3. else the modality's target set on the modalities page, else the configuration's, else 24 h;
4. for a STAT or urgent exam, the shorter of that and the procedure's target for the priority,
   else ``TURNAROUND_BY_PRIORITY``.

A procedure is retired, never deleted: exams keep its code.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Mapping

from ..core import audit, clock, config
from . import aes, exams
from ..core.db import transaction
from ..core.validation import (AE_TITLE_PATTERN, N_, FormErrors, NotFound, ValidationError, choice, collect, hours, matches, text)

CODE_PATTERN = r"[A-Za-z0-9._-]{1,16}"
#: A procedure's target for a source, and for a priority (the shorter of it and the base wins).
SOURCE_TARGETS = {source: f"target_{source}_hours" for source in exams.SOURCES}
PRIORITY_TARGETS = {"stat": "target_stat_hours", "urgent": "target_urgent_hours"}
TARGET_FIELDS = ("target_hours", *PRIORITY_TARGETS.values(), *SOURCE_TARGETS.values())
FIELDS = ("code", "modality", "name_zh", "name_en", "body_part", "default_station_ae", *TARGET_FIELDS,
          "preparation")
#: The catalogue page and CLI list at most this many (a department has a few hundred).
LIST_LIMIT = 2000


# ---------------------------------------------------------------- stations

def station_titles(conn: sqlite3.Connection, settings: Mapping[str, Any], modality_code: str) -> list[str]:
    """The AE titles an exam of this (department) modality may be scheduled on."""
    entry = config.modality(settings, modality_code)
    return [] if entry is None else [row["ae_title"] for row in aes.stations(conn, entry["dicom"])]


def check_station(conn: sqlite3.Connection, settings: Mapping[str, Any], modality_code: str, station: str,
                  field: str = "station_ae") -> str:
    """Blank, or a configured AE of the modality (an unknown station such as DR99 is refused)."""
    if not station or config.modality(settings, modality_code) is None:
        return station  # nothing chosen, or the modality's own error is reported
    titles = station_titles(conn, settings, modality_code)
    if not titles:
        raise ValidationError(field, N_("No station of this modality is configured; leave it blank."))
    if station not in titles:
        raise ValidationError(field, N_("Not a station of this modality; choose one of %(stations)s."),
                              stations=", ".join(titles))
    return station


# ---------------------------------------------------------------- the catalogue

def clean_procedure(conn: sqlite3.Connection, settings: Mapping[str, Any], data: Mapping[str, Any], *,
                    code: str | None = None) -> dict[str, Any]:
    """Validated catalogue fields, every bad field at once; ``code`` is kept when editing."""
    codes = [entry["code"] for entry in settings["MODALITIES"]]
    named = any(str(data.get(key) or "").strip() for key in ("name_zh", "name_en"))
    return collect({
        "code": lambda: code if code is not None else matches(
            text(data, "code", required=True, max_length=16), "code", CODE_PATTERN,
            N_("Up to 16 letters, digits, dots, hyphens and underscores.")),
        "modality": lambda: choice(data, "modality", codes),
        "name_zh": lambda: text(data, "name_zh", required=not named, max_length=64),
        "name_en": lambda: text(data, "name_en", max_length=64),
        "body_part": lambda: text(data, "body_part", max_length=64),
        "default_station_ae": lambda: check_station(
            conn, settings, str(data.get("modality") or "").strip(),
            matches(text(data, "default_station_ae", max_length=16), "default_station_ae", AE_TITLE_PATTERN,
                    N_("Up to 16 printable ASCII characters, no backslash.")), "default_station_ae"),
        **{field: (lambda field=field: hours(data, field)) for field in TARGET_FIELDS},
        "preparation": lambda: text(data, "preparation", max_length=1000, multiline=True),
    })


def find_procedure(conn: sqlite3.Connection, code: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM procedures WHERE code = ?", (code,)).fetchone()


def get_procedure(conn: sqlite3.Connection, code: str) -> sqlite3.Row:
    row = find_procedure(conn, code)
    if row is None:
        raise NotFound(f"procedure {code}")
    return row


def list_procedures(conn: sqlite3.Connection, modality_code: str = "") -> list[sqlite3.Row]:
    """The catalogue, retired entries included, by modality and code (bounded)."""
    where, params = ("WHERE modality = ?", [modality_code]) if modality_code else ("", [])
    return conn.execute(f"SELECT * FROM procedures {where} ORDER BY modality, active DESC, code LIMIT ?",
                        (*params, LIST_LIMIT)).fetchall()


def catalogue_for(conn: sqlite3.Connection, modality_code: str) -> list[sqlite3.Row]:
    """What the desk may pick for an exam of this modality: its active procedures."""
    return conn.execute("SELECT * FROM procedures WHERE modality = ? AND active = 1 ORDER BY code LIMIT ?",
                        (modality_code, LIST_LIMIT)).fetchall()


def add_procedure(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                  data: Mapping[str, Any]) -> sqlite3.Row:
    with transaction(conn):
        fields = clean_procedure(conn, settings, data)
        if find_procedure(conn, fields["code"]) is not None:
            raise FormErrors({"code": (N_("This code is already in the catalogue."), {})})
        _insert(conn, actor, fields)
    return get_procedure(conn, fields["code"])


def update_procedure(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], code: str,
                     data: Mapping[str, Any]) -> sqlite3.Row:
    """Change a procedure (its code stays); the changed fields are audited as [old, new]. Exams
    already registered keep their procedure name and target."""
    with transaction(conn):
        existing = get_procedure(conn, code)
        _update(conn, actor, existing, clean_procedure(conn, settings, data, code=code))
    return get_procedure(conn, code)


def import_catalogue(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                     rows: list[Mapping[str, Any]]) -> tuple[int, int]:
    """Add or update many procedures (a CSV with the columns of FIELDS): all or none. Every bad
    row is named with its line (the header is line 1); (added, updated) otherwise."""
    added = updated = 0
    problems: list[str] = []
    with transaction(conn):
        for line, row in enumerate(rows, start=2):
            code = str(row.get("code") or "").strip()
            existing = find_procedure(conn, code) if code else None
            try:
                fields = clean_procedure(conn, settings, row, code=existing["code"] if existing else None)
            except FormErrors as exc:
                problems += [f"line {line}, {field}: {message % params if params else message}"
                             for field, (message, params) in exc.problems.items()]
                continue
            if existing is None:
                _insert(conn, actor, fields)
                added += 1
            else:
                updated += _update(conn, actor, existing, fields)
        if problems:
            raise ValidationError("file", "; ".join(problems))
    return added, updated


def _insert(conn: sqlite3.Connection, actor: audit.Actor, fields: Mapping[str, Any]) -> None:
    now = clock.to_db(clock.now())
    conn.execute(f"INSERT INTO procedures ({', '.join(FIELDS)}, created_at, updated_at)"
                 f" VALUES ({', '.join(':' + f for f in FIELDS)}, :now, :now)", {**fields, "now": now})
    audit.record(conn, actor, "procedure.add", f"procedure:{fields['code']}", detail=dict(fields))


def _update(conn: sqlite3.Connection, actor: audit.Actor, existing: sqlite3.Row, fields: Mapping[str, Any]) -> bool:
    changes = {f: [existing[f], fields[f]] for f in FIELDS if existing[f] != fields[f]}
    if changes:
        conn.execute(f"UPDATE procedures SET {', '.join(f'{f} = :{f}' for f in FIELDS)}, updated_at = :now"
                     " WHERE code = :code", {**fields, "now": clock.to_db(clock.now())})
        audit.record(conn, actor, "procedure.update", f"procedure:{existing['code']}", detail=changes)
    return bool(changes)


def set_active(conn: sqlite3.Connection, actor: audit.Actor, code: str, active: bool) -> None:
    """Retire a procedure (the desk no longer offers it) or bring it back."""
    with transaction(conn):
        get_procedure(conn, code)
        conn.execute("UPDATE procedures SET active = ?, updated_at = ? WHERE code = ?",
                     (int(active), clock.to_db(clock.now()), code))
        audit.record(conn, actor, "procedure.restore" if active else "procedure.retire", f"procedure:{code}")


def name_in(procedure: Mapping[str, Any], language: str) -> str:
    """The procedure's name in a language (zh…, else English), else in the other one."""
    names = (procedure["name_zh"], procedure["name_en"])
    first, second = names if language.startswith("zh") else names[::-1]
    return first or second


# ---------------------------------------------------------------- an exam's procedure

def exam_procedure(conn: sqlite3.Connection, settings: Mapping[str, Any],
                   data: Mapping[str, Any]) -> tuple[dict[str, Any], sqlite3.Row | None]:
    """The exam's ``procedure`` (name), ``procedure_code`` and ``station_ae`` from the form or
    the API, and the catalogue entry; every bad field at once (FormErrors).

    A modality with catalogue entries takes only their codes; one without takes free text. A
    blank station is the procedure's default station (while it is still one of the modality's)."""
    modality_code = str(data.get("modality") or "").strip()
    catalogue = {row["code"]: row for row in catalogue_for(conn, modality_code)} if modality_code else {}
    chosen = collect({
        "procedure": lambda: _picked(data, catalogue, settings["DEFAULT_LANGUAGE"]),
        "station_ae": lambda: check_station(conn, settings, modality_code, matches(
            text(data, "station_ae", max_length=16), "station_ae", AE_TITLE_PATTERN,
            N_("Up to 16 printable ASCII characters, no backslash."))),
    })
    fields, procedure = chosen["procedure"]
    station = chosen["station_ae"]
    if not station and procedure is not None and procedure["default_station_ae"] in station_titles(
            conn, settings, modality_code):
        station = procedure["default_station_ae"]
    return {**fields, "station_ae": station}, procedure


def _picked(data: Mapping[str, Any], catalogue: Mapping[str, sqlite3.Row],
            language: str) -> tuple[dict[str, Any], sqlite3.Row | None]:
    code = text(data, "procedure_code", max_length=16)
    if code:
        procedure = catalogue.get(code)
        if procedure is None:
            raise ValidationError("procedure_code", N_("Not a procedure of this modality in the catalogue."))
        return {"procedure": name_in(procedure, language), "procedure_code": code}, procedure
    if catalogue:
        raise ValidationError("procedure_code", N_("Choose the procedure from the catalogue."))
    return {"procedure": text(data, "procedure", required=True, max_length=64), "procedure_code": None}, None


def report_target(conn: sqlite3.Connection, settings: Mapping[str, Any], modality_code: str, source: str,
                  priority: str, procedure: Mapping[str, Any] | None = None) -> float:
    """The exam's report target in hours (see the module's docstring for the order)."""
    base = cap = None
    if procedure is not None:
        by_source = procedure[SOURCE_TARGETS[source]] if source in SOURCE_TARGETS else None
        base = by_source if by_source is not None else procedure["target_hours"]
        cap = procedure[PRIORITY_TARGETS[priority]] if priority in PRIORITY_TARGETS else None
    page = modality_setting(conn, modality_code)
    return config.turnaround_hours(settings, modality_code, source, priority, base=base,
                                   modality_hours=page["turnaround_hours"] if page else None, cap=cap)


# ---------------------------------------------------------------- a modality's target and location

def modality_setting(conn: sqlite3.Connection, modality_code: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM modality_settings WHERE code = ?", (modality_code,)).fetchone()


def modality_targets(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each configured modality with its report target and location as they apply now (the
    page's value, else the configuration's)."""
    rows = {row["code"]: row for row in conn.execute("SELECT * FROM modality_settings")}
    result = []
    for entry in settings["MODALITIES"]:
        row = rows.get(entry["code"])
        hours_set = row["turnaround_hours"] if row is not None else None
        result.append({"code": entry["code"], "dicom": entry["dicom"],
                       "turnaround_hours": hours_set if hours_set is not None else
                       float(entry.get("turnaround_hours", 24)),
                       "location": (row["location"] if row is not None and row["location"] else
                                    entry.get("location", ""))})
    return result


def modality_target(conn: sqlite3.Connection, settings: Mapping[str, Any], modality_code: str) -> dict[str, Any]:
    """One configured modality's report target and location as they apply now."""
    return next(item for item in modality_targets(conn, settings) if item["code"] == modality_code)


def set_modality_setting(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                         modality_code: str, data: Mapping[str, Any]) -> None:
    """The modalities page sets a modality's report target and location (for exams registered
    from now on); audited as [old, new]."""
    if config.modality(settings, modality_code) is None:
        raise NotFound(f"modality {modality_code}")
    fields = collect({"turnaround_hours": lambda: hours(data, "turnaround_hours"),
                      "location": lambda: text(data, "location", max_length=64)})
    with transaction(conn):
        before = modality_target(conn, settings, modality_code)
        conn.execute("INSERT INTO modality_settings (code, turnaround_hours, location, updated_at)"
                     " VALUES (:code, :turnaround_hours, :location, :now) ON CONFLICT (code) DO UPDATE SET"
                     " turnaround_hours = excluded.turnaround_hours, location = excluded.location,"
                     " updated_at = excluded.updated_at",
                     {**fields, "code": modality_code, "now": clock.to_db(clock.now())})
        after = modality_target(conn, settings, modality_code)
        changes = {k: [before[k], after[k]] for k in ("turnaround_hours", "location") if before[k] != after[k]}
        audit.record(conn, actor, "modality.settings", f"modality:{modality_code}", detail=changes)


def location_of(conn: sqlite3.Connection, settings: Mapping[str, Any], exam: Mapping[str, Any]) -> str:
    """Where the patient goes: the station's location, else the modality's; empty when none."""
    if exam["station_ae"]:
        station = aes.find_ae(conn, exam["station_ae"])
        if station is not None and station["location"]:
            return station["location"]
    if config.modality(settings, exam["modality"]) is None:
        return ""
    return modality_target(conn, settings, exam["modality"])["location"]


def preparation_of(conn: sqlite3.Connection, exam: Mapping[str, Any]) -> str:
    """The preparation instructions of the exam's procedure (as the catalogue says now)."""
    if not exam["procedure_code"]:
        return ""
    procedure = find_procedure(conn, exam["procedure_code"])
    return procedure["preparation"] if procedure is not None else ""
