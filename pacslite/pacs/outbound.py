"""Sending stored images to another AE: what goes, in which form, and the record of it. The
one place for C-MOVE, C-GET, the forward rules and WADO-RS to decide the form an image goes in.

An image goes **as stored**, byte for byte, when the receiver accepted its transfer syntax. When
it did not, a compressed image is decompressed (the result is what pacslite holds, never a
lossy re-compression) and an uncompressed one re-encoded, if the receiver takes an
uncompressed syntax; otherwise that image
fails, with the reason logged. Released (offline) images fail: their study page says how to
restore them. Every transfer is audited once per study, as PS3.15's "DICOM Instances
Transferred": who asked, the destination, the patient, the study and how many images.
"""
from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..core import audit, storage
from ..core.db import transaction

log = logging.getLogger(__name__)

#: What a receiver is offered besides an image's own transfer syntax: uncompressed.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Presentation contexts a sending association may propose (PS3.8 allows 128).
MAX_CONTEXTS = 126


class Unsendable(Exception):
    """This image cannot go to this receiver; the message says why."""


@dataclass
class Transfer:
    """Sub-operation counts of one retrieve, and the images that failed."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    why: str = ""  # the first reason an image could not go (for the final response's comment)
    sent: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (patient, study) → images

    def done(self, row: sqlite3.Row, status: int | None) -> None:
        self.remaining -= 1
        if status == 0x0000:
            self.completed += 1
            self.sent[(row["patient_id"], row["study_instance_uid"])] += 1
        elif status is not None and (status & 0xF000) == 0xB000:
            self.warning += 1
            self.sent[(row["patient_id"], row["study_instance_uid"])] += 1
        else:
            self.failed += 1
            self.failed_uids.append(row["sop_instance_uid"])


def contexts_for(rows: Iterable[sqlite3.Row]) -> list[tuple[str, list[str]]]:
    """Presentation contexts to propose: each SOP class with each stored transfer syntax, and
    each SOP class uncompressed (the fallback); at most :data:`MAX_CONTEXTS`."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for row in rows:
        wanted[(row["sop_class_uid"], (row["transfer_syntax_uid"],))] = None
        wanted[(row["sop_class_uid"], UNCOMPRESSED)] = None
    return [(sop_class, list(syntaxes)) for sop_class, syntaxes in list(wanted)[:MAX_CONTEXTS]]


def payload(store: str | Path, row: sqlite3.Row, accepted: set[str]) -> Path | Dataset:
    """What to send for ``row`` to a receiver that accepted ``accepted`` for its SOP class: the
    stored file (byte for byte), or the image decompressed; Unsendable otherwise."""
    if row["released_at"]:
        raise Unsendable("offline: restore it from its archive volume")
    path = storage.resolve(store, row["storage_path"])
    if row["transfer_syntax_uid"] in accepted:
        return path
    if not accepted & set(UNCOMPRESSED):
        raise Unsendable(f"the receiver accepts none of {row['transfer_syntax_uid']} or an uncompressed syntax")
    try:
        ds = dcmread(path)
        if UID(row["transfer_syntax_uid"]).is_compressed:
            ds.decompress(generate_instance_uid=False)  # the same image, not a new instance
    except Exception as exc:  # a codec pydicom lacks, or a stream it cannot decode
        raise Unsendable(f"cannot be decompressed for this receiver: {exc}") from exc
    return ds  # uncompressed: the sender encodes it in the syntax the receiver took


def record(conn: sqlite3.Connection, actor: audit.Actor, destination: str, transfer: Transfer, how: str) -> None:
    """Audit the images sent, one row per study (PS3.15 "DICOM Instances Transferred")."""
    with transaction(conn):
        for (patient_id, study_uid), count in sorted(transfer.sent.items()):
            audit.record(conn, actor, "image.transfer", f"study:{study_uid}", patient_id=patient_id,
                         detail={"destination": destination, "images": count, "how": how})
        if transfer.failed:
            audit.record(conn, actor, "image.transfer", f"ae:{destination}", outcome="failure",
                         detail={"destination": destination, "failed": transfer.failed, "how": how,
                                 "failed_sop_instances": transfer.failed_uids[:50]})
