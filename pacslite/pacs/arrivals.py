"""Arrivals: who delivered which images of a study, audited once per delivery.

A delivery (a *batch*) is one DICOM association, one STOW-RS request, one import run or one
volume read. Each image ingested adds to its batch's arrival row for the study, in the image's
own transaction, and the instance row points to that arrival: an image's provenance (calling
AE, address, time) is in the index. When the batch ends, :func:`close` writes one audit row
per study it delivered (``image.file`` to the exam, ``image.quarantine`` for a study held back)
with the counts per series. A process that stopped in the middle of a delivery leaves its
arrivals open; :func:`close_left_open` audits them at the next start, marked ``recovered``.

An image ingested without a batch (``Source.batch`` empty) is its own delivery: its arrival is
closed, and audited, in the same transaction.
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any, Iterator

from ..core import audit, clock, db
from ..ris import patients
from . import index
from .index import Source

log = logging.getLogger(__name__)


def last_image_at(conn: sqlite3.Connection, sources: list[str]) -> dict[str, str]:
    """{calling AE: when its newest delivery's last image arrived}, for the AEs that sent any
    (one index seek an AE, arrivals_source)."""
    found = {}
    for source in sources:
        at = conn.execute("SELECT MAX(last_at) FROM arrivals WHERE source = ?", (source,)).fetchone()[0]
        if at:
            found[source] = at
    return found


def new_batch() -> str:
    """A key for one delivery, unique across restarts."""
    return uuid.uuid4().hex


@contextmanager
def delivery(conn: sqlite3.Connection, source: Source) -> Iterator[Source]:
    """``source`` as one delivery (a new batch unless it names one), closed and audited on exit.
    If closing fails, the arrivals stay open and are audited at the next start."""
    batched = replace(source, batch=source.batch or new_batch())
    try:
        yield batched
    finally:
        try:
            close(conn, batched.batch)
        except Exception:
            log.exception("could not audit delivery %s now; it is audited at the next start", batched.batch)


def add(conn: sqlite3.Connection, source: Source, study: sqlite3.Row, patient_id: str, at: str) -> int:
    """Count one image of ``study`` (as filed now: its exam or its quarantine reason) in the
    batch's arrival; returns the arrival's id for the instance row. Inside the image's transaction."""
    batch = source.batch or new_batch()
    filed = study["exam_ref"] is not None
    arrival = conn.execute(
        "INSERT INTO arrivals (batch, source, address, study_ref, patient_id, exam_ref, quarantine_reason,"
        " filed, quarantined, first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (batch, study_ref) WHERE closed_at IS NULL DO UPDATE SET last_at = excluded.last_at,"
        " filed = arrivals.filed + excluded.filed, quarantined = arrivals.quarantined + excluded.quarantined,"
        " exam_ref = COALESCE(excluded.exam_ref, arrivals.exam_ref),"
        " quarantine_reason = CASE WHEN excluded.quarantined > 0 THEN excluded.quarantine_reason"
        " ELSE arrivals.quarantine_reason END RETURNING id",
        (batch, source.calling_ae, source.address, study["id"], patient_id, study["exam_ref"],
         "" if filed else study["quarantine_reason"], int(filed), int(not filed), at, at)).fetchone()[0]
    return int(arrival)


def close_single(conn: sqlite3.Connection, source: Source, arrival_id: int) -> None:
    """An image ingested outside any batch: audit its arrival at once (same transaction)."""
    if not source.batch:
        _close(conn, _arrival(conn, arrival_id), recovered=False)


def close(conn: sqlite3.Connection, batch: str, *, recovered: bool = False) -> int:
    """The delivery ``batch`` ended: audit each study it delivered. Returns the number audited."""
    if not batch or conn.execute("SELECT 1 FROM arrivals WHERE batch = ? AND closed_at IS NULL",
                                 (batch,)).fetchone() is None:
        return 0  # nothing stored (a C-FIND, an echo): no write lock taken
    with db.transaction(conn):
        rows = conn.execute("SELECT * FROM arrivals WHERE batch = ? AND closed_at IS NULL ORDER BY id",
                            (batch,)).fetchall()
        for row in rows:
            _close(conn, row, recovered=recovered)
    return len(rows)


def close_left_open(conn: sqlite3.Connection, idle_for: float = 0.0) -> int:
    """At start-up, before images are accepted: audit the deliveries a stopped process left open.
    ``idle_for``: other processes may be receiving now (PostgreSQL), so only deliveries with no
    image for that many seconds are taken for cut off."""
    before = clock.to_db(clock.now() - timedelta(seconds=idle_for)) if idle_for else "9999"
    batches = {r[0] for r in conn.execute("SELECT batch FROM arrivals WHERE closed_at IS NULL AND last_at < ?",
                                          (before,))}
    return sum(close(conn, batch, recovered=True) for batch in sorted(batches))


def forget_study(conn: sqlite3.Connection, study_id: int) -> None:
    """A purged study's arrivals go with it (inside the purge's transaction); any still open is
    audited first. Their audit rows stay."""
    for row in conn.execute("SELECT * FROM arrivals WHERE study_ref = ? AND closed_at IS NULL", (study_id,)).fetchall():
        _close(conn, row, recovered=False)
    conn.execute("DELETE FROM arrivals WHERE study_ref = ?", (study_id,))


def _arrival(conn: sqlite3.Connection, arrival_id: int) -> sqlite3.Row:
    return conn.execute("SELECT * FROM arrivals WHERE id = ?", (arrival_id,)).fetchone()


def _close(conn: sqlite3.Connection, arrival: sqlite3.Row, *, recovered: bool) -> None:
    study_uid = index.study_uid_of(conn, arrival["study_ref"])
    actor = audit.Actor(f"ae:{arrival['source']}" if arrival["source"] else "upload", arrival["address"])
    detail: dict[str, Any] = {"study": study_uid, "series": index.series_counts_of_arrival(conn, arrival["id"]),
                              "first_at": arrival["first_at"], "last_at": arrival["last_at"],
                              "arrival": arrival["id"]}
    if recovered:
        detail["recovered"] = True  # the delivery was cut off by a stop: audited at the next start
    if arrival["filed"]:
        exam = patients.find_exam(conn, exam_id=arrival["exam_ref"])
        audit.record(conn, actor, "image.file", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={**detail, "images": arrival["filed"]})
    if arrival["quarantined"]:
        audit.record(conn, actor, "image.quarantine", f"study:{study_uid}",
                     patient_id=arrival["patient_id"],
                     detail={**detail, "images": arrival["quarantined"], "reason": arrival["quarantine_reason"]})
    conn.execute("UPDATE arrivals SET closed_at = ? WHERE id = ?", (clock.to_db(clock.now()), arrival["id"]))
