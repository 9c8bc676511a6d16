"""The expected-image check: did everything the modality acquired arrive?

Once an exam is performed (MPPS COMPLETED or DISCONTINUED with its Performed Series Sequence,
or a technologist's "exam done" with a count) and MPPS_GRACE_MINUTES have passed, images that
were acquired and are not stored raise ``incomplete_transmission`` on the exam, naming the
series and how many are missing. An exam performed with no image at all raises it at once. The
alert clears by itself when the rest arrives; a person who resolves it stops the check.

What the modality listed is compared instance by instance (an image counts as received once it
is indexed, filed or in the quarantine); a technologist's count is compared with the images
filed to the exam. The check runs in its own thread every few seconds, only over exams whose
check is pending (``exams.transmission_check_at``, which :mod:`pacslite.ris.exams` sets when the
exam is performed and clears when :func:`check` says the check is over: this module writes no
exam).
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from ..core import alerts, clock

log = logging.getLogger(__name__)

RULE = alerts.register("incomplete_transmission")
#: MPPS states whose Performed Series Sequence says what was acquired.
FINAL_MPPS = ("COMPLETED", "DISCONTINUED")


@dataclass(frozen=True)
class SeriesCount:
    series_instance_uid: str
    description: str
    expected: int
    received: int


@dataclass(frozen=True)
class Expected:
    """What was acquired and what arrived; ``expected`` None: nobody said how many."""
    expected: int | None
    received: int
    series: list[SeriesCount] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, (self.expected or 0) - self.received)


def listed_series(conn: sqlite3.Connection, exam_id: int) -> list[SeriesCount]:
    """Per series, the instances the exam's final MPPS listed and how many of them are stored."""
    rows = conn.execute(
        "SELECT mi.series_instance_uid, MAX(mi.series_description) AS description, COUNT(*) AS expected,"
        " SUM(EXISTS (SELECT 1 FROM instances i WHERE i.sop_instance_uid = mi.sop_instance_uid)) AS received"
        f" FROM mpps m JOIN mpps_instances mi ON mi.mpps_ref = m.id WHERE m.exam_ref = ?"
        f" AND m.state IN ({', '.join('?' * len(FINAL_MPPS))}) GROUP BY mi.series_instance_uid"
        " ORDER BY mi.series_instance_uid", (exam_id, *FINAL_MPPS)).fetchall()
    return [SeriesCount(r["series_instance_uid"], r["description"], r["expected"], r["received"]) for r in rows]


def expected_of(conn: sqlite3.Connection, exam: Mapping[str, Any]) -> Expected:
    """The exam's acquired and received counts: from its MPPS where it has one, else from the
    technologist's count."""
    series = listed_series(conn, exam["id"])
    if series:
        return Expected(sum(s.expected for s in series), sum(s.received for s in series), series)
    return Expected(exam["images_expected"], exam["instance_count"])


def _detail(found: Expected) -> dict[str, Any]:
    return {"expected": found.expected, "received": found.received, "missing": found.missing,
            "series": [{"series_instance_uid": s.series_instance_uid, "description": s.description,
                        "expected": s.expected, "missing": s.expected - s.received}
                       for s in found.series if s.received < s.expected]}


def check(conn: sqlite3.Connection, exam_id: int, now: datetime) -> bool:
    """Raise, update or clear the exam's alert (inside the caller's transaction); True while
    images are missing, False once the check is over (nothing missing, or a person resolved
    the alert)."""
    exam = conn.execute("SELECT id, accession_number, instance_count, images_expected, transmission_check_at"
                        " FROM exams WHERE id = ?", (exam_id,)).fetchone()
    subject, at = f"exam:{exam_id}", clock.to_db(now)
    if exam["transmission_check_at"] is None:
        return False
    if alerts.live_state(conn, RULE, subject) == alerts.RESOLVED:  # a person dealt with it
        return False
    found = expected_of(conn, exam)
    nothing = exam["instance_count"] == 0 and found.received == 0 and found.expected != 0
    if found.missing or nothing:
        raised = alerts.live_state(conn, RULE, subject) == alerts.OPEN
        if raised or nothing or exam["transmission_check_at"] <= at:
            if alerts.raise_alert(conn, RULE, subject, at, _detail(found), exam_ref=exam_id, refresh=True):
                log.warning("exam %s: %s of %s acquired images not received", exam["accession_number"],
                            found.missing or found.expected or "all", found.expected or "?")
        return True
    if alerts.clear_alert(conn, (RULE,), subject, at, "transmission"):
        log.info("exam %s: every acquired image received", exam["accession_number"])
    return False


def poll_seconds(settings: Mapping[str, Any]) -> float:
    """How often the check runs: a quarter of the grace period, between half a second and 30 s."""
    return max(0.5, min(30.0, float(settings["MPPS_GRACE_MINUTES"]) * 60 / 4))
