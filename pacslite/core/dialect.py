"""The differences between SQLite and PostgreSQL, in one place.

pacslite's SQL is written once, in SQLite's words (``?`` and ``:name`` parameters, ``INSERT OR
IGNORE``, ``julianday``, ``SUM(a = b)``). On PostgreSQL each statement is translated once (and
cached) by :func:`statement`; the few SQLite functions the queries use exist in PostgreSQL as SQL
functions made by :data:`COMPATIBILITY` (``julianday``, ``date`` with a modifier, ``ROUND`` of a
double, ``SUM`` of a truth value, the two-argument ``min`` and ``max``); migrations' DDL is translated by :func:`ddl`.

What is translated, and why it is safe:

* parameters: ``?`` → ``%s``, ``?N`` and ``:name`` → ``%(…)s``; a ``%`` anywhere → ``%%``;
* ``INSERT OR IGNORE`` → ``INSERT … ON CONFLICT DO NOTHING`` (the same: skip a row that would
  break a constraint);
* ``LIKE`` → ``ILIKE`` (SQLite's LIKE ignores case); ``julianday(column)`` written out;
* ``a IS ?`` / ``a IS NOT ?`` → ``IS [NOT] DISTINCT FROM`` (SQLite's IS compares any values);
* ``INDEXED BY name`` and a unary ``+`` before a column (SQLite's "not this index") are
  dropped (planner hints; PostgreSQL's planner chooses itself);
* ``BEGIN IMMEDIATE`` → ``BEGIN`` (the write lock is taken by :mod:`db` as an advisory lock).

Text in quotes and comments is never rewritten, except for the doubled ``%``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class Statement:
    """A statement in PostgreSQL's words and how its parameters are passed."""
    sql: str
    numbered: bool  # ?1 ?2 … : the parameters become a dict {"p1": …}
    insert_into: str | None  # the table an INSERT writes to (for the new row's id)


_WORD_REWRITES = [
    (re.compile(r"\bIS\s+NOT\s+(?=\?|:\w)", re.I), "IS DISTINCT FROM "),
    (re.compile(r"\bIS\s+(?=\?|:\w)", re.I), "IS NOT DISTINCT FROM "),
    (re.compile(r"\bBEGIN\s+IMMEDIATE\b", re.I), "BEGIN"),
    (re.compile(r"\bINDEXED\s+BY\s+\w+", re.I), ""),
    (re.compile(r"\bLIKE\b", re.I), "ILIKE"),
    # julianday(column) written out: a SQL function call per row cost the two-year statistics
    # half their time (PostgreSQL does not inline it, its cast being only STABLE)
    (re.compile(r"\bjulianday\(\s*([A-Za-z_][\w.]*)\s*\)", re.I),
     r"(extract(epoch FROM \1::timestamptz)::double precision / 86400.0 + 2440587.5)"),
    (re.compile(r"(\b(?:WHERE|AND|OR|ON)\s+|\(\s*)\+(?=[A-Za-z_])", re.I), r"\1"),
]
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+(\w+)", re.I)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_ON_CONFLICT = re.compile(r"\bON\s+CONFLICT\b", re.I)


def _pieces(sql: str) -> list[tuple[bool, str]]:
    """The statement cut into (is code, text): quoted strings, quoted names and comments are
    not code."""
    pieces: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(sql)
    while i < n:
        c = sql[i]
        end = None
        if c in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # a doubled quote inside
                        end += 2
                        continue
                    break
                end += 1
            end += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
        if end is None:
            i += 1
            continue
        if start < i:
            pieces.append((True, sql[start:i]))
        pieces.append((False, sql[i:end]))
        start = i = end
    if start < n:
        pieces.append((True, sql[start:]))
    return pieces


_PARAMETER = re.compile(r"\?(\d*)|(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=4096)
def statement(sql: str) -> Statement:
    """``sql`` (SQLite's words) in PostgreSQL's words; cached, as the same statements recur."""
    numbered = False
    ignore = bool(_INSERT_OR_IGNORE.match(sql))
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1)
    out = []
    for is_code, text in _pieces(sql):
        text = text.replace("%", "%%")
        if is_code:
            for pattern, replacement in _WORD_REWRITES:
                text = pattern.sub(replacement, text)

            def parameter(match: re.Match[str]) -> str:
                nonlocal numbered
                if match.group(2):
                    return f"%({match.group(2)})s"
                if match.group(1):
                    numbered = True
                    return f"%(p{match.group(1)})s"
                return "%s"
            text = _PARAMETER.sub(parameter, text)
        out.append(text)
    translated = "".join(out).rstrip().rstrip(";")
    if ignore:
        if _ON_CONFLICT.search(translated):
            raise ValueError("INSERT OR IGNORE with its own ON CONFLICT")
        returning = _RETURNING.search(translated)
        if returning:
            translated = (translated[:returning.start()] + "ON CONFLICT DO NOTHING "
                          + translated[returning.start():])
        else:
            translated += " ON CONFLICT DO NOTHING"
    into = _INSERT_INTO.match(sql)
    return Statement(translated, numbered, into.group(1).lower() if into and not _RETURNING.search(sql) else None)


def numbered_parameters(params: tuple | list) -> dict[str, object]:
    """``?1 ?2 …``'s values as the dict the translated statement names them in."""
    return {f"p{i}": value for i, value in enumerate(params, start=1)}


# --- DDL -------------------------------------------------------------------------------------

_DDL_REWRITES = [
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\bTEXT(\s+NOT\s+NULL)?(\s+UNIQUE)?\s+COLLATE\s+NOCASE\b", re.I), r"CITEXT\1\2"),
    (re.compile(r"\)\s*WITHOUT\s+ROWID", re.I), ")"),
]


def ddl(script: str) -> str:
    """A migration's DDL in PostgreSQL's words: SQLite's type names (INTEGER is 64 bits there),
    ``INTEGER PRIMARY KEY`` as an identity column, ``COLLATE NOCASE`` as CITEXT. Triggers and
    SQLite-only statements are not translated: a migration that has them gets a PostgreSQL
    twin (``NNNN_name.postgresql.sql``)."""
    out = []
    for is_code, text in _pieces(script):
        if is_code:
            for pattern, replacement in _DDL_REWRITES:
                text = pattern.sub(replacement, text)
        out.append(text)
    return "".join(out)


#: SQLite's functions that pacslite's queries use, made in PostgreSQL (each IMMUTABLE, as the
#: stored times always carry their offset, so an index may use them).
COMPATIBILITY = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE OR REPLACE FUNCTION julianday(moment text) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN extract(epoch FROM moment::timestamptz)::double precision / 86400.0 + 2440587.5;
CREATE OR REPLACE FUNCTION date(moment text, modifier text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_char((moment::timestamptz AT TIME ZONE 'UTC') + modifier::interval, 'YYYY-MM-DD');
CREATE OR REPLACE FUNCTION round(value double precision, digits integer) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN round(value::numeric, digits)::double precision;
CREATE OR REPLACE FUNCTION min(a double precision, b double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN CASE WHEN a IS NOT NULL AND b IS NOT NULL THEN LEAST(a, b) END;
CREATE OR REPLACE FUNCTION max(a text, b text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN CASE WHEN a IS NOT NULL AND b IS NOT NULL THEN GREATEST(a, b) END;
CREATE OR REPLACE FUNCTION pacslite_count_true(total bigint, value boolean) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN value IS NULL THEN total ELSE COALESCE(total, 0) + value::integer END;
CREATE OR REPLACE AGGREGATE sum(boolean) (SFUNC = pacslite_count_true, STYPE = bigint);
"""
