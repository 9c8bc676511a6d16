"""A PostgreSQL connection that the rest of pacslite uses as it uses sqlite3's.

The domain modules call ``conn.execute(sql, params)`` with SQLite's words and read rows by name
or position; this wrapper translates each statement (:mod:`dialect`), passes the parameters,
and returns rows that behave like ``sqlite3.Row``. It is opened in autocommit mode, as pacslite
opens SQLite (``isolation_level=None``): a statement outside :func:`db.transaction` commits on
its own, a transaction is an explicit ``BEGIN``.

Values keep the types SQLite returns: a whole ``SUM`` is an ``int`` (not a ``Decimal``), a
truth value passed as a parameter is 0 or 1, a ``datetime`` parameter is ISO text, a NUL in a
text parameter is U+FFFD (see ``_value``).
"""
from __future__ import annotations

import collections
import os
import socket
import threading
from datetime import date, datetime
from typing import Any, Iterator, Sequence

import psycopg
from psycopg import pq
from psycopg.adapt import Loader

from . import dialect

#: How long a statement waits for a lock (the write lock included) before it fails, as SQLite's
#: busy timeout.
LOCK_TIMEOUT_MS = 30_000


#: Each connection names its process (pg_stat_activity): other processes are seen at start-up
#: (db.other_processes), and an administrator sees who holds what.
APPLICATION_NAME = f"pacslite {os.getpid()}@{socket.gethostname()}"[:63]
#: Both ends notice a dead peer within about half a minute (10 s idle, then 4 probes 5 s apart):
#: the server then ends the session and releases the duties it held (core/background.py).
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4}
#: No JIT: it spent 260 ms compiling the two-year statistics query, more than it saved; pacslite's
#: queries are short.
_OPTIONS = (f"-c lock_timeout={LOCK_TIMEOUT_MS} -c TimeZone=UTC -c jit=off"
            " -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4")


class Row:
    """A result row: by position, by (case-insensitive) column name, ``keys()``, ``dict(row)``."""

    __slots__ = ("_values",)
    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __init__(self, values: Sequence[Any]) -> None:
        self._values = tuple(values)

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._index[key.lower()]]
            except KeyError:
                raise IndexError(f"No item with that key: {key}") from None
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._names == other._names and self._values == other._values
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._names, self._values))

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values))!r})"


_row_classes: dict[tuple[str, ...], type[Row]] = {}
_row_classes_lock = threading.Lock()


def _row_class(names: tuple[str, ...]) -> type[Row]:
    found = _row_classes.get(names)
    if found is None:
        with _row_classes_lock:
            index: dict[str, int] = {}
            for i, name in enumerate(names):
                index.setdefault(name.lower(), i)
            found = _row_classes.setdefault(names, type("Row", (Row,), {"__slots__": (), "_names": names,
                                                                         "_index": index}))
    return found


_ROWS = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.SINGLE_TUPLE, pq.ExecStatus.TUPLES_CHUNK)


def _row_factory(cursor: Any) -> Any:
    """The row class for the cursor's result. Names are read from the result itself:
    ``cursor.description`` makes a Column object per column per statement (a fifth of the
    database layer's time while images arrived)."""
    result = cursor.pgresult
    if result is None or result.status not in _ROWS or not result.nfields:
        return tuple
    return _row_class(tuple(result.fname(i).decode() for i in range(result.nfields)))


