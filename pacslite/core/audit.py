"""The audit log: append-only, hash-chained, written in the same transaction as the change.

Each row's hash covers the previous row's hash and the row's own content, so removing,
reordering or editing a row breaks the chain from that row on; :func:`verify` finds it.
The database refuses UPDATE and DELETE on the table (triggers in migration 0001).

Someone who can write the database file can still drop the triggers, so two things live
outside it. The chain is keyed: each hash is an HMAC with a secret kept in ``audit_key``
(mode 0600, beside the database), so a rewritten row cannot be given a matching hash again.
And the chain's head (row id and hash) is appended to ``audit_anchors`` every few minutes,
when pacslite stops and with every backup, so that deleting the newest rows is found too.
Rows written before the key existed (an older installation) stay verified by plain SHA-256;
the key file records up to which row.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import clock, db, storage

GENESIS = "0" * 64
KEY_FILE = "audit_key"
ANCHOR_FILE = "audit_anchors"


@dataclass(frozen=True)
class Actor:
    """Who did something: a user name (or ``ae:TITLE``, ``cli``, ``system``) and where from."""

    name: str
    address: str = ""


SYSTEM = Actor("system")


@dataclass(frozen=True)
class ChainKey:
    secret: bytes
    legacy_until: int  # rows up to this id were written before the key: plain SHA-256


_keys: dict[str, ChainKey] = {}
_keys_lock = threading.Lock()


def _read_key(path: Path) -> ChainKey:
    data = json.loads(path.read_text(encoding="ascii"))
    return ChainKey(bytes.fromhex(data["key"]), int(data["legacy_until"]))


def chain_key(conn: sqlite3.Connection, create: bool = True) -> ChainKey | None:
    """The chain's key for this database, made on first use (mode 0600, beside the database);
    None if there is none and ``create`` is false.

    A database that already has rows when the key is made (an upgrade, or a key file that was
    deleted: then :func:`verify` reports the keyed rows, which no longer match) keeps those
    rows under plain SHA-256.
    """
    database = db.identity(conn)
    with _keys_lock:
        known = _keys.get(database)
        if known is not None:
            return known
        path = db.files_dir(conn) / KEY_FILE
        if path.is_file() or not create:
            if not path.is_file():
                return None
            _keys[database] = key = _read_key(path)
            return key
        last = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0] or 0
        key = _make_key(path, ChainKey(os.urandom(32), int(last)))
        _keys[database] = key
        return key


def _make_key(path: Path, key: ChainKey) -> ChainKey:
    """Write ``key`` to ``path`` unless another process (another node on the shared store)
    made one first; the key in the file either way. Written whole to a file of its own, then
    linked into place, so nobody reads it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            json.dump({"key": key.secret.hex(), "legacy_until": key.legacy_until}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
        storage.fsync_dir(path.parent)
        return key
    finally:
        tmp.unlink(missing_ok=True)


def _digest(key: ChainKey | None, row_id: int, prev_hash: str, row: Iterable[Any]) -> str:
    content = json.dumps(list(row), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    message = (prev_hash + content).encode("utf-8")
    if key is None or row_id <= key.legacy_until:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key.secret, message, hashlib.sha256).hexdigest()


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
    key = chain_key(conn)
    assert key is not None
    at = clock.to_db(clock.now())
    detail_text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
    last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev_hash = last["hash"] if last else GENESIS
    row_id = (last["id"] if last else 0) + 1
    row = _content(at, actor.name, actor.address, action, target, patient_id, outcome, detail_text)
    conn.execute(
        "INSERT INTO audit_log (id, at, actor, address, action, target, patient_id, outcome, detail,"
        " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, *row, prev_hash, _digest(key, row_id, prev_hash, row)),
    )
    return row_id


# ---------------------------------------------------------------- the head, kept outside

@dataclass(frozen=True)
class Anchor:
    at: str
    row_id: int
    hash: str


def head(conn: sqlite3.Connection) -> Anchor | None:
    """The chain's newest row (id and hash), or None while the log is empty."""
    last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    return Anchor(clock.to_db(clock.now()), int(last["id"]), last["hash"]) if last else None


def anchor_path(conn: sqlite3.Connection) -> Path:
    return db.files_dir(conn) / ANCHOR_FILE


def _format(anchor: Anchor) -> str:
    return f"{anchor.at} {anchor.row_id} {anchor.hash}\n"


def read_anchors(path: Path) -> Iterator[Anchor]:
    """The anchors in a file, oldest first (a malformed line is skipped: a torn last write)."""
    if not path.is_file():
        return
    with open(path, encoding="ascii", errors="replace") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and len(parts[2]) == 64:
                yield Anchor(parts[0], int(parts[1]), parts[2])


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 200))
            lines = handle.read().decode("ascii", "replace").splitlines()
    except FileNotFoundError:
        return ""
    return lines[-1] if lines else ""


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_anchor(conn: sqlite3.Connection, *_settings: Any) -> Anchor | None:
    """Append the chain's head to the anchor file, unless it is the head written last."""
    anchor = head(conn)
    if anchor is None:
        return None
    path = anchor_path(conn)
    last = _last_line(path).split()
    if last[1:] == [str(anchor.row_id), anchor.hash]:
        return None
    _append(path, _format(anchor))
    return anchor


