"""Integrity: the scrub (a daily quick pass that every stored file is there with its size, and a
full pass re-reading every file against its SHA-256, spread over ``SCRUB_FULL_DAYS``), in its
own thread, and online database backups.

A missing or changed file raises an alert (``file_missing``, ``file_changed``) that clears
itself when a later round finds the file right again. Backups use SQLite's online backup API,
so pacslite keeps running while one is made.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Mapping

from ..core import alerts, audit, clock, db, dialect, storage
from ..core.background import BackgroundThread
from ..core.db import transaction

log = logging.getLogger(__name__)
BATCH = 50


# ---------------------------------------------------------------- alerts of the scrub

FILE_RULES = (alerts.register("file_missing"), alerts.register("file_changed"))


def _raise(conn: sqlite3.Connection, rule: str, instance: sqlite3.Row, detail: dict[str, Any]) -> None:
    study_ref = conn.execute("SELECT study_ref FROM series WHERE id = ?", (instance["series_ref"],)).fetchone()[0]
    alerts.raise_alert(conn, rule, f"instance:{instance['id']}", clock.to_db(clock.now()), detail, study_ref=study_ref)


def _clear(conn: sqlite3.Connection, instance_id: int) -> None:
    alerts.clear_alert(conn, FILE_RULES, f"instance:{instance_id}", clock.to_db(clock.now()), "scrub")


def _open_file_alerts(conn: sqlite3.Connection) -> set[str]:
    """Subjects (``instance:N``) with an open file alert: few, so a pass need not touch the rest."""
    return {r[0] for r in conn.execute("SELECT subject FROM alerts WHERE state = 'open' AND rule IN (?, ?)",
                                       FILE_RULES)}


def _record(conn: sqlite3.Connection, results: list[tuple[sqlite3.Row, str, str | None]], pass_name: str) -> None:
    """One transaction for a batch: alerts raised for what is wrong, cleared for what is right again."""
    open_now = _open_file_alerts(conn)
    wrong = [(row, state, found) for row, state, found in results if state != "ok"]
    healed = [row for row, state, _ in results if state == "ok" and f"instance:{row['id']}" in open_now]
    if not wrong and not healed:
        return
    with transaction(conn):
        for row in healed:
            _clear(conn, row["id"])
        for row, state, found in wrong:
            _raise(conn, f"file_{state}", row, {"path": row["storage_path"], "sha256": row["sha256"],
                                                "size": row["size"], "found": found, "pass": pass_name})
    for row, state, _ in wrong:
        log.warning("scrub (%s pass): %s is %s", pass_name, row["storage_path"], state)


def _look(store: str | Path, row: sqlite3.Row) -> tuple[str, str | None]:
    """The quick look: is the file there, with its size? ('ok' | 'missing' | 'changed', found)."""
    try:
        size = os.stat(storage.resolve(store, row["storage_path"])).st_size
    except FileNotFoundError:
        return "missing", None
    return ("ok", None) if size == row["size"] else ("changed", f"{size} bytes")


def _read(store: str | Path, row: sqlite3.Row) -> tuple[str, str | None]:
    """The full read: the file's SHA-256 against the one recorded when it arrived."""
    try:
        found = storage.sha256_file(storage.resolve(store, row["storage_path"]))[1]
    except FileNotFoundError:
        return "missing", None
    return ("ok", None) if found == row["sha256"] else ("changed", found)


def check(conn: sqlite3.Connection, store: str | Path, instance: sqlite3.Row) -> str:
    """'ok', 'missing' or 'changed' for one instance's online file (a full read); alerts raised
    or cleared."""
    state, found = _read(store, instance)
    _record(conn, [(instance, state, found)], "full")
    return state


# ---------------------------------------------------------------- the scrub

#: Files looked at (stat) per step of the quick pass; bytes read per step of the full pass.
QUICK_BATCH = 2000
FULL_STEP_BYTES = 64 * 1024 * 1024


