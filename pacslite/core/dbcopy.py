"""Moving an installation from SQLite to PostgreSQL: every row copied, then checked.

The copy writes every table, which no other module does: it is the one exception to "one
writing module per table", as a restore is, and runs only into an empty database while pacslite
is stopped (docs/beyond-one-server.md says how to switch with a short stop).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import audit, db


class CopyError(RuntimeError):
    """The copy was refused or failed; the target is left as it was (one transaction)."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)  # table → rows copied (and found in the target)
    audit_problem: audit.Problem | None = None

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _dependency_order(target: Any, tables: list[str]) -> list[str]:
    """Tables with the ones they reference first (a table referencing itself is one COPY, whose
    references are checked at its end)."""
    references: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in target.execute(
            "SELECT tc.table_name, ccu.table_name FROM information_schema.table_constraints tc"
            " JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = tc.constraint_name"
            " AND ccu.table_schema = tc.table_schema"
            " WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = current_schema()"):
        if child in references and parent != child:
            references[child].add(parent)
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(table: str) -> None:
        if table in ordered:
            return
        if table in visiting:
            raise CopyError(f"the tables reference each other in a circle through {table}")
        visiting.add(table)
        for parent in sorted(references[table]):
            visit(parent)
        visiting.discard(table)
        ordered.append(table)
    for table in sorted(tables):
        visit(table)
    return ordered


def _columns(conn: Any, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _copy_table(source: Any, target: Any, table: str) -> int:
    columns = _columns(source, table)
    names = ", ".join(columns)
    copied = 0
    cursor = target.raw.cursor()
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in source.execute(f"SELECT {names} FROM {table}"):
            copy.write_row(tuple(row))
            copied += 1
    return copied


def _restart_identities(target: Any, tables: list[str]) -> None:
    """New rows continue after the copied ids."""
    identity = target.identity_tables()
    for table in tables:
        if table in identity:
            target.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                           f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")


def copy_to_postgresql(source_path: str | Path, source_files: Path, target_url: str, target_files: Path,
                       progress: Callable[[str, int], None] = lambda table, rows: None) -> CopyReport:
    """Copy the SQLite database at ``source_path`` into the (empty) PostgreSQL database at
    ``target_url``, in one transaction; then check every table's count and the audit chain (its
    key and anchors copied from ``source_files`` to ``target_files``). Raises CopyError when the
    target already holds data or a row does not fit; the target is then unchanged."""
    if not db.is_postgresql(target_url):
        raise CopyError("the target must be a postgresql:// URL")
    source = db.connect(source_path)
    target = db.connect(target_url)
    try:
        db.migrate(source)
        db.migrate(target)
        if db.schema_version(source) != db.schema_version(target):
            raise CopyError(f"schema versions differ: {db.schema_version(source)} and {db.schema_version(target)}")
        tables = _dependency_order(target, db.table_names(source))
        missing = set(tables) - set(db.table_names(target))
        if missing:
            raise CopyError(f"the target has no table {', '.join(sorted(missing))}")
        used = [t for t in tables if target.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
        if used:
            raise CopyError(f"the target is not empty ({', '.join(used[:5])} have rows): copy into a new database")
        report = CopyReport()
        try:
            with db.transaction(target):
                for table in tables:
                    report.rows[table] = _copy_table(source, target, table)
                    progress(table, report.rows[table])
                _restart_identities(target, tables)
        except db.Error as exc:
            raise CopyError(f"the copy failed and was rolled back: {exc}") from exc
        target.execute("ANALYZE")  # the planner's statistics, before the first query on a million rows
        for table in tables:
            found = target.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if found != report.rows[table]:
                raise CopyError(f"{table}: {report.rows[table]} rows copied, {found} in the target")
        target_files.mkdir(parents=True, exist_ok=True)
        for name in (audit.KEY_FILE, audit.ANCHOR_FILE):
            if (source_files / name).is_file() and not (target_files / name).exists():
                shutil.copy2(source_files / name, target_files / name)
        db.keep_files_in(target_url, target_files)
        report.audit_problem = audit.verify(target)
        return report
    finally:
        source.close()
        target.close()

