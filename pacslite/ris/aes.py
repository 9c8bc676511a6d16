"""The modalities (DICOM application entities) that may talk to pacslite, and who was refused.

An association is accepted only from a configured calling AE title (unless the setting
``DICOM_ACCEPT_ANY_CALLER`` is on) and only when it calls pacslite by its own AE title.
Each refusal is counted per (calling AE, called AE, address, reason) so that the admin page
can list it with one click to add the modality; so is each service (presentation context) an
accepted association was refused. Both are bounded and audited at most once a minute per
address, so that a flood of attempts cannot grow the database.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
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
REJECTION_REASONS = ("unknown_calling_ae", "wrong_called_ae", "wrong_host", "tls_required", "wrong_certificate",
                     "tls_handshake", "too_many_from_address")
FIELDS = ("ae_title", "host", "port", "name", "location", "modality", "charset", "rights", "any_host", "also_from",
          "tls", "certificate")
#: The most further addresses (or host names) one AE may be accepted from.
MAX_ALSO_FROM = 8
_HOST_PATTERN = r"[A-Za-z0-9.:_-]+"


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
    certificate = clean_certificate(text(data, "certificate", max_length=16384, multiline=True))
    return {"ae_title": ae_title, "host": host, "port": port,
            "name": text(data, "name", max_length=64), "location": text(data, "location", max_length=64),
            "modality": modality,
            "charset": choice(data, "charset", CHARSETS, required=False, default=CHARSETS[0]),
            "rights": clean_rights(data.get("rights", MODALITY_RIGHTS)),
            "any_host": int(_flag(data.get("any_host"))), "also_from": clean_also_from(data.get("also_from", "")),
            # a pinned certificate is only ever seen over TLS
            "tls": int(_flag(data.get("tls")) or bool(certificate)), "certificate": certificate}


def _flag(value: Any) -> bool:
    """A checkbox or a command-line switch: on, 1, true, yes."""
    return value is True or str(value or "").strip().lower() in ("1", "on", "true", "yes")


def clean_also_from(value: Any) -> str:
    """Further addresses or host names the AE may call from (a modality with two network
    cards), separated by spaces or commas; stored space-separated."""
    given = [v for v in re.split(r"[\s,]+", str(value or "")) if v]
    if len(given) > MAX_ALSO_FROM or any(len(v) > 253 or not re.fullmatch(_HOST_PATTERN, v) for v in given):
        raise ValidationError("also_from", N_("Up to 8 host names or IP addresses, separated by spaces."))
    return " ".join(dict.fromkeys(given))


def clean_certificate(pem: str) -> str:
    """An AE's client certificate as PEM (one certificate), or empty."""
    if not pem:
        return ""
    from cryptography import x509
    try:
        x509.load_der_x509_certificate(ssl.PEM_cert_to_DER_cert(pem))
    except ValueError:
        raise ValidationError("certificate", N_("One certificate in PEM form (-----BEGIN CERTIFICATE----- …)."))
    return pem.strip() + "\n"


def certificate_sha256(pem: str) -> str:
    """The SHA-256 fingerprint (hex) an AE's certificate is pinned by; empty for none."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest() if pem else ""


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
    return None if row is None else _rights(row)


def _rights(ae: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(r for r in ae["rights"].split(",") if r)


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
                     " rights, any_host, also_from, tls, certificate, certificate_sha256, created_at, updated_at)"
                     " VALUES (:ae_title, :host, :port, :name, :location, :modality, :charset, :rights, :any_host,"
                     " :also_from, :tls, :certificate, :certificate_sha256, :now, :now)",
                     {**fields, "certificate_sha256": certificate_sha256(fields["certificate"]), "now": now})
        audit.record(conn, actor, "ae.add", f"ae:{fields['ae_title']}", detail=_audited(fields))
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
                         " any_host = :any_host, also_from = :also_from, tls = :tls, certificate = :certificate,"
                         " certificate_sha256 = :certificate_sha256, updated_at = :now WHERE id = :id",
                         {**fields, "certificate_sha256": certificate_sha256(fields["certificate"]),
                          "now": clock.to_db(clock.now()), "id": before["id"]})
            audit.record(conn, actor, "ae.update", f"ae:{ae_title}",
                         detail={"before": _audited({k: v[0] for k, v in changed.items()}),
                                 "after": _audited({k: v[1] for k, v in changed.items()})})
    return get_ae(conn, ae_title)


def remove_ae(conn: sqlite3.Connection, actor: audit.Actor, ae_title: str) -> None:
    """Stop accepting a modality. Images it sent stay; the audit row keeps its settings."""
    with transaction(conn):
        before = get_ae(conn, ae_title)
        conn.execute("DELETE FROM application_entities WHERE id = ?", (before["id"],))
        audit.record(conn, actor, "ae.remove", f"ae:{ae_title}", detail=_audited({k: before[k] for k in FIELDS}))


def _audited(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as the audit keeps them: a certificate by its fingerprint, not its 1 KB of PEM."""
    return {k: (certificate_sha256(v) if k == "certificate" else v) for k, v in fields.items()}


