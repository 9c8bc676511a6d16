"""Integrity: the scrub (every stored file re-read against its SHA-256, at a limited rate),
the start-up check for rows whose file is missing, and online database backups.

A missing or changed file raises an alert (``file_missing``, ``file_changed``) that clears
itself when a later round finds the file right again. Backups use SQLite's online backup API,
so pacslite keeps running while one is made.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from . import alerts, audit, clock, db, jobs, storage
from .db import transaction

log = logging.getLogger(__name__)
BATCH = 50


# ---------------------------------------------------------------- alerts of the scrub

def _raise(conn: sqlite3.Connection, rule: str, instance: sqlite3.Row, detail: dict[str, Any]) -> None:
    study_ref = conn.execute("SELECT study_ref FROM series WHERE id = ?", (instance["series_ref"],)).fetchone()[0]
    alerts.raise_alert(conn, rule, f"instance:{instance['id']}", clock.to_db(clock.now()), detail, study_ref=study_ref)


def _clear(conn: sqlite3.Connection, instance_id: int) -> None:
    alerts.clear_alert(conn, ("file_missing", "file_changed"), f"instance:{instance_id}", clock.to_db(clock.now()),
                       "scrub")


def check(conn: sqlite3.Connection, store: str | Path, instance: sqlite3.Row) -> str:
    """'ok', 'missing' or 'changed' for one instance's online file; alerts raised or cleared."""
    path = storage.resolve(store, instance["storage_path"])
    try:
        found = storage.sha256_file(path)[1]
    except FileNotFoundError:
        found = None
    state = "ok" if found == instance["sha256"] else "missing" if found is None else "changed"
    with transaction(conn):
        if state == "ok":
            _clear(conn, instance["id"])
        else:
            _raise(conn, f"file_{state}", instance, {"path": instance["storage_path"], "sha256": instance["sha256"],
                                                      "found": found})
    if state != "ok":
        log.warning("scrub: %s is %s", instance["storage_path"], state)
    return state


# ---------------------------------------------------------------- the scrub

@jobs.register("scrub")
def scrub_step(conn: sqlite3.Connection, settings: Mapping[str, Any], job: sqlite3.Row) -> jobs.Step:
    """Check the next files, no faster than ``SCRUB_MB_PER_SECOND``; one round of the store."""
    after = int(job["cursor"] or 0)
    rows = conn.execute("SELECT * FROM instances WHERE id > ? AND released_at IS NULL ORDER BY id LIMIT ?",
                        (after, BATCH)).fetchall()
    total = job["total"] or conn.execute("SELECT COUNT(*) FROM instances WHERE released_at IS NULL").fetchone()[0]
    started = time.monotonic()
    for row in rows:
        check(conn, settings["STORAGE_DIR"], row)
    bytes_read = sum(r["size"] for r in rows)
    allowed = bytes_read / (float(settings["SCRUB_MB_PER_SECOND"]) * 1024 * 1024)
    time.sleep(max(allowed - (time.monotonic() - started), 0))  # the rate limit: the disk serves images first
    done = job["done"] + len(rows)
    if not rows:
        with transaction(conn):
            conn.execute("INSERT INTO scrub_state (id, last_instance, rounds, updated_at) VALUES (1, 0, 1, ?)"
                         " ON CONFLICT (id) DO UPDATE SET rounds = rounds + 1, updated_at = excluded.updated_at",
                         (clock.to_db(clock.now()),))
        return jobs.Step(done, max(total, done), "", finished=True, message="round complete")
    return jobs.Step(done, max(total, done), str(rows[-1]["id"]))


def ensure_scrub(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> int | None:
    """Start a round when the last one finished more than ``SCRUB_INTERVAL_HOURS`` ago."""
    last = conn.execute("SELECT updated_at FROM scrub_state WHERE id = 1").fetchone()
    due = last is None or clock.from_db(last[0]) < clock.now() - timedelta(hours=settings["SCRUB_INTERVAL_HOURS"])
    if not due:
        return None
    return jobs.start(conn, audit.SYSTEM, "scrub", "store")


def missing_files(conn: sqlite3.Connection, store: str | Path) -> list[sqlite3.Row]:
    """Start-up check: online instances whose file is not there (each gets an alert)."""
    missing = [row for row in conn.execute("SELECT * FROM instances WHERE released_at IS NULL")
               if not storage.resolve(store, row["storage_path"]).is_file()]
    if missing:
        with transaction(conn):
            for row in missing:
                _raise(conn, "file_missing", row, {"path": row["storage_path"], "found_at": "start-up"})
    return missing


# ---------------------------------------------------------------- database backups

def backups_dir(settings: Mapping[str, Any]) -> Path:
    return Path(settings["BACKUP_DIR"] or Path(settings["INSTANCE_DIR"]) / "backups")


def backup_database(settings: Mapping[str, Any], target_dir: str | Path | None = None) -> Path:
    """A consistent copy of the database made while pacslite runs (SQLite's backup API),
    fsynced and renamed into place; the oldest beyond ``BACKUP_KEEP`` are removed."""
    directory = Path(target_dir) if target_dir else backups_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"pacslite-{clock.now().strftime('%Y%m%d-%H%M%S-%f')}.db"
    tmp = target.with_name(f".{target.name}.tmp")
    source = db.connect(settings["DATABASE"])
    copy = sqlite3.connect(str(tmp))
    copy.row_factory = sqlite3.Row
    try:
        source.backup(copy)
        audit.write_backup_anchors(source, copy, target.with_name(target.name + ".anchors"))
    finally:
        copy.close()
        source.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(target)
    if target_dir is None:
        for old in sorted(directory.glob("pacslite-*.db"))[:-int(settings["BACKUP_KEEP"])]:
            old.unlink()
            old.with_name(old.name + ".anchors").unlink(missing_ok=True)
    return target


def backup_if_due(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> Path | None:
    """The scheduled backup: one every ``BACKUP_INTERVAL_HOURS`` (the sweep asks)."""
    existing = sorted(backups_dir(settings).glob("pacslite-*.db"))
    if existing:
        age = time.time() - existing[-1].stat().st_mtime
        if age < float(settings["BACKUP_INTERVAL_HOURS"]) * 3600:
            return None
    return backup_database(settings)
