"""The server's background threads (the sweep, the job runner): one way to run, wait and stop.

Each thread is a *duty* (its ``name``): with several processes on one PostgreSQL database, one
process at a time does it — the one holding the duty's lock (:func:`db.take_duty`, a session
advisory lock on the thread's own connection). The others try again every
:data:`DUTY_POLL_SECONDS`; when the holder dies its connection ends and the lock with it, so a
survivor takes the duty over within that time (a dead machine: after the connection's
keepalive, about half a minute). On SQLite, one process, every duty is always held.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any, Callable, Mapping

from . import db

log = logging.getLogger(__name__)

#: The longest pause between two attempts to deliver something (a study, a report, a message).
MAX_PAUSE_SECONDS = 3600.0
#: How often a process that does not hold a duty asks for it.
DUTY_POLL_SECONDS = 10.0


def retry_pause(first_seconds: float, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling, at most an hour."""
    return min(first_seconds * 2 ** (attempts - 1), MAX_PAUSE_SECONDS)


class BackgroundThread:
    """Calls :meth:`tick` with its own database connection until stopped; ``tick`` returns how
    many seconds to wait before the next call (0: at once). An exception is logged and the
    next tick tries again, so the pages and DICOM services go on."""

    name = "background"
    pause_after_error = 5.0

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def tick(self, conn: sqlite3.Connection) -> float:
        raise NotImplementedError

    def on_duty(self, conn: sqlite3.Connection) -> None:
        """Called once this process holds the duty, before its first tick: take over what the
        previous holder left half-done (e.g. rows it was sending)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        conn: Any = None
        on_duty = False
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn, on_duty = db.connect(self.settings["DATABASE"]), False
                    if not on_duty:
                        on_duty = db.take_duty(conn, self.name)
                        if not on_duty:
                            self._stop.wait(DUTY_POLL_SECONDS)
                            continue
                        log.info("%s: this process does it now", self.name)
                        self.on_duty(conn)
                    wait = self.tick(conn)
                except Exception:
                    log.exception("%s failed", self.name)
                    wait = self.pause_after_error
                    if conn is not None and db.is_broken(conn):  # the database restarted: the duty is lost too
                        conn.close()
                        conn = None
                if wait:
                    self._stop.wait(wait)
        finally:
            if conn is not None:
                conn.close()


class Periodic(BackgroundThread):
    """Calls ``task(conn, settings)`` every ``seconds`` (the first time at once)."""

    def __init__(self, settings: Mapping[str, Any], name: str,
                 task: Callable[[sqlite3.Connection, Mapping[str, Any]], object], seconds: float,
                 on_duty: Callable[[sqlite3.Connection], object] | None = None) -> None:
        self.name = name
        super().__init__(settings)
        self.task = task
        self.seconds = seconds
        self._on_duty = on_duty

    def on_duty(self, conn: sqlite3.Connection) -> None:
        if self._on_duty is not None:
            self._on_duty(conn)

    def tick(self, conn: sqlite3.Connection) -> float:
        self.task(conn, self.settings)
        return self.seconds