@dataclass
class Pass:
    """One of the scrub's two passes over the online store and where it stands."""

    name: str  # "quick": existence and size; "full": SHA-256
    cursor: int
    started_at: str | None
    done_at: str | None


def _ensure_row(conn: sqlite3.Connection) -> None:
    """Inside a transaction: the scrub's one state row exists."""
    conn.execute("INSERT OR IGNORE INTO scrub_state (id, last_instance, rounds, updated_at) VALUES (1, 0, 0, ?)",
                 (clock.to_db(clock.now()),))


def passes(conn: sqlite3.Connection) -> dict[str, Pass]:
    """Both passes, as the archive page shows them."""
    row = conn.execute("SELECT * FROM scrub_state WHERE id = 1").fetchone()
    if row is None:
        return {"quick": Pass("quick", 0, None, None), "full": Pass("full", 0, None, None)}
    return {"quick": Pass("quick", row["quick_cursor"], row["quick_started_at"], row["quick_done_at"]),
            "full": Pass("full", row["last_instance"], row["full_started_at"], row["full_done_at"])}


def _running(scrub: Pass) -> bool:
    """A round has started and not ended (a round's start clears its end)."""
    return scrub.started_at is not None and scrub.done_at is None


def _due(scrub: Pass, every: timedelta, now: datetime) -> bool:
    """A round is under way (it has no end yet), or the last one ended ``every`` ago."""
    return scrub.done_at is None or clock.from_db(scrub.done_at) <= now - every


_COLUMNS = {"quick": ("quick_cursor", "quick_started_at", "quick_done_at"),
            "full": ("last_instance", "full_started_at", "full_done_at")}


def _advance(conn: sqlite3.Connection, scrub: Pass, batch: list[sqlite3.Row], now: str) -> None:
    cursor, started, done = _COLUMNS[scrub.name]
    with transaction(conn):
        _ensure_row(conn)
        if not _running(scrub):  # a new round
            conn.execute(f"UPDATE scrub_state SET {started} = ?, {done} = NULL, {cursor} = 0 WHERE id = 1", (now,))
        if batch:
            conn.execute(f"UPDATE scrub_state SET {cursor} = ?, updated_at = ? WHERE id = 1", (batch[-1]["id"], now))
        else:
            conn.execute(f"UPDATE scrub_state SET {done} = ?, {cursor} = 0, updated_at = ?"
                         f"{', rounds = rounds + 1' if scrub.name == 'full' else ''} WHERE id = 1", (now, now))


def _next_rows(conn: sqlite3.Connection, scrub: Pass, limit: int) -> list[sqlite3.Row]:
    after = scrub.cursor if _running(scrub) else 0
    return conn.execute("SELECT id, series_ref, storage_path, size, sha256 FROM instances"
                        " WHERE id > ? AND released_at IS NULL ORDER BY id LIMIT ?", (after, limit)).fetchall()


def begin_quick_round(conn: sqlite3.Connection) -> None:
    """Start a quick pass now unless one is under way (at every start-up: whatever happened to
    the disk while pacslite was stopped is found within minutes, in the background)."""
    if not _running(passes(conn)["quick"]):
        with transaction(conn):
            _ensure_row(conn)
            conn.execute("UPDATE scrub_state SET quick_started_at = ?, quick_done_at = NULL, quick_cursor = 0 WHERE id = 1",
                         (clock.to_db(clock.now()),))


