"""The file store. Paths are generated here and never built from data that arrived from outside.

Writes are atomic: the bytes go to a temporary file in ``<store>/tmp``, are fsynced, renamed
into place and the directory is fsynced, so a file is either wholly there or not at all.
"""
from __future__ import annotations

import hashlib
import os
import time
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


def fsync_dir(path: Path) -> None:
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


def tmp_dir(root: str | Path) -> Path:
    """The temporary area: files being written, never referenced by the index."""
    path = Path(root) / TMP
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_tmp(root: str | Path, untouched_for: float = 0.0) -> int:
    """Remove what a stopped or killed process left in the temporary area; returns how many.

    A process calls this at start, before it accepts anything. When other processes share the
    store (PostgreSQL, several nodes), only files not written to for ``untouched_for`` seconds
    are removed: the others may be another process's images still arriving.
    """
    removed = 0
    cutoff = time.time() - untouched_for
    for entry in tmp_dir(root).iterdir():
        if (entry.is_file() or entry.is_symlink()) and (not untouched_for or modified_at(entry) < cutoff):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def modified_at(path: Path) -> float:
    """When the file was last written; infinitely late when it is gone (another process took it)."""
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return float("inf")


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def place(root: str | Path, tmp: str | Path, category: str, suffix: str = "") -> str:
    """Rename a complete, fsynced file from the temporary area to a new generated path.

    Returns the relative path; durable (directory fsynced) when this returns. Raises
    :class:`StorageError` and leaves the file where it was if it cannot.
    """
    root = Path(root)
    relative = new_relative_path(category, suffix)
    final = root / relative
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
    except OSError as exc:
        raise StorageError(str(exc)) from exc
    try:
        fsync_dir(final.parent)
    except OSError as exc:
        os.rename(final, tmp)
        raise StorageError(str(exc)) from exc
    return relative


def write_tmp(root: str | Path, data: bytes, suffix: str = ".part") -> Path:
    """Write ``data`` to a new fsynced file in the temporary area."""
    tmp = Path(root) / TMP / f"{uuid.uuid4().hex}{suffix}"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(str(exc)) from exc
    return tmp


def write_atomic(root: str | Path, category: str, data: bytes, suffix: str = "") -> Stored:
    """Write ``data`` to a new generated path under ``root``; durable when this returns."""
    tmp = write_tmp(root, data)
    try:
        relative = place(root, tmp, category, suffix)
    except StorageError:
        tmp.unlink(missing_ok=True)
        raise
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
