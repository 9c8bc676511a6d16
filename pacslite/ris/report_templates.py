"""Report templates (报告模板): findings and impression texts a radiologist starts a report from.

A template belongs to the department or to a section (a modality, or a body part group such as
神经), both kept by administrators, or to one radiologist, who keeps their own from the report
page (*Save as my template*). The report page shows a tree of the templates for the exam's
modality and body part (a template for every modality or body part shows everywhere), searched
by name or by the pinyin initials of its name (``xbpp`` finds 胸部平片); the exam's procedure may
have a *normal* template, inserted with one key (the radiologist's own first, then the
section's, then the department's).

Texts carry **choice slots**, ``{左/右}`` or ``{未见/可见}异常``: the page cycles through them
with Tab and the radiologist keeps one choice; and **blanks**, ``__``, to type into. A report is
not signed with a slot or a blank left (:func:`pacslite.ris.reports.signing`).

A department's templates are exported (JSON, or CSV with every cell a spreadsheet would take for
a formula neutralised) and imported elsewhere all or none: one bad row and nothing changes.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from typing import Any, Iterable, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.names import pinyin_of
from ..core.validation import N_, Conflict, NotFound, ValidationError, choice, text
from . import procedures, users

DEPARTMENT, SECTION, PERSONAL = "department", "section", "personal"
LEVELS = (DEPARTMENT, SECTION, PERSONAL)
#: How a tree or a search is ordered: the radiologist's own first.
LEVEL_ORDER = {PERSONAL: 0, SECTION: 1, DEPARTMENT: 2}
#: A choice slot: ``{左/右}`` (two or more choices, none empty, no braces inside).
SLOT = re.compile(r"\{([^{}/\n]+(?:/[^{}/\n]+)+)\}")
TEXT_MAX = 20000
#: At most this many templates are read for one tree or search (a department keeps hundreds).
LIMIT = 2000
#: At most this many templates in one import (its size: the TEMPLATE_IMPORT_MAX_BYTES setting).
IMPORT_MAX = 5000
FIELDS = ("level", "section", "modality", "body_part", "folder", "name", "findings", "impression", "procedure_code")
CSV_HEADER = list(FIELDS)


def slots(value: str) -> list[tuple[int, int, list[str]]]:
    """The choice slots of a text: (start, end, choices) each."""
    return [(m.start(), m.end(), m.group(1).split("/")) for m in SLOT.finditer(value or "")]


def first_slot(value: str) -> tuple[int, str] | None:
    """The first line (from 1) holding a choice slot not yet chosen, and its text; None if none."""
    for number, line in enumerate((value or "").splitlines(), 1):
        if SLOT.search(line):
            return number, line.strip()
    return None


def initials(name: str) -> str:
    """The pinyin initials of a name, for searching (胸部平片 → xbpp); Latin words' first letters."""
    return pinyin_of(name)[1]


# ---------------------------------------------------------------- reading

def visible(conn: sqlite3.Connection, username: str, *, modality: str = "", body_part: str = "") -> list[sqlite3.Row]:
    """The templates this radiologist sees for an exam of ``modality`` and ``body_part`` (blank:
    every one): the department's, every section's and their own; a template for every modality
    or body part counts for all. The radiologist's own first, then the sections', then the
    department's; by folder and name."""
    clauses, params = ["(level <> ? OR owner = ?)"], [PERSONAL, username]
    if modality:
        clauses.append("modality IN (?, '')")
        params.append(modality)
    if body_part:
        clauses.append("(body_part = '' OR UPPER(body_part) = UPPER(?))")
        params.append(body_part)
    rows = conn.execute(f"SELECT * FROM report_templates WHERE {' AND '.join(clauses)}"
                        " ORDER BY folder, name, id LIMIT ?", (*params, LIMIT)).fetchall()
    return sorted(rows, key=lambda row: LEVEL_ORDER[row["level"]])


