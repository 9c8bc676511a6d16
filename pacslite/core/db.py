"""Database access: one connection per thread or request, numbered migrations; SQLite or PostgreSQL.

``DATABASE`` is a file path (SQLite, the default) or a ``postgresql://`` URL. Domain modules
write SQL once, in SQLite's words; on PostgreSQL :mod:`postgres` translates it (:mod:`dialect`).

SQLite connections use WAL (readers never wait for the writer), foreign keys, a busy timeout
and ``synchronous=FULL`` (a committed transaction survives a power cut). Writes go through
:func:`transaction`, which takes the write lock up front so two writers never deadlock on a lock
upgrade: SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL ``BEGIN`` and a transaction-level advisory
lock (:data:`WRITE_LOCK`), so write transactions from every process and server are one after
another, as on SQLite — which is what keeps the audit chain strictly ordered (each row hashes
the one before it) and every read-then-write in the domain modules free of races. Readers take
no lock on either.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from . import dialect

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
BUSY_TIMEOUT_MS = 30_000
#: The advisory lock every PostgreSQL write transaction holds until it ends ("pacs").
WRITE_LOCK = 0x70616373
#: The PostgreSQL schema starts from this version (the schema SQLite reaches with migrations
#: 1 … 43, in migrations/postgresql/); every later migration is shared.
POSTGRESQL_BASELINE = 43

try:
    import psycopg
    IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
    OperationalError: tuple[type[Exception], ...] = (sqlite3.OperationalError, psycopg.OperationalError)
    Error: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
except ImportError:  # pragma: no cover - psycopg is in requirements.txt
    IntegrityError, OperationalError, Error = (sqlite3.IntegrityError,), (sqlite3.OperationalError,), (sqlite3.Error,)


def is_postgresql(target: str | Path) -> bool:
    """Whether ``DATABASE`` names a PostgreSQL database (else it is a SQLite file)."""
    return str(target).startswith(("postgresql://", "postgres://"))


def dialect_of(conn: Any) -> str:
    return getattr(conn, "dialect", dialect.SQLITE)


def connect(path: str | Path, pooled: bool = False) -> Any:
    """Open the database; usable from any thread (each thread opens its own). ``pooled``: on
    PostgreSQL, reuse an idle connection and keep it when closed (a web request's)."""
    if is_postgresql(path):
        from . import postgres
        return postgres.Connection(str(path), pooled)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def begin(conn: Any) -> None:
    """Start a write transaction holding the write lock (see the module's docstring)."""
    if dialect_of(conn) == dialect.POSTGRESQL:
        conn.executescript(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")  # one round trip
    else:
        conn.execute("BEGIN IMMEDIATE")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction holding the write lock … COMMIT, rolled back on any exception."""
    begin(conn)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def claim_due(conn: sqlite3.Connection, due_sql: str, params: tuple[Any, ...],
              mark: Callable[[list[sqlite3.Row]], None]) -> list[sqlite3.Row]:
    """The rows ``due_sql`` finds, passed to ``mark`` (which takes them: state = sending…) in one
    write transaction. A duty polls every few seconds and nearly always finds nothing: that is
    found by a plain read, without taking the write lock that images arriving need."""
    if conn.execute(due_sql, params).fetchone() is None:
        return []
    with transaction(conn):
        due = conn.execute(due_sql, params).fetchall()
        mark(due)
    return due


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
            begin(conn)
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
    """The file the connection's main SQLite database is in."""
    return Path(conn.execute("PRAGMA database_list").fetchone()[2])


def _advisory_key(text: str) -> int:
    """The advisory lock named ``text`` (a signed 64-bit number, as PostgreSQL takes it)."""
    return int.from_bytes(hashlib.sha256(f"pacslite {text}".encode()).digest()[:8], "big", signed=True)


def _try_advisory_lock(conn: Any, key: int) -> bool:
    """A session advisory lock, kept until the connection ends: never handed to a request."""
    conn.pooled = False
    return bool(conn.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0])


def duty_key(name: str) -> int:
    """The advisory lock of the duty ``name``."""
    return _advisory_key(f"duty {name}")


def take_duty(conn: Any, name: str) -> bool:
    """Whether this connection now holds the duty ``name`` (core/background.py): on PostgreSQL
    a session advisory lock, kept until the connection ends; on SQLite (one process) always."""
    if dialect_of(conn) != dialect.POSTGRESQL:
        return True
    return _try_advisory_lock(conn, duty_key(name))


def take_place(conn: Any, name: str, places: int) -> bool:
    """Whether this connection now holds one of the ``places`` places named ``name`` that every
    process on the database shares (say, the associations one address may hold): on PostgreSQL
    a session advisory lock, given back when the connection closes, also when its process dies;
    on SQLite (one process, which counts its own) always. ``places`` 0: no limit."""
    if dialect_of(conn) != dialect.POSTGRESQL or places <= 0:
        return True
    return any(_try_advisory_lock(conn, _advisory_key(f"place {name} {place}")) for place in range(places))


def other_processes(conn: Any) -> int:
    """How many other pacslite processes are connected to this database now (PostgreSQL; on
    SQLite, one process: 0). Each connection names its process: ``pacslite <pid>@<host>``."""
    if dialect_of(conn) != dialect.POSTGRESQL:
        return 0
    from . import postgres
    return conn.execute("SELECT COUNT(DISTINCT application_name) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name LIKE 'pacslite %' AND application_name <> ?",
                        (postgres.APPLICATION_NAME,)).fetchone()[0]


def is_broken(conn: Any) -> bool:
    """Whether the connection is gone (a PostgreSQL server that restarted) and must be opened again."""
    return dialect_of(conn) == dialect.POSTGRESQL and (conn.raw.closed or conn.raw.broken)


_files_dirs: dict[str, Path] = {}


def keep_files_in(target: str | Path, folder: str | Path) -> None:
    """Where the files that belong to a PostgreSQL database live (the audit chain's key and
    anchors): a folder every node shares. A SQLite database keeps them beside its file."""
    if is_postgresql(target):
        _files_dirs[str(target)] = Path(folder)


def files_dir(conn: Any) -> Path:
    """The folder of the files that belong to the connection's database (see keep_files_in)."""
    if dialect_of(conn) == dialect.POSTGRESQL:
        try:
            return _files_dirs[conn.url]
        except KeyError:
            raise RuntimeError("no folder for this PostgreSQL database's files: create_app sets it") from None
    return database_file(conn).parent


def table_names(conn: Any) -> list[str]:
    """pacslite's tables, by name (the schema's bookkeeping excluded)."""
    if dialect_of(conn) == dialect.POSTGRESQL:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                            " AND table_type = 'BASE TABLE' AND table_name <> 'pacslite_schema' ORDER BY 1")
    else:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                            " ORDER BY 1")
    return [row[0] for row in rows]


