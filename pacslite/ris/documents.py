"""Scanned request forms attached to an exam: JPEG, PNG or PDF, recognised by content."""
from __future__ import annotations

import io
import sqlite3
from typing import Mapping, Any

from PIL import Image, UnidentifiedImageError

from ..core import audit, clock, storage
from . import patients
from ..core.db import transaction
from ..core.validation import N_, NotFound, ValidationError

SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png", "application/pdf": ".pdf"}


def detect_media_type(data: bytes) -> str | None:
    """The media type the bytes really are (not what the file name says), or None."""
    if data.startswith(b"%PDF-"):
        return "application/pdf" if b"%%EOF" in data[-2048:] else None
    if data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n"):
        try:
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format
                image.load()  # decodes every byte: a truncated or corrupt image fails here
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return None
        return {"JPEG": "image/jpeg", "PNG": "image/png"}.get(kind or "")
    return None


def attach(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], accession: str,
           data: bytes, original_name: str = "") -> int:
    """Store a request form for the exam; the file is durable before the row is committed."""
    if not data:
        raise ValidationError("file", N_("Choose a file."))
    if len(data) > settings["REQUEST_FORM_MAX_BYTES"]:
        raise ValidationError("file", N_("The file is larger than %(max)d MB."),
                              max=settings["REQUEST_FORM_MAX_BYTES"] // (1024 * 1024))
    media_type = detect_media_type(data)
    if media_type is None:
        raise ValidationError("file", N_("Only JPEG, PNG or PDF files are accepted, and this file is not one."))
    exam = patients.get_exam(conn, accession)
    stored = storage.write_atomic(settings["STORAGE_DIR"], "forms", data, SUFFIXES[media_type])
    try:
        with transaction(conn):
            cur = conn.execute(
                "INSERT INTO request_forms (exam_ref, media_type, size, sha256, storage_path, original_name,"
                " uploaded_at, uploaded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (exam["id"], media_type, stored.size, stored.sha256, stored.path, original_name[:200],
                 clock.to_db(clock.now()), actor.name))
            audit.record(conn, actor, "exam.request_form", f"exam:{accession}", patient_id=exam["patient_id"],
                         detail={"media_type": media_type, "size": stored.size, "sha256": stored.sha256})
    except BaseException:
        storage.remove(settings["STORAGE_DIR"], stored.path)
        raise
    return int(cur.lastrowid)


def of_exam(conn: sqlite3.Connection, exam_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM request_forms WHERE exam_ref = ? ORDER BY id", (exam_id,)).fetchall()


def get(conn: sqlite3.Connection, exam_id: int, form_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM request_forms WHERE id = ? AND exam_ref = ?", (form_id, exam_id)).fetchone()
    if row is None:
        raise NotFound(f"request form {form_id}")
    return row
