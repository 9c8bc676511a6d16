"""Where pynetdicom writes a received C-STORE dataset: a file in the store's temporary area,
owned by its association until the store handler claims it.

A file that no handler claims (the peer aborted or closed the connection in the middle of a
transfer, sent more than was answered, or a request pynetdicom could not serve) is removed as
soon as the association ends, not at the next start (219 MB from one peer filled a small
disk until a restart). While it is written, the store's high-water mark is checked every few
megabytes: a transfer that would cross it is cut off (the partial file removed at once, the
rest of the dataset read and dropped) and answered 0xA700.
"""
from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
from typing import Any, Callable

from pynetdicom import _config, dimse_messages

from ..pacs import capacity

log = logging.getLogger(__name__)

#: How often (in bytes written) a transfer looks at the room left below the high-water mark.
ROOM_CHECK_BYTES = 4 * 1024 * 1024


class ReceiveFile:
    """The file one received dataset is written into (pynetdicom's NamedTemporaryFile).

    A write that fails (the disk is full, the high-water mark is reached) must not escape
    into pynetdicom's reader, which would abort the association instead of answering: the
    failure is kept, further writes are dropped, and the store handler answers 0xA700.
    """

    _lock = threading.Lock()
    _unclaimed: dict[int, dict[str, "ReceiveFile"]] = {}  # association → its files not yet handled
    _failed: dict[str, OSError] = {}

    def __init__(self, directory: str, high_water_percent: float | None, **_ignored: Any) -> None:
        self._handle = tempfile.NamedTemporaryFile(dir=directory, delete=False, mode="wb", suffix=".dcm")
        self.name = self._handle.name
        self.file = self  # pynetdicom calls .file.flush()
        self.directory, self.high_water_percent = directory, high_water_percent
        self.error: OSError | None = None
        self._written = self._next_check = 0
        # pynetdicom creates the file in the association's DUL thread, which knows its association
        self.owner = id(getattr(threading.current_thread(), "assoc", threading.current_thread()))
        with self._lock:
            self._unclaimed.setdefault(self.owner, {})[self.name] = self

    def _fail(self, error: OSError) -> None:
        self.error = error
        with self._lock:
            self._failed[self.name] = error
        self.discard()

    def _guard(self, action: Callable[[], Any]) -> None:
        if self.error is not None:
            return
        try:
            action()
        except OSError as exc:
            self._fail(exc)
        except ValueError as exc:  # written after the file was discarded (its association ended)
            self.error = OSError(str(exc))

    def write(self, data: bytes) -> None:
        self._guard(lambda: self._handle.write(data))
        self._written += len(data)
        if self.error is None and self.high_water_percent is not None and self._written >= self._next_check:
            self._next_check = self._written + ROOM_CHECK_BYTES
            if capacity.above_high_water(self.directory, self.high_water_percent):
                self._fail(OSError(f"the store reached its high-water mark ({self.high_water_percent} %)"
                                   f" after {self._written} bytes of this dataset"))

    def flush(self) -> None:
        self._guard(self._handle.flush)

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass

    def discard(self) -> None:
        """Close and remove the file (what was received is not kept)."""
        self.close()
        try:
            os.unlink(self.name)
        except FileNotFoundError:
            pass

    @classmethod
    def claim(cls, path: str) -> OSError | None:
        """The store handler takes ``path`` over (it files or removes it); the write error, if any."""
        with cls._lock:
            for files in cls._unclaimed.values():
                files.pop(path, None)
            return cls._failed.pop(path, None)

    @classmethod
    def abandon(cls, assoc: Any) -> int:
        """Remove the files of an association that ended before they were handled; how many."""
        with cls._lock:
            files = list(cls._unclaimed.pop(id(assoc), {}).values())
            for receive in files:
                cls._failed.pop(receive.name, None)
        for receive in files:
            receive.discard()
        if files:
            log.warning("removed %d partly received dataset(s): the association ended before they were"
                        " answered", len(files))
        return len(files)


def receive_into(directory: str, high_water_percent: float | None) -> None:
    """Make pynetdicom write each received C-STORE dataset straight into ``directory``.

    pynetdicom's chunked receive writes the dataset, as it arrives, into a
    ``NamedTemporaryFile`` in the system's temporary folder. Pointing that at the store's own
    temporary area puts the file on the store's file system, so filing renames it into place
    instead of copying it.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = functools.partial(  # type: ignore[attr-defined]
        ReceiveFile, directory, high_water_percent)
