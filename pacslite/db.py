"""SQLite access: one connection per thread or request, numbered migrations.

Connections use WAL (readers never wait for the writer), foreign keys, a busy timeout and
``synchronous=FULL`` (a committed transaction survives a power cut). Writes go through
:func:`transaction`, which takes the write lock up front with ``BEGIN IMMEDIATE`` so two writers
never deadlock on a lock upgrade.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database; usable from any thread (each thread opens its own)."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def get_db() -> sqlite3.Connection:
    """The request's connection, opened on first use and closed at the end of the request."""
    from flask import current_app, g  # only the web layer calls this

    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    from flask import g

    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def migrations() -> list[tuple[int, Path]]:
    """The numbered migration files, ``NNNN_name.sql``, in order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        found.append((int(path.name[:4]), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..N without gaps: {numbers}")
    return found


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, target: int | None = None) -> list[int]:
    """Apply the migrations above the database's version, each in its own transaction.

    Returns the versions applied. ``target`` stops early (used by the upgrade test).
    """
    applied = []
    for number, path in migrations():
        if number <= schema_version(conn) or (target is not None and number > target):
            continue
        script = path.read_text(encoding="utf-8")
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(number)
    return applied