class _NumberLoader(Loader):
    """NUMERIC (what PostgreSQL's SUM and AVG return) as SQLite gives it: int when whole."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode("ascii")
        return int(text) if text.lstrip("-").isdigit() else float(text)


def _value(value: Any) -> Any:
    if isinstance(value, str):
        # PostgreSQL's text cannot hold NUL. Entered text refuses control characters
        # (validation.text) and DICOM values have theirs replaced when read, so a NUL here is a
        # search term or a hostile peer's key: as U+FFFD it matches nothing, as on SQLite,
        # where no stored value holds one.
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _parameters(statement: dialect.Statement, params: Any) -> Any:
    if isinstance(params, dict):
        return {key: _value(value) for key, value in params.items()}
    values = [_value(value) for value in params]
    return dialect.numbered_parameters(values) if statement.numbered else values


class Cursor(psycopg.Cursor):
    """psycopg's cursor with sqlite3's ``lastrowid``: the id of the row an INSERT made.

    Parameters are bound by the server (a statement run five times is prepared there), which
    costs a third less a statement than composing the text in Python: an image's ingest runs
    about twenty."""

    lastrowid: int | None = None


_identity_tables: dict[str, frozenset[str]] = {}

#: Idle connections kept for the next request (a new one costs a server process, ~5 ms): at most
#: IDLE_MAX across databases, the oldest closed first. Only connections without session state
#: (no duty lock, no transaction) are kept, and each is tried with a SELECT 1 when taken again.
IDLE_MAX = 16
_idle: collections.deque[tuple[str, Any]] = collections.deque()
_idle_lock = threading.Lock()


def _reused(url: str) -> Any:
    while True:
        with _idle_lock:
            found = next((i for i, (u, _) in enumerate(_idle) if u == url), None)
            if found is None:
                return None
            _, raw = _idle[found]
            del _idle[found]
        try:
            raw.execute("SELECT 1")
            return raw
        except psycopg.Error:
            raw.close()


def _keep(url: str, raw: Any) -> None:
    with _idle_lock:
        _idle.append((url, raw))
        evicted = [_idle.popleft()[1] for _ in range(len(_idle) - IDLE_MAX)]
    for old in evicted:
        old.close()


class Connection:
    """One connection to a pacslite database on PostgreSQL, used like ``sqlite3.Connection``."""

    dialect = dialect.POSTGRESQL

    def __init__(self, url: str, pooled: bool = False) -> None:
        """``pooled``: taken from (and given back to) the idle connections, for short uses such
        as a web request; a connection that takes a duty is never given back."""
        self.url = url
        self.pooled = pooled
        self.raw = _reused(url) if pooled else None
        if self.raw is None:
            self.raw = psycopg.connect(url, autocommit=True, cursor_factory=Cursor, row_factory=_row_factory,
                                       application_name=APPLICATION_NAME, options=_OPTIONS, **_KEEPALIVE)
            self.raw.adapters.register_loader("numeric", _NumberLoader)
        self.row_factory = None  # sqlite3's attribute; rows are always Row here

    # sqlite3.Connection's interface, as pacslite uses it

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        statement = dialect.statement(sql)
        text = statement.sql
        with_id = statement.insert_into is not None and statement.insert_into in self.identity_tables()
        if with_id:
            text += " RETURNING id"
        cursor = self.raw.cursor()
        cursor.execute(text, _parameters(statement, params))
        if with_id and cursor.rowcount > 0:
            cursor.lastrowid = cursor.fetchone()[0]
        return cursor

    def executemany(self, sql: str, seq: Any) -> Cursor:
        statement = dialect.statement(sql)
        cursor = self.raw.cursor()
        cursor.executemany(statement.sql, [_parameters(statement, params) for params in seq])
        return cursor

    def executescript(self, script: str) -> None:
        self.raw.execute(script)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        if self.pooled and not self.raw.closed and not self.raw.broken and not self.in_transaction:
            self.pooled = False
            _keep(self.url, self.raw)
        else:
            self.raw.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, kind: Any, *_exc: Any) -> None:
        """As sqlite3's: the transaction under way is committed (rolled back on an error); the
        connection stays open."""
        if kind is None:
            self.commit()
        else:
            self.rollback()

    # what pacslite needs beyond that

    def identity_tables(self) -> frozenset[str]:
        """The tables whose ``id`` the database makes (an INSERT returns it as ``lastrowid``)."""
        found = _identity_tables.get(self.url)
        if found is None:
            found = _identity_tables[self.url] = frozenset(row[0] for row in self.raw.execute(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND column_name = 'id' AND is_identity = 'YES'"))
        return found

    def forget_schema(self) -> None:
        _identity_tables.pop(self.url, None)