def tree(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[tuple[str, list[Mapping[str, Any]]]]]]:
    """The rows as the page's tree: level → folder → templates, in the rows' order."""
    levels: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for row in rows:
        levels.setdefault(row["level"], {}).setdefault(row["folder"], []).append(row)
    return [(level, list(folders.items())) for level, folders in levels.items()]


def search(rows: Iterable[Mapping[str, Any]], query: str) -> list[Mapping[str, Any]]:
    """The rows whose name holds ``query``, or whose pinyin initials start with it (``xb``)."""
    wanted = query.strip().lower()
    if not wanted:
        return list(rows)
    return [row for row in rows
            if wanted in row["name"].lower() or initials(row["name"]).startswith(wanted.replace(" ", ""))]


def get(conn: sqlite3.Connection, template_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM report_templates WHERE id = ?", (template_id,)).fetchone()
    if row is None:
        raise NotFound(f"template {template_id}")
    return row


def for_use(conn: sqlite3.Connection, username: str, template_id: int) -> sqlite3.Row:
    """A template this radiologist may insert (not another radiologist's own)."""
    row = get(conn, template_id)
    if row["level"] == PERSONAL and row["owner"] != username:
        raise NotFound(f"template {template_id}")
    return row


def normal_for(conn: sqlite3.Connection, username: str, exam: Mapping[str, Any]) -> sqlite3.Row | None:
    """The normal template of the exam's procedure: the radiologist's own, else a section's,
    else the department's; None when it has none."""
    if not exam["procedure_code"]:
        return None
    rows = conn.execute("SELECT * FROM report_templates WHERE procedure_code = ? AND (level <> ? OR owner = ?)"
                        " ORDER BY id", (exam["procedure_code"], PERSONAL, username)).fetchall()
    return min(rows, key=lambda row: LEVEL_ORDER[row["level"]], default=None)


def inserted(current: str, template_text: str, *, replace: bool) -> str:
    """A text with a template's: in its place (``replace``) or after it on a new line."""
    current = (current or "").rstrip()
    if replace or not current:
        return template_text
    return f"{current}\n{template_text}" if template_text else current


# ---------------------------------------------------------------- keeping them

def _fields(conn: sqlite3.Connection, settings: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    modalities = tuple(m["code"] for m in settings["MODALITIES"])
    fields = {"level": choice(data, "level", LEVELS),
              "section": text(data, "section", max_length=64),
              "modality": choice(data, "modality", modalities, required=False),
              "body_part": text(data, "body_part", max_length=64),
              "folder": text(data, "folder", max_length=128),
              "name": text(data, "name", required=True, max_length=128),
              "findings": text(data, "findings", max_length=TEXT_MAX, multiline=True),
              "impression": text(data, "impression", max_length=TEXT_MAX, multiline=True),
              "procedure_code": text(data, "procedure_code", max_length=32) or None}
    if fields["level"] == SECTION and not fields["section"]:
        raise ValidationError("section", N_("A section's template names its section (a modality or a body part group)."))
    if fields["level"] != SECTION:
        fields["section"] = ""
    if not fields["findings"] and not fields["impression"]:
        raise ValidationError("findings", N_("Give the findings text, the impression text, or both."))
    if fields["procedure_code"] and procedures.find_procedure(conn, fields["procedure_code"]) is None:
        raise ValidationError("procedure_code", N_("No procedure has this code."))
    return fields


#: Actors that are not people (pacslite itself, the command line) keep the department's templates.
NOT_PEOPLE = ("system", "cli")


def _may_keep(conn: sqlite3.Connection, actor: audit.Actor, level: str, owner: str) -> None:
    if level != PERSONAL and actor.name in NOT_PEOPLE:
        return
    user = users.by_username(conn, actor.name)
    if user is None:
        raise Conflict(N_("Only a radiologist keeps their own templates; administrators keep the others."))
    if level == PERSONAL and owner == actor.name and user.has_any(("radiologist",)):
        return
    if level != PERSONAL and "admin" in user.roles:
        return
    raise Conflict(N_("Only a radiologist keeps their own templates; administrators keep the others."))


def save(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], data: Mapping[str, Any],
         template_id: int | None = None) -> int:
    """Add a template (``template_id`` None) or change one; a personal one is the actor's own.
    Audited. ValidationError for a bad field or a name already used in its place; Conflict when
    the actor may not keep it."""
    fields = _fields(conn, settings, data)
    owner = actor.name if fields["level"] == PERSONAL else ""
    _may_keep(conn, actor, fields["level"], owner)
    now = clock.to_db(clock.now())
    with transaction(conn):
        if template_id is not None:
            old = get(conn, template_id)
            _may_keep(conn, actor, old["level"], old["owner"])
        _refuse_clash(conn, fields, owner, template_id)
        values = {**fields, "owner": owner, "at": now, "by": actor.name}
        if template_id is None:
            template_id = int(conn.execute(
                "INSERT INTO report_templates (level, owner, section, modality, body_part, folder, name, findings,"
                " impression, procedure_code, updated_at, updated_by) VALUES (:level, :owner, :section, :modality,"
                " :body_part, :folder, :name, :findings, :impression, :procedure_code, :at, :by)", values).lastrowid)
            action = "template.add"
        else:
            conn.execute("UPDATE report_templates SET level = :level, owner = :owner, section = :section,"
                         " modality = :modality, body_part = :body_part, folder = :folder, name = :name,"
                         " findings = :findings, impression = :impression, procedure_code = :procedure_code,"
                         " updated_at = :at, updated_by = :by WHERE id = :id", {**values, "id": template_id})
            action = "template.update"
        audit.record(conn, actor, action, f"template:{template_id}", detail={**fields, "owner": owner})
    return template_id


def _refuse_clash(conn: sqlite3.Connection, fields: Mapping[str, Any], owner: str, template_id: int | None) -> None:
    clash = conn.execute(
        "SELECT id FROM report_templates WHERE level = ? AND owner = ? AND section = ? AND modality = ?"
        " AND body_part = ? AND folder = ? AND name = ?",
        (fields["level"], owner, fields["section"], fields["modality"], fields["body_part"], fields["folder"],
         fields["name"])).fetchone()
    if clash is not None and clash["id"] != template_id:
        raise ValidationError("name", N_("A template of this name is already in this place of the tree."))


def remove(conn: sqlite3.Connection, actor: audit.Actor, template_id: int) -> None:
    with transaction(conn):
        row = get(conn, template_id)
        _may_keep(conn, actor, row["level"], row["owner"])
        conn.execute("DELETE FROM report_templates WHERE id = ?", (template_id,))
        audit.record(conn, actor, "template.remove", f"template:{template_id}", detail=dict(row))


# ---------------------------------------------------------------- export and import

def department_list(conn: sqlite3.Connection, *, modality: str = "", limit: int = 200,
                    offset: int = 0) -> list[sqlite3.Row]:
    """The department's and the sections' templates, for the administrator's list (a page)."""
    clause, params = ("AND modality = ?", [modality]) if modality else ("", [])
    return conn.execute(f"SELECT * FROM report_templates WHERE level <> ? {clause} ORDER BY modality, body_part,"
                        " level, section, folder, name LIMIT ? OFFSET ?", (PERSONAL, *params, limit, offset)).fetchall()


def department_rows(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The department's and the sections' templates (not anyone's own), for export."""
    rows = conn.execute("SELECT * FROM report_templates WHERE level <> ? ORDER BY level, section, modality,"
                        " body_part, folder, name LIMIT ?", (PERSONAL, IMPORT_MAX)).fetchall()
    return [{field: row[field] or "" for field in FIELDS} for row in rows]


def export_json(conn: sqlite3.Connection) -> str:
    return json.dumps({"pacslite_report_templates": 1, "templates": department_rows(conn)}, ensure_ascii=False,
                      indent=1)


def export_csv_rows(conn: sqlite3.Connection) -> list[list[Any]]:
    """Header and rows; the caller neutralises formulas as every CSV download does."""
    return [CSV_HEADER, *([row[field] for field in FIELDS] for row in department_rows(conn))]


#: A cell the export neutralised ('=…, '+…, '-…, '@…): the apostrophe is taken off again.
_NEUTRALISED = re.compile(r"^'(?=[=+\-@\t\r])")


def parse(payload: bytes, filename: str, max_bytes: int = 5 * 1024 * 1024) -> list[dict[str, str]]:
    """The templates in an uploaded export: JSON (``.json``) or CSV (UTF-8, a first row naming
    the columns). ValidationError ("file") when it is neither."""
    if len(payload) > max_bytes:
        raise ValidationError("file", N_("The file is larger than %(mb)d MB."), mb=max(1, max_bytes // (1024 * 1024)))
    try:
        content = payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("file", N_("The file is not UTF-8 text.")) from None
    if filename.lower().endswith(".json"):
        try:
            document = json.loads(content)
            rows = document["templates"]
            assert isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise ValidationError("file", N_("This is not a pacslite template export (JSON).")) from None
    else:
        reader = csv.DictReader(io.StringIO(content))
        if reader.fieldnames is None or not {"level", "name"} <= set(reader.fieldnames):
            raise ValidationError("file", N_("The CSV's first row names its columns: %(columns)s."),
                                  columns=", ".join(CSV_HEADER))
        rows = list(reader)
    if len(rows) > IMPORT_MAX:
        raise ValidationError("file", N_("At most %(count)d templates in one file."), count=IMPORT_MAX)
    return [{field: _NEUTRALISED.sub("", str(row.get(field) or "")) for field in FIELDS} for row in rows]


def import_rows(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any],
                rows: list[Mapping[str, Any]]) -> dict[str, int]:
    """Add the department's and sections' templates of another department, all or none: a
    template already in its place is replaced; a row that is wrong (or a radiologist's own)
    refuses the whole file, with its row number. {"added": n, "replaced": m}."""
    checked = []
    for number, row in enumerate(rows, start=2):  # as a spreadsheet numbers them under the header
        try:
            if row.get("level") == PERSONAL:
                raise ValidationError("level", N_("A radiologist's own templates are not imported."))
            checked.append(_fields(conn, settings, row))
        except ValidationError as exc:
            raise ValidationError("file", N_("Row %(row)d, %(column)s: %(problem)s"), row=number, column=exc.field,
                                  problem=exc) from None
    _may_keep(conn, actor, DEPARTMENT, "")
    now = clock.to_db(clock.now())
    counts = {"added": 0, "replaced": 0}
    with transaction(conn):
        for fields in checked:
            found = conn.execute(
                "SELECT id FROM report_templates WHERE level = ? AND owner = '' AND section = ? AND modality = ?"
                " AND body_part = ? AND folder = ? AND name = ?",
                (fields["level"], fields["section"], fields["modality"], fields["body_part"], fields["folder"],
                 fields["name"])).fetchone()
            values = {**fields, "at": now, "by": actor.name}
            if found is None:
                conn.execute("INSERT INTO report_templates (level, section, modality, body_part, folder, name,"
                             " findings, impression, procedure_code, updated_at, updated_by) VALUES (:level, :section,"
                             " :modality, :body_part, :folder, :name, :findings, :impression, :procedure_code, :at,"
                             " :by)", values)
                counts["added"] += 1
            else:
                conn.execute("UPDATE report_templates SET findings = :findings, impression = :impression,"
                             " procedure_code = :procedure_code, updated_at = :at, updated_by = :by WHERE id = :id",
                             {**values, "id": found["id"]})
                counts["replaced"] += 1
        audit.record(conn, actor, "template.import", "templates", detail={**counts, "rows": len(checked)})
    return counts