# ---------------------------------------------------------------- node authentication

#: How long a host name's addresses are believed (a DHCP-assigned modality's name may move).
RESOLVE_SECONDS = 60.0
_resolved: dict[str, tuple[float, frozenset[str]]] = {}
_resolved_lock = threading.Lock()


def _normal(address: str) -> str:
    """An IP address as compared: an IPv4 address mapped into IPv6 is the IPv4 one."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def addresses_of(host: str) -> frozenset[str]:
    """Every address ``host`` (a name or an address) stands for; none when it does not resolve.
    Names are resolved at most once a minute each."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass  # a name
    now = time.monotonic()
    with _resolved_lock:
        known = _resolved.get(host)
    if known and now - known[0] < RESOLVE_SECONDS:
        return known[1]
    try:
        found = frozenset(_normal(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, UnicodeError):
        found = frozenset()
    with _resolved_lock:
        _resolved[host] = (now, found)
    return found


def accepts_any_host(ae: Mapping[str, Any]) -> bool:
    """An AE marked "any host", or configured without one (as before node authentication)."""
    return bool(ae["any_host"]) or not ae["host"]


def accepted_from(ae: Mapping[str, Any], address: str) -> bool:
    """Whether the AE may call from ``address``: its host's addresses and its further ones."""
    if accepts_any_host(ae):
        return True
    address = _normal(address)
    return any(address in addresses_of(host) for host in [ae["host"], *ae["also_from"].split()])


@dataclass(frozen=True)
class Admission:
    """What a calling AE may do on this association, or why it is refused."""

    rights: frozenset[str] | None
    refusal: str = ""


def admit(conn: sqlite3.Connection, ae_title: str, address: str, *, over_tls: bool, peer_certificate: bytes | None,
          accept_any_caller: bool) -> Admission:
    """Node authentication: a configured AE is accepted only from its host, over TLS when it
    requires it, and with its pinned certificate when it has one; an unknown caller only when
    any caller is accepted (DICOM_ACCEPT_ANY_CALLER), with a modality's rights."""
    ae = find_ae(conn, ae_title)
    if ae is None:
        if accept_any_caller:
            return Admission(frozenset(MODALITY_RIGHTS))
        return Admission(None, "unknown_calling_ae")
    if not accepted_from(ae, address):
        return Admission(None, "wrong_host")
    if ae["tls"] and not over_tls:
        return Admission(None, "tls_required")
    if ae["certificate_sha256"] and (peer_certificate is None
                                     or hashlib.sha256(peer_certificate).hexdigest() != ae["certificate_sha256"]):
        return Admission(None, "wrong_certificate")
    return Admission(_rights(ae))


def pinned_certificates(conn: sqlite3.Connection) -> str:
    """Every AE's pinned certificate (PEM, concatenated): what the TLS port trusts as a client's."""
    return "".join(row[0] for row in conn.execute("SELECT certificate FROM application_entities WHERE certificate <> ''"))


def any_host_aes(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """AEs accepted from any address (marked so, or configured without a host)."""
    return conn.execute("SELECT * FROM application_entities WHERE any_host = 1 OR host = '' ORDER BY ae_title"
                        " LIMIT 1000").fetchall()


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
                 f" ON CONFLICT ({', '.join(columns)}) DO UPDATE SET attempts = {table}.attempts + 1, last_at = excluded.last_at",
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
