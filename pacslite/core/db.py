"""SQLite access: one connection per thread or request, numbered migrations.

Connections use WAL (readers never wait for the writer), foreign keys, a busy timeout and
``synchronous=FULL`` (a committed transaction survives a power cut). Writes go through
:func:`transaction`, which takes the write lock up front with ``BEGIN IMMEDIATE`` so two writers
never deadlock on a lock upgrade.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
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


class _Job:
    """One caller's work in a shared transaction: its result or error, and a wake-up."""

    def __init__(self, work: Callable[[sqlite3.Connection], object]) -> None:
        self.work = work
        self.result: object = None
        self.error: BaseException | None = None
        self.lead = False
        self.done = threading.Event()


class _GroupCommit:
    """Concurrent writers to one database share one transaction and one commit.

    A commit waits for the disk (``synchronous=FULL``); images arriving over several
    associations at once would otherwise each wait for their own. The first caller to find
    no commit under way leads: it runs every waiting job in one ``BEGIN IMMEDIATE``, each in
    its own savepoint (one job's failure does not touch the others), commits once, wakes the
    jobs, and hands the lead to the first caller that arrived meanwhile. Nobody returns
    before the commit that holds its work.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: list[_Job] = []
        self._busy = False

    def run(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        job = _Job(work)
        with self._mutex:
            self._waiting.append(job)
            job.lead, self._busy = not self._busy, True
        if not job.lead:
            job.done.wait()
        if job.lead:  # from the start, or handed over while waiting
            self._lead(conn)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _lead(self, conn: sqlite3.Connection) -> None:
        with self._mutex:
            batch, self._waiting = self._waiting, []
        try:
            self._commit(conn, batch)
        finally:
            with self._mutex:
                if self._waiting:
                    heir = self._waiting[0]
                    heir.lead = True
                    heir.done.set()
                else:
                    self._busy = False
            for job in batch:
                job.lead = False
                job.done.set()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    job.result = job.work(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    job.error = exc
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.result, job.error = None, job.error or exc
            if not isinstance(exc, Exception):
                raise


_groups: dict[str, _GroupCommit] = {}
_groups_lock = threading.Lock()


def database_file(conn: sqlite3.Connection) -> Path:
    """The file the connection's main database is in."""
    return Path(conn.execute("PRAGMA database_list").fetchone()[2])


def group_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work(connection)`` in a write transaction shared with concurrent callers on the
    same database (see :class:`_GroupCommit`); returns once that transaction is committed,
    or raises what ``work`` raised (its changes rolled back) or what the commit raised.
    ``work`` may be given another thread's connection to the same database."""
    path = str(database_file(conn))
    with _groups_lock:
        group = _groups.setdefault(path, _GroupCommit())
    return group.run(conn, work)


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
