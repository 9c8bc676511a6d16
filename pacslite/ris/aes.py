"""The modalities (DICOM application entities) that may talk to pacslite, and who was refused.

An association is accepted only from a configured calling AE title (unless the setting
``DICOM_ACCEPT_ANY_CALLER`` is on) and only when it calls pacslite by its own AE title.
Each refusal is counted per (calling AE, called AE, address, reason) so that the admin page
can list it with one click to add the modality; so is each service (presentation context) an
accepted association was refused. Both are bounded and audited at most once a minute per
address, so that a flood of attempts cannot grow the database.
"""
from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.query import matches_text
from ..core.validation import AE_TITLE_PATTERN, N_, NotFound, ValidationError, choice, matches, text

#: Worklist character sets a modality may be configured for: DICOM term → what pydicom encodes.
CHARSETS = ("ISO_IR 192", "GB18030", "ISO 2022 IR 58", "ISO_IR 100")
#: What a configured AE may do over DICOM (verification is always allowed).
RIGHTS = ("store", "worklist", "query", "retrieve", "mpps", "commitment")
#: A modality's rights: what ``ae add`` gives without ``--may``, and what a caller gets when
#: any caller is accepted (DICOM_ACCEPT_ANY_CALLER).
MODALITY_RIGHTS = ("store", "worklist", "mpps", "commitment")
REJECTION_REASONS = ("unknown_calling_ae", "wrong_called_ae")
FIELDS = ("ae_title", "host", "port", "name", "location", "modality", "charset", "rights")


def clean_ae(data: Mapping[str, Any]) -> dict[str, Any]:
    ae_title = matches(text(data, "ae_title", required=True, max_length=16), "ae_title", AE_TITLE_PATTERN,
                       N_("Up to 16 letters, digits, spaces and punctuation; no backslash."))
    host = matches(text(data, "host", max_length=253), "host", r"[A-Za-z0-9.:_-]+",
                   N_("A host name or an IP address."))
    raw_port = data.get("port", 104)
    try:
        port = int(str(raw_port).strip() or 104)
    except ValueError:
        raise ValidationError("port", N_("A number from 1 to 65535.")) from None
    if not 1 <= port <= 65535:
        raise ValidationError("port", N_("A number from 1 to 65535."))
    modality = matches(text(data, "modality", max_length=16).upper(), "modality", r"[A-Z0-9]{1,16}",
                       N_("A DICOM modality code such as CT, MR or DX."))
    return {"ae_title": ae_title, "host": host, "port": port,
            "name": text(data, "name", max_length=64), "location": text(data, "location", max_length=64),
            "modality": modality,
            "charset": choice(data, "charset", CHARSETS, required=False, default=CHARSETS[0]),
            "rights": clean_rights(data.get("rights", MODALITY_RIGHTS))}


def clean_rights(value: Any) -> str:
    """Rights as stored (comma-separated, in RIGHTS order) from a list or a comma-separated text."""
    given = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    unknown = [v for v in given if v not in RIGHTS]
    if unknown:
        raise ValidationError("rights", N_("Rights are store, worklist, query, retrieve, mpps and commitment."))
    return ",".join(r for r in RIGHTS if r in given)


def rights_of(conn: sqlite3.Connection, ae_title: str) -> frozenset[str] | None:
    """What a configured AE may do; None when it is not configured."""
    row = find_ae(conn, ae_title)
    return None if row is None else frozenset(r for r in row["rights"].split(",") if r)


