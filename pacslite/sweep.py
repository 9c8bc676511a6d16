"""The sweep: the periodic check for what went wrong without anybody noticing.

Rules (thresholds in the configuration):

- ``missing_images``: registered at least ``SWEEP_MISSING_IMAGES_HOURS`` ago, still no images;
- ``unfiled_images``: a study in quarantine for at least ``SWEEP_UNFILED_HOURS``;
- ``stale_registration``: registered, never imaged, for ``SWEEP_STALE_DAYS`` (cancel it?);
- ``overdue_report``: images, no final report, past the turnaround target;
- ``conflict``: images filed to a cancelled exam;
- ``storage_low``: the store filled to ``STORAGE_WARN_PERCENT``, or full within ``STORAGE_WARN_DAYS``;
- ``backup_space``: the backups' disk cannot hold ``BACKUP_KEEP`` copies of the database as it is
  now (the warning comes before a backup fails for want of space);
- bookings whose day is over end (:func:`booking.mark_no_shows`): kept, or no-show;
- ``ae_any_host``: a configured AE accepted from any address (marked so, or without a host):
  anyone who learns its title may use its rights.

Each finding is an alert, one per rule and subject: opened when first found, *cleared* by the
sweep when its condition no longer holds, or *resolved* by a person with a note (and then not
raised again for that subject). Running the sweep twice changes nothing the second time.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from .core import alerts, audit, clock, workhours
from .ris import aes, booking, exams
from .pacs import capacity, integrity
from .core.background import BackgroundThread
from .core.alerts import CLEARED, OPEN, RESOLVED  # noqa: F401 (RESOLVED: the alert pages use sweep.RESOLVED)
from .core.db import transaction
from .core.validation import N_, Conflict, NotFound, text

log = logging.getLogger(__name__)
#: The sweep's rules (it opens and clears these); the scrub raises file_missing and file_changed,
#: the outbound queue forward_failed, the expected-image check incomplete_transmission, storage
#: commitment commitment_failed, a critical finding (危急值) critical_finding.
SWEEP_RULES = tuple(alerts.register(rule) for rule in (
    "missing_images", "unfiled_images", "stale_registration", "overdue_report", "conflict", "storage_low",
    "backup_space", "ae_any_host"))


@dataclass(frozen=True)
class Finding:
    rule: str
    subject: str  # exam:<id> or study:<id>
    exam_ref: int | None
    study_ref: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    opened: int
    cleared: int
    open_total: int
    seconds: float


def _exam_findings(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime) -> list[Finding]:
    """Exams still without images some hours after their scheduled time (stale after days),
    and acquired exams whose final report is overdue."""
    found = []
    missing_before = clock.to_db(now - timedelta(hours=settings["SWEEP_MISSING_IMAGES_HOURS"]))
    stale_before = clock.to_db(now - timedelta(days=settings["SWEEP_STALE_DAYS"]))
    for row in conn.execute("SELECT id, scheduled_at FROM exams WHERE status = ? AND scheduled_at <= ?"
                            " AND instance_count = 0", (exams.SCHEDULED, missing_before)):
        found.append(Finding("missing_images", f"exam:{row['id']}", row["id"], None, {}))
        if row["scheduled_at"] <= stale_before:
            found.append(Finding("stale_registration", f"exam:{row['id']}", row["id"], None, {}))
    for row in conn.execute(
            f"SELECT e.id, e.modality, e.source, e.priority, e.target_hours, e.images_first_at FROM exams e"
            f" WHERE e.status IN ({', '.join('?' * len(exams.AWAITING_FINAL))}) AND e.instance_count > 0",
            exams.AWAITING_FINAL):
        due = workhours.exam_due(clock.from_db(row["images_first_at"]), row, settings)
        if due < now:
            found.append(Finding("overdue_report", f"exam:{row['id']}", row["id"], None,
                                 {"due_at": clock.to_db(due)}))
    return found


def _study_findings(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime) -> list[Finding]:
    found = []
    unfiled_before = clock.to_db(now - timedelta(hours=settings["SWEEP_UNFILED_HOURS"]))
    for row in conn.execute("SELECT id, quarantine_reason FROM studies WHERE quarantine_reason IS NOT NULL"
                            " AND rejected_at IS NULL AND first_received_at <= ?", (unfiled_before,)):
        found.append(Finding("unfiled_images", f"study:{row['id']}", None, row["id"],
                             {"reason": row["quarantine_reason"]}))
    for row in conn.execute("SELECT s.id, s.exam_ref FROM studies s JOIN exams e ON e.id = s.exam_ref"
                            " WHERE e.status = ?", (exams.CANCELLED,)):
        found.append(Finding("conflict", f"study:{row['id']}", row["exam_ref"], row["id"],
                             {"problem": "images_filed_to_cancelled_exam"}))
    return found


def _store_findings(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> list[Finding]:
    found = []
    result = capacity.forecast(conn, settings)
    if capacity.is_low(result, settings):
        found.append(Finding("storage_low", "store", None, None, {
            "used_percent": round(result.usage.used_fraction * 100, 1), "free_bytes": result.usage.free,
            "days_until_full": None if result.days_until_full is None else round(result.days_until_full, 1)}))
    space = integrity.backup_space(conn, settings)
    if not space.fits:
        found.append(Finding("backup_space", "backups", None, None, {
            "database_bytes": space.database_bytes, "keep": space.keep, "needed_bytes": space.needed_bytes,
            "available_bytes": space.available_bytes, "fit": space.backups_that_fit}))
    return found


def _ae_findings(conn: sqlite3.Connection) -> list[Finding]:
    return [Finding("ae_any_host", f"ae:{row['ae_title']}", None, None,
                    {"ae_title": row["ae_title"], "why": "marked_any_host" if row["host"] else "no_host",
                     "rights": row["rights"]})
            for row in aes.any_host_aes(conn)]


def findings(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime) -> list[Finding]:
    return (_exam_findings(conn, settings, now) + _study_findings(conn, settings, now)
            + _store_findings(conn, settings) + _ae_findings(conn))


def run(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime | None = None) -> Outcome:
    """One sweep: open alerts for new findings, clear open alerts whose condition has gone."""
    started = time.perf_counter()
    now = now or clock.now()
    at = clock.to_db(now)
    booking.mark_no_shows(conn, settings, now)
    current = {(f.rule, f.subject): f for f in findings(conn, settings, now)}
    with transaction(conn):
        live = {(r["rule"], r["subject"]): r for r in
                conn.execute(f"SELECT id, rule, subject, state FROM alerts WHERE state <> ?"
                             f" AND rule IN ({','.join('?' * len(SWEEP_RULES))})", (CLEARED, *SWEEP_RULES))}
        new = [f for key, f in current.items() if key not in live]
        gone = [r["id"] for key, r in live.items() if key not in current and r["state"] == OPEN]
        alerts.open_many(conn, [(f.rule, f.subject, f.exam_ref, f.study_ref, f.detail) for f in new], at)
        alerts.clear_ids(conn, gone, at, "sweep")
        if new or gone:
            audit.record(conn, audit.SYSTEM, "sweep.run", "alerts", detail={
                "opened": len(new), "cleared": len(gone),
                "rules": sorted({f.rule for f in new})})
        open_total = conn.execute("SELECT COUNT(*) FROM alerts WHERE state = ?", (OPEN,)).fetchone()[0]
    return Outcome(len(new), len(gone), open_total, time.perf_counter() - started)


# ---------------------------------------------------------------- reading and resolving

_ALERT_SELECT = ("SELECT a.*, e.accession_number, p.patient_id, p.name AS patient_name, s.study_instance_uid,"
                 " s.patient_id AS study_patient_id, s.calling_ae FROM alerts a"
                 " LEFT JOIN exams e ON e.id = a.exam_ref LEFT JOIN patients p ON p.id = e.patient_ref"
                 " LEFT JOIN studies s ON s.id = a.study_ref")


#: Alerts shown on one page; older ones follow by id.
ALERTS_PAGE = 100


def list_alerts(conn: sqlite3.Connection, state: str = OPEN, rule: str = "", limit: int = ALERTS_PAGE,
                before_id: int | None = None) -> list[sqlite3.Row]:
    """Alerts, newest first (by id: an alert is inserted when it opens), ``limit`` of them, before
    ``before_id`` when paging; the state filter reads its index in id order, with no sort."""
    clauses, params = [], []
    if state:
        clauses.append("a.state = ?")
        params.append(state)
    if rule:
        clauses.append("a.rule = ?")
        params.append(rule)
    if before_id:
        clauses.append("a.id < ?")
        params.append(before_id)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return conn.execute(f"{_ALERT_SELECT}{where} ORDER BY a.id DESC LIMIT ?", (*params, limit)).fetchall()


def count_open(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM alerts WHERE state = ?", (OPEN,)).fetchone()[0]


def resolve(conn: sqlite3.Connection, actor: audit.Actor, alert_id: int, data: Mapping[str, Any]) -> None:
    """A person dealt with the alert: closed with their note; not raised again for its subject."""
    note = text(data, "resolution", required=True, max_length=500)
    with transaction(conn):
        alert = conn.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        if alert is None:
            raise NotFound(f"alert {alert_id}")
        if alert["state"] != OPEN:
            raise Conflict(N_("This alert is already closed."))
        if alerts.closed_elsewhere(alert["rule"]):
            raise Conflict(N_("A critical finding is closed by the ward's acknowledgement, on the critical findings"
                              " page."))
        alerts.resolve(conn, alert_id, actor.name, note, clock.to_db(clock.now()))
        audit.record(conn, actor, "alert.resolve", f"alert:{alert_id}", detail={"rule": alert["rule"],
                                                                               "subject": alert["subject"],
                                                                               "resolution": note})


def api_view(alert: sqlite3.Row) -> dict[str, Any]:
    return {"id": alert["id"], "rule": alert["rule"], "state": alert["state"],
            "accession_number": alert["accession_number"], "study_instance_uid": alert["study_instance_uid"],
            "detail": json.loads(alert["detail"]), "opened_at": alert["opened_at"], "closed_at": alert["closed_at"],
            "closed_by": alert["closed_by"], "resolution": alert["resolution"]}


# ---------------------------------------------------------------- the thread

class Sweeper(BackgroundThread):
    """Runs the sweep at start-up and every ``SWEEP_INTERVAL_MINUTES``, and after it the
    periodic tasks in ``also`` (the off-site copy, the scrub, the backup)."""

    name = "sweep"

    def __init__(self, settings: Mapping[str, Any],
                 also: tuple[Callable[[sqlite3.Connection, Mapping[str, Any]], object], ...] = ()) -> None:
        super().__init__(settings)
        self.also = also

    def tick(self, conn: sqlite3.Connection) -> float:
        outcome = run(conn, self.settings)
        log.info("sweep: %d opened, %d cleared, %d open, %.3f s", outcome.opened, outcome.cleared,
                 outcome.open_total, outcome.seconds)
        for task in self.also:  # the periodic tasks of other modules (app.py names them)
            task(conn, self.settings)
        return max(float(self.settings["SWEEP_INTERVAL_MINUTES"]), 0.1) * 60