def write_backup_anchors(conn: sqlite3.Connection, backup: sqlite3.Connection, target: Path) -> None:
    """Beside a backup: the anchors so far and the backup's own head, so that the backup can be
    verified after a restore, and the anchors survive the loss of the instance folder."""
    write_anchor(conn)
    lines = [_format(a) for a in read_anchors(anchor_path(conn))]
    own = head(backup)
    if own is not None:
        lines.append(_format(own))
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("".join(lines), encoding="ascii")
    os.chmod(tmp, 0o600)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(target)


# ---------------------------------------------------------------- checking

@dataclass(frozen=True)
class Problem:
    """What :func:`verify` found: the row it concerns and what is wrong."""

    row_id: int
    kind: str  # "rewritten": the row does not match the chain; "missing": rows after it are gone;
    #            "replaced": the row differs from the head anchored for it; "no_key": no key file
    anchored_at: str = ""

    def describe(self) -> str:
        if self.kind == "no_key":
            return f"the key file {KEY_FILE} beside the database is missing: the chain cannot be checked"
        if self.kind == "missing":
            return (f"rows are missing: row {self.row_id} was anchored at {self.anchored_at}"
                    " but the log now ends before it (its newest rows were deleted)")
        if self.kind == "replaced":
            return (f"row {self.row_id} differs from its anchor of {self.anchored_at}"
                    " (rows were deleted and replaced, or the chain was rewritten)")
        return f"row {self.row_id} does not match the chain (it was changed)"


def _all_rows(conn: sqlite3.Connection, batch: int = 10_000) -> Iterator[Any]:
    """Every audit row in id order, read a batch at a time (PostgreSQL's client would otherwise
    hold millions of rows in memory at once)."""
    after = -1
    while True:
        rows = conn.execute("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (after, batch)).fetchall()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1]["id"]


def verify(conn: sqlite3.Connection, anchors: Path | None = None) -> Problem | None:
    """The first problem with the chain, or None: every row matches its keyed hash, and every
    anchored head (from ``anchors``, by default the instance's anchor file) is still there."""
    key = chain_key(conn, create=False)
    first = conn.execute("SELECT MIN(id) FROM audit_log").fetchone()[0]
    if key is None and first is not None:
        return Problem(int(first), "no_key")
    prev_hash, last_id = GENESIS, 0
    hashes: dict[int, str] = {}
    wanted = {a.row_id: a for a in read_anchors(anchors or anchor_path(conn))}
    for r in _all_rows(conn):
        row = _content(r["at"], r["actor"], r["address"], r["action"], r["target"],
                       r["patient_id"], r["outcome"], r["detail"])
        if r["prev_hash"] != prev_hash or r["hash"] != _digest(key, r["id"], prev_hash, row):
            return Problem(int(r["id"]), "rewritten")
        prev_hash, last_id = r["hash"], int(r["id"])
        if last_id in wanted:
            hashes[last_id] = r["hash"]
    for anchor in sorted(wanted.values(), key=lambda a: a.row_id):
        if anchor.row_id > last_id:
            return Problem(anchor.row_id, "missing", anchor.at)
        if hashes.get(anchor.row_id) != anchor.hash:
            return Problem(anchor.row_id, "replaced", anchor.at)
    return None


def row_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]


def search(conn: sqlite3.Connection, *, actor: str = "", action: str = "", patient_id: str = "",
           outcome: str = "", since: str = "", until: str = "", limit: int = 200,
           before_id: int | None = None) -> list[sqlite3.Row]:
    """Audit rows, newest first, filtered; ``action`` matches the codes it begins (case aside);
    ``before_id`` pages back.

    Each filter has an index kept in id order, so the newest rows come first without reading
    the log. An action prefix is turned into the codes it matches (one index seek per code) and
    each code read newest first: a LIKE would scan millions of rows looking for a rare action.
    """
    filters = [
        ("actor = ?", actor),
        ("patient_id = ?", patient_id),
        ("outcome = ?", outcome),
        ("at >= ?", since),
        ("at < ?", until),
        ("id < ?", before_id),
    ]
    clauses = [sql for sql, value in filters if value]
    params = [value for _, value in filters if value]
    codes = _actions_beginning(conn, action.lower()) if action else [None]
    found: list[sqlite3.Row] = []
    for code in codes:
        where = clauses + (["action = ?"] if code is not None else [])
        where_sql = f"WHERE {' AND '.join(where)}" if where else ""
        found += conn.execute(f"SELECT * FROM audit_log {where_sql} ORDER BY id DESC LIMIT ?",
                              (*params, *([code] if code is not None else []), limit)).fetchall()
    return sorted(found, key=lambda row: row["id"], reverse=True)[:limit]


#: At most this many action codes are looked up for one prefix (there are a few dozen).
MAX_ACTION_CODES = 200


def _actions_beginning(conn: sqlite3.Connection, prefix: str) -> list[str]:
    """The action codes in the log that begin with ``prefix``, by seeks in the action index."""
    codes: list[str] = []
    code = conn.execute("SELECT MIN(action) FROM audit_log WHERE action >= ?", (prefix,)).fetchone()[0]
    while code is not None and code.startswith(prefix) and len(codes) < MAX_ACTION_CODES:
        codes.append(code)
        code = conn.execute("SELECT MIN(action) FROM audit_log WHERE action > ?", (code,)).fetchone()[0]
    return codes