def quick_step(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> bool:
    """Look at the next files of the quick pass (daily: every file there, with its size); False
    when it is not due."""
    scrub = passes(conn)["quick"]
    if not _due(scrub, timedelta(hours=float(settings["SCRUB_INTERVAL_HOURS"])), clock.now()):
        return False
    rows = _next_rows(conn, scrub, QUICK_BATCH)
    _record(conn, [(row, *_look(settings["STORAGE_DIR"], row)) for row in rows], "quick")
    _advance(conn, scrub, rows, clock.to_db(clock.now()))
    return True


def full_rate(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> float:
    """Bytes a second the full pass reads: the store once in ``SCRUB_FULL_DAYS``, at least
    1 MiB/s, at most ``SCRUB_MB_PER_SECOND``."""
    total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM instances WHERE released_at IS NULL").fetchone()[0]
    needed = total / (float(settings["SCRUB_FULL_DAYS"]) * 86400)
    return min(max(needed, 1024 * 1024), float(settings["SCRUB_MB_PER_SECOND"]) * 1024 * 1024)


def full_step(conn: sqlite3.Connection, settings: Mapping[str, Any], rate: float) -> float:
    """Read the next files of the full pass (SHA-256); the seconds to wait before the next step
    so that it reads at ``rate`` (the disk serves images first); -1 when it is not due."""
    scrub = passes(conn)["full"]
    if not _due(scrub, timedelta(days=float(settings["SCRUB_FULL_DAYS"])), clock.now()):
        return -1
    started = time.monotonic()
    rows, results, read = [], [], 0
    for row in _next_rows(conn, scrub, BATCH):
        rows.append(row)
        results.append((row, *_read(settings["STORAGE_DIR"], row)))
        read += row["size"]
        if read >= FULL_STEP_BYTES:
            break
    _record(conn, results, "full")
    _advance(conn, scrub, rows, clock.to_db(clock.now()))
    return max(read / rate - (time.monotonic() - started), 0.0)


def scrub_until_done(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> None:
    """Both passes to the end of a round if one is due, without waiting (the command line and tests)."""
    while quick_step(conn, settings) and _running(passes(conn)["quick"]):
        pass
    while full_step(conn, settings, float("inf")) >= 0 and _running(passes(conn)["full"]):
        pass


class Scrubber(BackgroundThread):
    """The scrub's own thread, so that it never holds back an import, a volume build or a
    forward: the quick pass (a stat of every online file, every ``SCRUB_INTERVAL_HOURS``) goes
    first and fast; the full pass (every file's SHA-256) reads at :func:`full_rate`. Missing
    files are found by the quick pass minutes after start-up, not before the ports open."""

    name = "scrub"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self._rate: tuple[float, float] | None = None  # (rate, when computed)
        self._started = False

    def tick(self, conn: sqlite3.Connection) -> float:
        if not self._started:
            if self.settings["SCRUB_AT_START"]:
                begin_quick_round(conn)
            self._started = True
        if quick_step(conn, self.settings):
            return 0.01  # a short breath between batches of stats
        if self._rate is None or time.monotonic() - self._rate[1] > 3600:
            self._rate = (full_rate(conn, self.settings), time.monotonic())
        wait = full_step(conn, self.settings, self._rate[0])
        return 60.0 if wait < 0 else wait


# ---------------------------------------------------------------- database backups

def backups_dir(settings: Mapping[str, Any]) -> Path:
    return Path(settings["BACKUP_DIR"] or Path(settings["INSTANCE_DIR"]) / "backups")


#: A backup's file: SQLite's own database file, or PostgreSQL's custom-format dump (pg_restore).
BACKUP_SUFFIXES = (".db", ".dump")


def backups(directory: Path) -> list[Path]:
    """The backups in a folder, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("pacslite-*") if p.suffix in BACKUP_SUFFIXES)


def backup_database(settings: Mapping[str, Any], target_dir: str | Path | None = None) -> Path:
    """A consistent copy of the database made while pacslite runs, fsynced and renamed into
    place, with the audit anchors beside it; the oldest beyond ``BACKUP_KEEP`` are removed.
    SQLite: its backup API. PostgreSQL: ``pg_dump`` (custom format) of an exported snapshot, in
    which the backup's own audit head is read, so the anchors match the dump exactly."""
    directory = Path(target_dir) if target_dir else backups_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    on_postgresql = db.is_postgresql(settings["DATABASE"])
    target = directory / f"pacslite-{clock.now().strftime('%Y%m%d-%H%M%S-%f')}{'.dump' if on_postgresql else '.db'}"
    tmp = target.with_name(f".{target.name}.tmp")
    anchors = target.with_name(target.name + ".anchors")
    try:
        (_dump_postgresql if on_postgresql else _copy_sqlite)(settings["DATABASE"], tmp, anchors)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    if target_dir is None:
        for old in backups(directory)[:-int(settings["BACKUP_KEEP"])]:
            old.unlink()
            old.with_name(old.name + ".anchors").unlink(missing_ok=True)
    return target


def _copy_sqlite(database: str, tmp: Path, anchors: Path) -> None:
    source = db.connect(database)
    copy = sqlite3.connect(str(tmp))
    copy.row_factory = sqlite3.Row
    try:
        source.backup(copy)
        audit.write_backup_anchors(source, copy, anchors)
    finally:
        copy.close()
        source.close()


class BackupError(RuntimeError):
    """pg_dump is missing or failed (its message is kept)."""


def _dump_postgresql(url: str, tmp: Path, anchors: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (Debian: apt-get install postgresql-client)")
    source, snapshot = db.connect(url), db.connect(url)
    try:
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        name = snapshot.execute("SELECT pg_export_snapshot()").fetchone()[0]
        parts = {k: str(v) for k, v in conninfo_to_dict(url).items()}
        env = {**os.environ, **{variable: parts[key] for key, variable in (
            ("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("password", "PGPASSWORD"),
            ("dbname", "PGDATABASE")) if key in parts}}  # not on the command line, where ps shows it
        done = subprocess.run([pg_dump, "--format=custom", f"--snapshot={name}", "--file", str(tmp)],
                              env=env, capture_output=True, text=True, timeout=BACKUP_TIMEOUT_SECONDS)
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()[-500:]}")
        audit.write_backup_anchors(source, snapshot, anchors)
    finally:
        snapshot.rollback()
        snapshot.close()
        source.close()


#: A dump that takes longer is stopped (a hung server must not hold the sweep for ever).
BACKUP_TIMEOUT_SECONDS = 6 * 3600


@dataclass(frozen=True)
class BackupSpace:
    """What keeping ``BACKUP_KEEP`` backups of today's database needs, and what there is."""

    database_bytes: int
    keep: int
    needed_bytes: int
    available_bytes: int

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.available_bytes

    @property
    def backups_that_fit(self) -> int:
        """How many backups of this size the space holds beside the one being written."""
        return max(self.available_bytes // max(self.database_bytes, 1) - 1, 0)


def backup_space(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> BackupSpace:
    """Whether the backups' disk can hold the retention: ``BACKUP_KEEP`` copies of the database
    as it is now, plus the one being written before the oldest is removed. The space counted is
    the disk's free space plus what the present backups take (they are replaced in turn)."""
    if db.dialect_of(conn) == dialect.POSTGRESQL:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    else:
        database = db.database_file(conn)
        size = sum(p.stat().st_size for p in (database, database.with_name(database.name + "-wal")) if p.exists())
    directory = backups_dir(settings)
    present = sum(p.stat().st_size for p in backups(directory))
    existing = directory if directory.is_dir() else Path(settings["INSTANCE_DIR"])
    keep = int(settings["BACKUP_KEEP"])
    return BackupSpace(size, keep, size * (keep + 1), present + shutil.disk_usage(existing).free)


def backup_if_due(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> Path | None:
    """The scheduled backup: one every ``BACKUP_INTERVAL_HOURS`` (the sweep asks)."""
    existing = backups(backups_dir(settings))
    if existing:
        age = time.time() - existing[-1].stat().st_mtime
        if age < float(settings["BACKUP_INTERVAL_HOURS"]) * 3600:
            return None
    return backup_database(settings)
