"""The file store. Paths are generated here and never built from data that arrived from outside.

Writes are atomic: the bytes go to a temporary file in ``<store>/tmp``, are fsynced, renamed
into place and the directory is fsynced, so a file is either wholly there or not at all.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import clock

TMP = "tmp"


class StorageError(Exception):
    """The store could not take the file (disk full, permissions, …)."""


@dataclass(frozen=True)
class Stored:
    path: str  # relative to the store root, with forward slashes
    size: int
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_relative_path(category: str, suffix: str, moment: datetime | None = None) -> str:
    """``category/YYYY/MM/DD/<uuid><suffix>``: unique, and free of anything a client sent."""
    if not category.isidentifier() or (suffix and not suffix[1:].isalnum()):
        raise ValueError("category and suffix are chosen by pacslite, not by clients")
    day = (moment or clock.now()).strftime("%Y/%m/%d")
    return f"{category}/{day}/{uuid.uuid4().hex}{suffix}"


def write_atomic(root: str | Path, category: str, data: bytes, suffix: str = "") -> Stored:
    """Write ``data`` to a new generated path under ``root``; durable when this returns."""
    root = Path(root)
    relative = new_relative_path(category, suffix)
    final = root / relative
    tmp_dir = root / TMP
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(str(exc)) from exc
    return Stored(relative, len(data), sha256_hex(data))


def resolve(root: str | Path, relative: str) -> Path:
    """The absolute path of a stored file; refuses anything that leaves the store."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise ValueError("path outside the store")
    return path


def remove(root: str | Path, relative: str) -> None:
    """Remove a file this module wrote, when the transaction that referenced it failed."""
    resolve(root, relative).unlink(missing_ok=True)