def identity(conn: Any) -> str:
    """What names the connection's database: its SQLite file, or its PostgreSQL URL."""
    return conn.url if dialect_of(conn) == dialect.POSTGRESQL else str(database_file(conn))


def group_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work(connection)`` in a write transaction shared with concurrent callers on the
    same database (see :class:`_GroupCommit`); returns once that transaction is committed,
    or raises what ``work`` raised (its changes rolled back) or what the commit raised.
    ``work`` may be given another thread's connection to the same database."""
    path = identity(conn)
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


POSTGRESQL_DIR = MIGRATIONS_DIR / "postgresql"


def schema_version(conn: Any) -> int:
    if dialect_of(conn) == dialect.POSTGRESQL:
        if conn.execute("SELECT to_regclass('pacslite_schema')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT version FROM pacslite_schema").fetchone()[0]
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: Any, target: int | None = None) -> list[int]:
    """Apply the migrations above the database's version, each in its own transaction.

    Returns the versions applied. ``target`` stops early (used by the upgrade test).
    """
    if dialect_of(conn) == dialect.POSTGRESQL:
        return _migrate_postgresql(conn, target)
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


def postgresql_script(number: int, path: Path) -> str:
    """Migration ``number`` in PostgreSQL's words: its twin in migrations/postgresql/ if it has
    one (the baseline, or a migration whose SQLite statements have no translation), else its
    DDL translated (:func:`dialect.ddl`)."""
    twins = sorted(POSTGRESQL_DIR.glob(f"{number:04d}_*.sql"))
    if twins:
        return twins[0].read_text(encoding="utf-8")
    return dialect.ddl(path.read_text(encoding="utf-8"))


def _migrate_postgresql(conn: Any, target: int | None) -> list[int]:
    """Several processes may start at once: the first takes the write lock and migrates, the
    others wait for it and find nothing left to do. A new database starts from the baseline."""
    applied = []
    with transaction(conn):
        conn.executescript(dialect.COMPATIBILITY)
        conn.execute("CREATE TABLE IF NOT EXISTS pacslite_schema (version INTEGER NOT NULL)")
        if conn.execute("SELECT COUNT(*) FROM pacslite_schema").fetchone()[0] == 0:
            conn.execute("INSERT INTO pacslite_schema (version) VALUES (0)")
    for number, path in migrations():
        if number < POSTGRESQL_BASELINE or (target is not None and number > target):
            continue
        with transaction(conn):
            if number <= schema_version(conn):
                continue
            conn.executescript(postgresql_script(number, path))
            conn.execute("UPDATE pacslite_schema SET version = ?", (number,))
        applied.append(number)
    conn.forget_schema()
    return applied
