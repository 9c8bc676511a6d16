"""Long jobs (building and verifying volumes, the off-site copy, imports), run step by step in
a thread of the server's own process.

A job's progress (``done`` of ``total``) and its ``cursor`` (where to go on) are in the
database after every step, so a restarted server resumes where it stopped; a paused job waits
until it is resumed. Each kind registers its step function with :func:`register`: it gets the
connection, the settings and the job row and returns a :class:`Step`.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import audit, clock
from .background import BackgroundThread
from .db import transaction
from .validation import N_, Conflict, NotFound

log = logging.getLogger(__name__)
QUEUED, RUNNING, PAUSED, DONE, FAILED = "queued", "running", "paused", "done", "failed"


@dataclass(frozen=True)
class Step:
    done: int
    total: int
    cursor: str
    finished: bool = False
    message: str = ""


StepFunction = Callable[[sqlite3.Connection, Mapping[str, Any], sqlite3.Row], Step]
_STEPS: dict[str, StepFunction] = {}


def register(kind: str) -> Callable[[StepFunction], StepFunction]:
    """Declare a job kind and its step function (a new kind needs no migration)."""
    def decorate(function: StepFunction) -> StepFunction:
        _STEPS[kind] = function
        return function
    return decorate

def get(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"job {job_id}")
    return row


def recent(conn: sqlite3.Connection, limit: int = 20) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def latest(conn: sqlite3.Connection, kind: str, subject: str) -> sqlite3.Row | None:
    """The newest job of this kind and subject, finished or not."""
    return conn.execute("SELECT * FROM jobs WHERE kind = ? AND subject = ? ORDER BY id DESC LIMIT 1",
                        (kind, subject)).fetchone()


def active(conn: sqlite3.Connection, kind: str, subject: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM jobs WHERE kind = ? AND subject = ? AND state IN (?, ?, ?)",
                        (kind, subject, QUEUED, RUNNING, PAUSED)).fetchone()


def start(conn: sqlite3.Connection, actor: audit.Actor, kind: str, subject: str = "") -> int:
    """Queue a job (or return the one of this kind and subject that is not finished); a kind
    nobody registered is a programming error (ValueError), not a row the runner cannot run."""
    if kind not in _STEPS:
        raise ValueError(f"job kind {kind!r} is not registered")
    existing = active(conn, kind, subject)
    if existing is not None:
        return int(existing["id"])
    now = clock.to_db(clock.now())
    with transaction(conn):
        job_id = conn.execute("INSERT INTO jobs (kind, subject, state, created_at, created_by, updated_at)"
                              " VALUES (?, ?, ?, ?, ?, ?)", (kind, subject, QUEUED, now, actor.name, now)).lastrowid
        audit.record(conn, actor, "job.start", f"job:{job_id}", detail={"kind": kind, "subject": subject})
    return int(job_id)


def _set_state(conn: sqlite3.Connection, actor: audit.Actor, job_id: int, allowed: tuple[str, ...], state: str,
               action: str, refusal: str) -> None:
    with transaction(conn):
        job = get(conn, job_id)
        if job["state"] not in allowed:
            raise Conflict(refusal)
        conn.execute("UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?",
                     (state, clock.to_db(clock.now()), job_id))
        audit.record(conn, actor, f"job.{action}", f"job:{job_id}", detail={"kind": job["kind"]})


def pause(conn: sqlite3.Connection, actor: audit.Actor, job_id: int) -> None:
    _set_state(conn, actor, job_id, (QUEUED, RUNNING), PAUSED, "pause",
               N_("Only a queued or running job can be paused."))


def resume(conn: sqlite3.Connection, actor: audit.Actor, job_id: int) -> None:
    _set_state(conn, actor, job_id, (PAUSED, FAILED), QUEUED, "resume",
               N_("Only a paused or failed job can be resumed."))


def next_job(conn: sqlite3.Connection) -> sqlite3.Row | None:
    """The job to work on: a running one first (resumed after a restart), then the oldest queued."""
    return conn.execute("SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY state = ? DESC, id LIMIT 1",
                        (RUNNING, QUEUED, RUNNING)).fetchone()


def run_one_step(conn: sqlite3.Connection, settings: Mapping[str, Any]) -> bool:
    """Advance the next job by one step; False when there is nothing to do."""
    job = next_job(conn)
    if job is None:
        return False
    now = clock.to_db(clock.now())
    try:
        step = _STEPS[job["kind"]](conn, settings, job)
    except Exception as exc:  # the job stops with its reason; the server goes on
        log.exception("job %s (%s) failed", job["id"], job["kind"])
        with transaction(conn):
            conn.execute("UPDATE jobs SET state = ?, message = ?, updated_at = ? WHERE id = ?",
                         (FAILED, str(exc)[:500], now, job["id"]))
            audit.record(conn, audit.SYSTEM, "job.fail", f"job:{job['id']}",
                         outcome="failure", detail={"kind": job["kind"], "error": str(exc)[:500]})
        return True
    with transaction(conn):
        state = conn.execute("SELECT state FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0]
        if step.finished:
            state = DONE
        elif state == QUEUED:
            state = RUNNING
        conn.execute("UPDATE jobs SET state = ?, done = ?, total = ?, cursor = ?, message = ?, updated_at = ?"
                     " WHERE id = ?", (state, step.done, step.total, step.cursor, step.message, now, job["id"]))
        if step.finished:
            audit.record(conn, audit.SYSTEM, "job.done", f"job:{job['id']}",
                         detail={"kind": job["kind"], "subject": job["subject"], "message": step.message})
    return True


def run_until_idle(conn: sqlite3.Connection, settings: Mapping[str, Any], limit: int = 100_000) -> int:
    """Run steps until no job is left (the command line and tests); the steps taken."""
    steps = 0
    while steps < limit and run_one_step(conn, settings):
        steps += 1
    return steps


class JobRunner(BackgroundThread):
    """The thread that advances jobs; it waits a second when there is nothing to do."""

    name = "jobs"

    def tick(self, conn: sqlite3.Connection) -> float:
        return 0 if run_one_step(conn, self.settings) else 1.0
