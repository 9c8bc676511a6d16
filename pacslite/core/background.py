"""The server's background threads (the sweep, the job runner): one way to run, wait and stop."""
from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any, Callable, Mapping

from . import db

log = logging.getLogger(__name__)

#: The longest pause between two attempts to deliver something (a study, a report, a message).
MAX_PAUSE_SECONDS = 3600.0


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

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        conn = db.connect(self.settings["DATABASE"])
        try:
            while not self._stop.is_set():
                try:
                    wait = self.tick(conn)
                except Exception:
                    log.exception("%s failed", self.name)
                    wait = self.pause_after_error
                if wait:
                    self._stop.wait(wait)
        finally:
            conn.close()


class Periodic(BackgroundThread):
    """Calls ``task(conn, settings)`` every ``seconds`` (the first time at once)."""

    def __init__(self, settings: Mapping[str, Any], name: str,
                 task: Callable[[sqlite3.Connection, Mapping[str, Any]], object], seconds: float) -> None:
        self.name = name
        super().__init__(settings)
        self.task = task
        self.seconds = seconds

    def tick(self, conn: sqlite3.Connection) -> float:
        self.task(conn, self.settings)
        return self.seconds
