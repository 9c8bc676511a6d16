"""The off-site copy: every image written a second time, lossy-compressed (JPEG 2000 at about
``OFFSITE_RATIO``:1), to ``OFFSITE_DIR`` (another disk, a mounted share), with a manifest.

A copy is a new, derived instance: new SOP Instance UID, LossyImageCompression 01 with the
ratio and the method, DerivationDescription naming it a pacslite off-site copy, and the
original referenced in Source Image Sequence. :func:`filing.ingest` refuses such a file, so a
copy can never come back as a diagnostic original.
"""
from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path
from typing import Any, Mapping

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000

from ..core import audit, clock, jobs, storage, uids
from . import filing
from ..core.db import transaction

log = logging.getLogger(__name__)
MARK = filing.OFFSITE_MARK
MANIFEST = "MANIFEST.TSV"
BATCH = 20


def configured(settings: Mapping[str, Any]) -> bool:
    return bool(settings["OFFSITE_DIR"])


def lossy_copy(path: Path, ratio: float, uid_root: str = "") -> tuple[bytes, float, str]:
    """(file bytes, achieved ratio, method) of the off-site copy of one stored file. An image
    is compressed with JPEG 2000; an object without pixels (a report, a structured document)
    is copied as it is (ratio 1, method 'copy')."""
    ds = dcmread(path)
    original = ds.SOPInstanceUID
    method = "copy"
    achieved = 1.0
    if "PixelData" in ds:
        before = len(ds.PixelData)
        ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_cr=[ratio])
        achieved = before / max(len(ds.PixelData), 1)
        method = "ISO_15444_1"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = [f"{achieved:.2f}"]
        ds.LossyImageCompressionMethod = [method]
        image_type = list(ds.get("ImageType", ["DERIVED", "SECONDARY"]))
        ds.ImageType = ["DERIVED", *image_type[1:]] if image_type else ["DERIVED", "SECONDARY"]
    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = original
    ds.SourceImageSequence = Sequence([source])
    ds.DerivationDescription = f"{MARK} ({method}, {achieved:.1f}:1) of {original}"[:1024]
    ds.SOPInstanceUID = uids.new_uid(uid_root)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), achieved, method


def pending(conn: sqlite3.Connection) -> sqlite3.Row:
    """How far behind the copy is: images without a copy, their bytes, the oldest arrival."""
    return conn.execute(
        "SELECT COUNT(*) AS images, COALESCE(SUM(i.size), 0) AS bytes, MIN(i.received_at) AS oldest"
        " FROM instances i WHERE i.released_at IS NULL AND NOT EXISTS (SELECT 1 FROM offsite_copies c"
        " WHERE c.instance_ref = i.id)").fetchone()


def copied(conn: sqlite3.Connection) -> sqlite3.Row:
    return conn.execute("SELECT COUNT(*) AS images, COALESCE(SUM(size), 0) AS bytes, MAX(copied_at) AS last,"
                        " AVG(ratio) AS ratio FROM offsite_copies").fetchone()


def ensure_job(conn: sqlite3.Connection, settings: Mapping[str, Any],
               actor: audit.Actor = audit.SYSTEM) -> int | None:
    """Queue the copying job when there is something to copy (the sweep calls this, as the
    system; the archive page, as its admin)."""
    if not configured(settings) or pending(conn)["images"] == 0:
        return None
    return jobs.start(conn, actor, "offsite_copy", "offsite")


@jobs.register("offsite_copy")
def copy_step(conn: sqlite3.Connection, settings: Mapping[str, Any], job: sqlite3.Row) -> jobs.Step:
    """Copy the next images without an off-site copy, oldest first."""
    root = Path(settings["OFFSITE_DIR"])
    rows = conn.execute(
        "SELECT i.*, st.study_instance_uid FROM instances i JOIN series se ON se.id = i.series_ref"
        " JOIN studies st ON st.id = se.study_ref WHERE i.released_at IS NULL AND NOT EXISTS"
        " (SELECT 1 FROM offsite_copies c WHERE c.instance_ref = i.id) ORDER BY i.id LIMIT ?", (BATCH,)).fetchall()
    total = job["total"] or (pending(conn)["images"] + 0)
    done = job["done"]
    for row in rows:
        try:
            data, ratio, method = lossy_copy(storage.resolve(settings["STORAGE_DIR"], row["storage_path"]),
                                             float(settings["OFFSITE_RATIO"]), settings["UID_ROOT"])
        except Exception as exc:  # one image that cannot be compressed: copied as it is
            log.warning("off-site copy of %s: %s; copying the original", row["sop_instance_uid"], exc)
            data = storage.resolve(settings["STORAGE_DIR"], row["storage_path"]).read_bytes()
            ratio, method = 1.0, "copy"
        stored = storage.write_atomic(root, "copies", data, ".dcm")
        with open(root / MANIFEST, "a", encoding="utf-8") as manifest:
            manifest.write(f"{stored.path}\t{stored.sha256}\t{row['sop_instance_uid']}\t{row['study_instance_uid']}"
                           f"\t{method}\t{ratio:.2f}\n")
        with transaction(conn):
            conn.execute("INSERT INTO offsite_copies (instance_ref, path, size, sha256, ratio, method, copied_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", (row["id"], stored.path, stored.size, stored.sha256,
                                                           ratio, method, clock.to_db(clock.now())))
        done += 1
    if not rows:
        return jobs.Step(done, max(total, done), "", finished=True, message="up to date")
    return jobs.Step(done, max(total, done), str(rows[-1]["id"]))