def list_aes(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM application_entities ORDER BY ae_title").fetchall()


def stations(conn: sqlite3.Connection, dicom_modality: str) -> list[sqlite3.Row]:
    """The configured AEs of this DICOM modality (CT, DX …): the stations an exam of it may be
    scheduled on."""
    return conn.execute("SELECT * FROM application_entities WHERE modality = ? ORDER BY ae_title",
                        (dicom_modality,)).fetchall()


def note_association(conn: sqlite3.Connection, ae_title: str, at: str) -> None:
    """A configured AE associated (any service): its last contact, shown on the modalities page.
    Written at most once a minute per AE, so a chatty modality does not write at every query."""
    due_before = clock.to_db(clock.from_db(at) - timedelta(minutes=1))
    row = conn.execute("SELECT last_association_at FROM application_entities WHERE ae_title = ?",
                       (ae_title,)).fetchone()
    if row is None or (row[0] is not None and row[0] >= due_before):
        return  # not configured, or noted within the minute: no write lock taken
    with transaction(conn):
        conn.execute("UPDATE application_entities SET last_association_at = ? WHERE ae_title = ?"
                     " AND (last_association_at IS NULL OR last_association_at < ?)", (at, ae_title, due_before))


def record_echo(conn: sqlite3.Connection, actor: audit.Actor, ae: Mapping[str, Any], status: int | None,
                error: str, milliseconds: float) -> None:
    """An administrator's C-ECHO test of a configured AE, audited with its outcome."""
    with transaction(conn):
        audit.record(conn, actor, "ae.echo", f"ae:{ae['ae_title']}", outcome="success" if status == 0 else "failure",
                     detail={"host": ae["host"], "port": ae["port"], "status": status, "error": error,
                             "ms": round(milliseconds, 1)})


def find_ae(conn: sqlite3.Connection, ae_title: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM application_entities WHERE ae_title = ?", (ae_title,)).fetchone()


def get_ae(conn: sqlite3.Connection, ae_title: str) -> sqlite3.Row:
    row = find_ae(conn, ae_title)
    if row is None:
        raise NotFound(f"AE {ae_title}")
    return row


def get_ae_by_id(conn: sqlite3.Connection, ae_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM application_entities WHERE id = ?", (ae_id,)).fetchone()
    if row is None:
        raise NotFound(f"AE {ae_id}")
    return row


def known_titles(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT ae_title FROM application_entities")]


def add_ae(conn: sqlite3.Connection, actor: audit.Actor, data: Mapping[str, Any]) -> sqlite3.Row:
    fields = clean_ae(data)
    now = clock.to_db(clock.now())
    with transaction(conn):
        if find_ae(conn, fields["ae_title"]) is not None:
            raise ValidationError("ae_title", N_("This AE title is configured already."))
        conn.execute("INSERT INTO application_entities (ae_title, host, port, name, location, modality, charset,"
                     " rights, created_at, updated_at) VALUES (:ae_title, :host, :port, :name, :location, :modality,"
                     " :charset, :rights, :now, :now)", {**fields, "now": now})
        audit.record(conn, actor, "ae.add", f"ae:{fields['ae_title']}", detail=fields)
    return get_ae(conn, fields["ae_title"])


def update_ae(conn: sqlite3.Connection, actor: audit.Actor, ae_title: str, data: Mapping[str, Any]) -> sqlite3.Row:
    """Change a modality's settings; its AE title stays (remove and add to rename). What
    ``data`` leaves out stays as it is."""
    with transaction(conn):
        before = get_ae(conn, ae_title)
        fields = clean_ae({**{k: before[k] for k in FIELDS}, **data, "ae_title": ae_title})
        changed = {k: (before[k], fields[k]) for k in FIELDS if before[k] != fields[k]}
        if changed:
            conn.execute("UPDATE application_entities SET host = :host, port = :port, name = :name,"
                         " location = :location, modality = :modality, charset = :charset, rights = :rights,"
                         " updated_at = :now"
                         " WHERE id = :id",
                         {**fields, "now": clock.to_db(clock.now()), "id": before["id"]})
            audit.record(conn, actor, "ae.update", f"ae:{ae_title}",
                         detail={"before": {k: v[0] for k, v in changed.items()},
                                 "after": {k: v[1] for k, v in changed.items()}})
    return get_ae(conn, ae_title)


def remove_ae(conn: sqlite3.Connection, actor: audit.Actor, ae_title: str) -> None:
    """Stop accepting a modality. Images it sent stay; the audit row keeps its settings."""
    with transaction(conn):
        before = get_ae(conn, ae_title)
        conn.execute("DELETE FROM application_entities WHERE id = ?", (before["id"],))
        audit.record(conn, actor, "ae.remove", f"ae:{ae_title}", detail={k: before[k] for k in FIELDS})


#: Refusals are counted per (calling AE, …, address); one address gets at most this many rows,
#: the table at most REFUSAL_ROWS_MAX: beyond, attempts are counted under "*" (others), so
#: that a flood of invented AE titles cannot grow the database or hide the real refusals.
REFUSAL_ROWS_PER_ADDRESS = 20
REFUSAL_ROWS_MAX = 2000
OTHERS = "*"
_REFUSAL_TABLES = {"association_rejections": ("calling_ae", "called_ae", "address", "reason"),
                   "refused_contexts": ("calling_ae", "address", "abstract_syntax", "reason")}


def _bounded_key(conn: sqlite3.Connection, table: str, key: dict[str, str]) -> dict[str, str]:
    """``key`` if it is counted already or there is room for it; else the address's "others"
    row, or, when the table is full, the one row of everything else."""
    columns = _REFUSAL_TABLES[table]
    where = " AND ".join(f"{c} = :{c}" for c in columns)
    if conn.execute(f"SELECT 1 FROM {table} WHERE {where}", key).fetchone():
        return key
    folded = {c: (v if c in ("address", "reason") else OTHERS) for c, v in key.items()}
    if conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] >= REFUSAL_ROWS_MAX:
        return {**folded, "address": OTHERS}
    if conn.execute(f"SELECT COUNT(*) FROM {table} WHERE address = ?",
                    (key["address"],)).fetchone()[0] >= REFUSAL_ROWS_PER_ADDRESS:
        return folded
    return key


def _count(conn: sqlite3.Connection, table: str, key: dict[str, str], now: str) -> None:
    key = _bounded_key(conn, table, key)
    columns = _REFUSAL_TABLES[table]
    conn.execute(f"INSERT INTO {table} ({', '.join(columns)}, first_at, last_at)"
                 f" VALUES ({', '.join(':' + c for c in columns)}, :now, :now)"
                 f" ON CONFLICT ({', '.join(columns)}) DO UPDATE SET attempts = attempts + 1, last_at = excluded.last_at",
                 {**key, "now": now})


def _audit_refusal(conn: sqlite3.Connection, actor: audit.Actor, action: str, target: str,
                   detail: dict[str, Any], now: str) -> None:
    """Audit a refusal, at most once a minute per address; the row says how many were not."""
    last = conn.execute("SELECT audited_at, suppressed FROM refusal_audits WHERE address = ?",
                        (actor.address,)).fetchone()
    if last is not None and clock.from_db(now) - clock.from_db(last["audited_at"]) < timedelta(minutes=1):
        conn.execute("UPDATE refusal_audits SET suppressed = suppressed + 1 WHERE address = ?", (actor.address,))
        return
    audit.record(conn, actor, action, target, outcome="denied",
                 detail={**detail, "not_audited_since_last": last["suppressed"] if last else 0})
    conn.execute("INSERT INTO refusal_audits (address, audited_at, suppressed) VALUES (?, ?, 0)"
                 " ON CONFLICT (address) DO UPDATE SET audited_at = excluded.audited_at, suppressed = 0",
                 (actor.address, now))


def record_rejection(conn: sqlite3.Connection, calling_ae: str, called_ae: str, address: str, reason: str) -> None:
    """Count a refused association and audit it as denied (at most once a minute per address)."""
    now = clock.to_db(clock.now())
    with transaction(conn):
        _count(conn, "association_rejections",
               {"calling_ae": calling_ae, "called_ae": called_ae, "address": address, "reason": reason}, now)
        _audit_refusal(conn, audit.Actor(f"ae:{calling_ae}", address), "dicom.associate", f"ae:{called_ae}",
                       {"reason": reason}, now)


def list_rejections(conn: sqlite3.Connection, limit: int = 100) -> list[sqlite3.Row]:
    """Refused associations, newest first, each with whether its calling AE is configured now."""
    return conn.execute(
        "SELECT r.*, ae.id IS NOT NULL AS configured FROM association_rejections r"
        " LEFT JOIN application_entities ae ON ae.ae_title = r.calling_ae ORDER BY r.last_at DESC LIMIT ?",
        (limit,)).fetchall()


def record_refused_contexts(conn: sqlite3.Connection, calling_ae: str, address: str,
                            refused: list[tuple[str, str]]) -> None:
    """Count the services (abstract syntax, reason) an accepted association was refused."""
    if not refused:
        return
    now = clock.to_db(clock.now())
    with transaction(conn):
        for abstract_syntax, reason in refused:
            _count(conn, "refused_contexts", {"calling_ae": calling_ae, "address": address,
                                              "abstract_syntax": abstract_syntax, "reason": reason}, now)
        _audit_refusal(conn, audit.Actor(f"ae:{calling_ae}", address), "dicom.service", f"ae:{calling_ae}",
                       {"refused": [a for a, _ in refused][:20]}, now)


def list_refused_contexts(conn: sqlite3.Connection, limit: int = 100) -> list[sqlite3.Row]:
    """Refused services, newest first."""
    return conn.execute("SELECT * FROM refused_contexts ORDER BY last_at DESC LIMIT ?", (limit,)).fetchall()


def station_modalities(conn: sqlite3.Connection, station_query: str) -> set[str]:
    """The DICOM modalities of the configured AEs a worklist's ScheduledStationAETitle names
    (a title, or a wildcard): an exam scheduled on no station is offered only to those."""
    return {row["modality"] for row in list_aes(conn)
            if row["modality"] and matches_text(station_query, row["ae_title"])}


def charset_of(conn: sqlite3.Connection, ae_title: str) -> str:
    """The worklist character set for a calling AE (UTF-8 when it is not configured)."""
    row = find_ae(conn, ae_title)
    return row["charset"] if row else CHARSETS[0]
