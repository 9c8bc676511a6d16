"""The audit log: append-only, hash-chained, written in the same transaction as the change.

Each row's hash covers the previous row's hash and the row's own content, so removing,
reordering or editing a row breaks the chain from that row on; :func:`verify` finds it.
The database refuses UPDATE and DELETE on the table (triggers in migration 0001).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

from . import clock

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    """Who did something: a user name (or ``ae:TITLE``, ``cli``, ``system``) and where from."""

    name: str
    address: str = ""


SYSTEM = Actor("system")


def _digest(prev_hash: str, row: Iterable[Any]) -> str:
    content = json.dumps(list(row), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def _content(at: str, actor: str, address: str, action: str, target: str, patient_id: str,
             outcome: str, detail: str) -> tuple[str, ...]:
    return (at, actor, address, action, target, patient_id, outcome, detail)


def record(conn: sqlite3.Connection, actor: Actor, action: str, target: str = "", *,
           patient_id: str = "", outcome: str = "success", detail: dict[str, Any] | None = None) -> int:
    """Append one audit row. Call inside the transaction that makes the change.

    ``action`` is a dotted code (``exam.register``), ``target`` what it acted on
    (``exam:A2611240001``), ``outcome`` ``success``, ``failure`` or ``denied``.
    """
    if not conn.in_transaction:
        raise RuntimeError("audit.record must run inside the transaction of the change")
    at = clock.to_db(clock.now())
    detail_text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
    last = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev_hash = last[0] if last else GENESIS
    row = _content(at, actor.name, actor.address, action, target, patient_id, outcome, detail_text)
    cur = conn.execute(
        "INSERT INTO audit_log (at, actor, address, action, target, patient_id, outcome, detail,"
        " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row, prev_hash, _digest(prev_hash, row)),
    )
    return int(cur.lastrowid)


def verify(conn: sqlite3.Connection) -> int | None:
    """The id of the first row that no longer matches the chain, or None if all match."""
    prev_hash = GENESIS
    for r in conn.execute("SELECT * FROM audit_log ORDER BY id"):
        row = _content(r["at"], r["actor"], r["address"], r["action"], r["target"],
                       r["patient_id"], r["outcome"], r["detail"])
        if r["prev_hash"] != prev_hash or r["hash"] != _digest(prev_hash, row):
            return int(r["id"])
        prev_hash = r["hash"]
    return None


def row_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]


def search(conn: sqlite3.Connection, *, actor: str = "", action: str = "", patient_id: str = "",
           outcome: str = "", since: str = "", until: str = "", limit: int = 200,
           before_id: int | None = None) -> list[sqlite3.Row]:
    """Audit rows, newest first, filtered; ``before_id`` pages back."""
    filters = [
        ("actor = ?", actor),
        ("action LIKE ? ESCAPE '\\'", _prefix_pattern(action) if action else ""),
        ("patient_id = ?", patient_id),
        ("outcome = ?", outcome),
        ("at >= ?", since),
        ("at < ?", until),
        ("id < ?", before_id),
    ]
    clauses = [sql for sql, value in filters if value]
    params = [value for _, value in filters if value]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return conn.execute(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?",
                        (*params, limit)).fetchall()


def _prefix_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
