"""Offline volumes (a DVD each): studies older than ``ARCHIVE_AGE_DAYS`` written as a folder in
the IHE Portable Data for Imaging layout and as an ISO 9660 image, verified by reading back,
then — by an admin, with a reason — their online copies released. A study comes back from a
volume through :func:`filing.ingest`, after its hashes are checked.

The folder: ``DICOMDIR`` (pydicom's FileSet), the files under 8.3 names (``PT000000/ST000000/
SE000000/IM000000``) holding the **original bytes**, ``README.TXT``, ``SHA256.TXT`` (one line per
file), no autorun. The ISO image holds the same files (ISO 9660 level 1, pycdlib).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import pycdlib
from pydicom import dcmread
from pydicom.fileset import FileSet

from ..core import audit, clock, jobs, storage
from . import arrivals, filing, index
from ..core.db import transaction
from .index import Source
from ..core.validation import N_, Conflict, NotFound, text

BATCH = 50
MANIFEST, README, DICOMDIR = "SHA256.TXT", "README.TXT", "DICOMDIR"


def archive_dir(settings: Mapping[str, Any]) -> Path:
    return Path(settings["ARCHIVE_DIR"] or Path(settings["INSTANCE_DIR"]) / "archive")


def volume_dir(settings: Mapping[str, Any], label: str) -> Path:
    return archive_dir(settings) / "volumes" / label


def iso_path(settings: Mapping[str, Any], label: str) -> Path:
    return archive_dir(settings) / "volumes" / f"{label}.iso"


def get_volume(conn: sqlite3.Connection, volume_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM volumes WHERE id = ?", (volume_id,)).fetchone()
    if row is None:
        raise NotFound(f"volume {volume_id}")
    return row


def list_volumes(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT v.*, (SELECT COUNT(*) FROM volume_studies s WHERE s.volume_ref = v.id) AS studies"
                        " FROM volumes v ORDER BY v.id DESC").fetchall()


def studies_of_volume(conn: sqlite3.Connection, volume_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT st.*, e.accession_number AS exam_accession, p.patient_id AS exam_patient_id, p.name AS exam_patient_name"
        " FROM volume_studies vs JOIN studies st ON st.id = vs.study_ref LEFT JOIN exams e ON e.id = st.exam_ref"
        " LEFT JOIN patients p ON p.id = e.patient_ref WHERE vs.volume_ref = ? ORDER BY st.first_received_at",
        (volume_id,)).fetchall()


def volumes_of_study(conn: sqlite3.Connection, study_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT v.* FROM volume_studies vs JOIN volumes v ON v.id = vs.volume_ref"
                        " WHERE vs.study_ref = ? AND v.state <> 'failed' ORDER BY v.id", (study_id,)).fetchall()


def locations(conn: sqlite3.Connection, study_id: int) -> dict[str, Any]:
    """Where a study lives: its images online, its offline volumes, its off-site copies."""
    counts = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(i.released_at IS NULL), 0), COALESCE(SUM(EXISTS (SELECT 1 FROM offsite_copies c"
        " WHERE c.instance_ref = i.id)), 0) FROM instances i JOIN series se ON se.id = i.series_ref"
        " WHERE se.study_ref = ?", (study_id,)).fetchone()
    return {"images": counts[0], "online": counts[1], "offsite": counts[2],
            "volumes": volumes_of_study(conn, study_id)}


def _instances_of_volume(conn: sqlite3.Connection, volume_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT i.* FROM volume_studies vs JOIN series se ON se.study_ref = vs.study_ref"
                        " JOIN instances i ON i.series_ref = se.id WHERE vs.volume_ref = ? ORDER BY i.id",
                        (volume_id,)).fetchall()


# ---------------------------------------------------------------- planning

def plan_volume(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any]) -> int:
    """A new volume with the oldest studies not yet on one, up to its capacity, and its build job."""
    before = clock.to_db(clock.now() - timedelta(days=settings["ARCHIVE_AGE_DAYS"]))
    capacity = int(settings["VOLUME_BYTES"])
    candidates = conn.execute(
        "SELECT st.id, st.first_received_at, st.last_received_at, (SELECT COALESCE(SUM(i.size), 0) FROM series se"
        " JOIN instances i ON i.series_ref = se.id WHERE se.study_ref = st.id) AS bytes FROM studies st"
        " WHERE st.exam_ref IS NOT NULL AND st.rejected_at IS NULL AND st.instance_count > 0"
        " AND st.last_received_at <= ? AND NOT EXISTS (SELECT 1 FROM volume_studies vs JOIN volumes v"
        " ON v.id = vs.volume_ref WHERE vs.study_ref = st.id AND v.state <> 'failed')"
        " ORDER BY st.first_received_at, st.id", (before,)).fetchall()
    chosen, size = [], 0
    for study in candidates:
        if chosen and size + study["bytes"] > capacity:
            break
        chosen.append(study)
        size += study["bytes"]
    if not chosen:
        raise Conflict(N_("No study is old enough and not yet on a volume."))
    now = clock.to_db(clock.now())
    with transaction(conn):
        number = conn.execute("SELECT COUNT(*) FROM volumes").fetchone()[0] + 1
        label = f"PL{number:06d}"
        volume_id = conn.execute(
            "INSERT INTO volumes (label, state, capacity, size, first_date, last_date, created_at)"
            " VALUES (?, 'planned', ?, ?, ?, ?, ?)",
            (label, capacity, size, chosen[0]["first_received_at"], max(s["last_received_at"] for s in chosen),
             now)).lastrowid
        conn.executemany("INSERT INTO volume_studies (volume_ref, study_ref) VALUES (?, ?)",
                         [(volume_id, s["id"]) for s in chosen])
        audit.record(conn, actor, "volume.plan", f"volume:{label}", detail={"studies": len(chosen), "bytes": size})
    jobs.start(conn, actor, "build_volume", f"volume:{volume_id}")
    return int(volume_id)


def _volume_of(job: sqlite3.Row) -> int:
    return int(job["subject"].split(":", 1)[1])


# ---------------------------------------------------------------- building

def _building(settings: Mapping[str, Any], label: str) -> Path:
    return archive_dir(settings) / "volumes" / f".{label}.building"


def _index(conn: sqlite3.Connection, settings: Mapping[str, Any], volume: sqlite3.Row) -> int:
    """Write DICOMDIR with pydicom's FileSet from the files' headers, and note each file's
    8.3 file ID; the files themselves are copied next. Restartable: starts afresh."""
    root = _building(settings, volume["label"])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    fs = FileSet()
    fs.ID = volume["label"]
    instances = _instances_of_volume(conn, volume["id"])
    by_uid = {}
    for instance in instances:
        header = dcmread(storage.resolve(settings["STORAGE_DIR"], instance["storage_path"]), stop_before_pixels=True)
        fs.add(header)
        by_uid[instance["sop_instance_uid"]] = instance
    fs.write(root)
    with transaction(conn):
        conn.execute("DELETE FROM volume_files WHERE volume_ref = ?", (volume["id"],))
        for member in fs:
            instance = by_uid[member.SOPInstanceUID]
            conn.execute("INSERT INTO volume_files (volume_ref, instance_ref, file_id, size, sha256)"
                         " VALUES (?, ?, ?, ?, ?)", (volume["id"], instance["id"],
                                                     Path(member.FileID).as_posix(), instance["size"],
                                                     instance["sha256"]))
    return len(instances)


def _copy_batch(conn: sqlite3.Connection, settings: Mapping[str, Any], volume: sqlite3.Row, after: int) -> int:
    """Put the original bytes of the next files in place; the last instance id done (0: none left)."""
    root = _building(settings, volume["label"])
    rows = conn.execute("SELECT f.*, i.storage_path FROM volume_files f JOIN instances i ON i.id = f.instance_ref"
                        " WHERE f.volume_ref = ? AND f.instance_ref > ? ORDER BY f.instance_ref LIMIT ?",
                        (volume["id"], after, BATCH)).fetchall()
    for row in rows:
        shutil.copyfile(storage.resolve(settings["STORAGE_DIR"], row["storage_path"]), root / row["file_id"])
    return rows[-1]["instance_ref"] if rows else 0


def _finish(conn: sqlite3.Connection, settings: Mapping[str, Any], volume: sqlite3.Row) -> None:
    """README, the manifest, the ISO image; then the folder takes its name."""
    root = _building(settings, volume["label"])
    files = conn.execute("SELECT file_id, sha256 FROM volume_files WHERE volume_ref = ? ORDER BY file_id",
                         (volume["id"],)).fetchall()
    (root / README).write_text(
        f"pacslite offline volume {volume['label']}\r\n"
        f"Images received {volume['first_date'][:10]} to {volume['last_date'][:10]}.\r\n"
        "DICOM media in the IHE Portable Data for Imaging layout: open DICOMDIR with a DICOM viewer.\r\n"
        "SHA256.TXT lists the SHA-256 of every file. This disc starts nothing by itself.\r\n", encoding="ascii")
    lines = [f"{row['sha256']}  {row['file_id']}" for row in files]
    lines.append(f"{hashlib.sha256((root / DICOMDIR).read_bytes()).hexdigest()}  {DICOMDIR}")
    (root / MANIFEST).write_text("\n".join(lines) + "\n", encoding="ascii")
    _write_iso(root, iso_path(settings, volume["label"]), volume["label"])
    final = volume_dir(settings, volume["label"])
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    with transaction(conn):
        conn.execute("UPDATE volumes SET state = 'built', size = ?, built_at = ? WHERE id = ?",
                     (size, clock.to_db(clock.now()), volume["id"]))
        audit.record(conn, audit.SYSTEM, "volume.build", f"volume:{volume['label']}",
                     detail={"files": len(files), "bytes": size})


def _iso_name(relative: str) -> str:
    """ISO 9660 level 1 path of a volume file: upper case, 8.3, version 1."""
    parts = relative.upper().split("/")
    name = parts[-1] if "." in parts[-1] else parts[-1] + "."
    return "/" + "/".join([*parts[:-1], name + ";1"])


def _write_iso(root: Path, target: Path, label: str) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=label)
    try:
        for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
            iso.add_directory("/" + directory.relative_to(root).as_posix().upper())
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            iso.add_file(str(path), _iso_name(path.relative_to(root).as_posix()))
        tmp = target.with_name(f".{target.name}.tmp")
        iso.write(str(tmp))
    finally:
        iso.close()
    tmp.replace(target)


@jobs.register("build_volume")
def build_step(conn: sqlite3.Connection, settings: Mapping[str, Any], job: sqlite3.Row) -> jobs.Step:
    volume = get_volume(conn, _volume_of(job))
    cursor = job["cursor"]
    if cursor == "":
        files = _index(conn, settings, volume)
        return jobs.Step(0, files, "copy:0", message="DICOMDIR written")
    if cursor.startswith("copy:"):
        last = _copy_batch(conn, settings, volume, int(cursor[5:]))
        done = conn.execute("SELECT COUNT(*) FROM volume_files WHERE volume_ref = ? AND instance_ref <= ?",
                            (volume["id"], last), ).fetchone()[0] if last else job["total"]
        return jobs.Step(done, job["total"], f"copy:{last}" if last else "finish")
    _finish(conn, settings, volume)
    return jobs.Step(job["total"], job["total"], "", finished=True, message="built")


# ---------------------------------------------------------------- verifying

def _read_iso_file(iso: pycdlib.PyCdlib, relative: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, iso_path=_iso_name(relative))
    return out.getvalue()


def start_verify(conn: sqlite3.Connection, actor: audit.Actor, volume_id: int) -> int:
    """Queue the verification of a built volume (again, after a failure)."""
    volume = get_volume(conn, volume_id)
    if volume["state"] not in ("built", "verified", "failed"):
        raise Conflict(N_("The volume is not built yet."))
    return jobs.start(conn, actor, "verify_volume", f"volume:{volume_id}")


@jobs.register("verify_volume")
def verify_step(conn: sqlite3.Connection, settings: Mapping[str, Any], job: sqlite3.Row) -> jobs.Step:
    """Read every file back, from the folder and from the ISO image, against its SHA-256."""
    volume = get_volume(conn, _volume_of(job))
    files = conn.execute("SELECT file_id, sha256 FROM volume_files WHERE volume_ref = ? ORDER BY file_id",
                         (volume["id"],)).fetchall()
    total = 2 * len(files)
    phase, _, position = (job["cursor"] or "folder:0").partition(":")
    start = int(position)
    batch = files[start:start + BATCH]
    bad = json.loads(volume["verify_detail"] or "{}").get("mismatches", []) if start or phase == "iso" else []
    if phase == "folder":
        root = volume_dir(settings, volume["label"])
        for row in batch:
            path = root / row["file_id"]
            found = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
            if found != row["sha256"]:
                bad.append({"where": "folder", "file": row["file_id"], "found": found})
    else:
        iso = pycdlib.PyCdlib()
        iso.open(str(iso_path(settings, volume["label"])))
        try:
            for row in batch:
                try:
                    found = hashlib.sha256(_read_iso_file(iso, row["file_id"])).hexdigest()
                except pycdlib.pycdlibexception.PyCdlibException:
                    found = "missing"
                if found != row["sha256"]:
                    bad.append({"where": "iso", "file": row["file_id"], "found": found})
        finally:
            iso.close()
    done = (0 if phase == "folder" else len(files)) + start + len(batch)
    with transaction(conn):
        conn.execute("UPDATE volumes SET verify_detail = ? WHERE id = ?",
                     (json.dumps({"mismatches": bad}), volume["id"]))
    if start + BATCH < len(files):
        return jobs.Step(done, total, f"{phase}:{start + BATCH}")
    if phase == "folder":
        return jobs.Step(done, total, "iso:0")
    state = "failed" if bad else "verified"
    with transaction(conn):
        conn.execute("UPDATE volumes SET state = ?, verified_at = ? WHERE id = ?",
                     (state, clock.to_db(clock.now()), volume["id"]))
        audit.record(conn, audit.SYSTEM, "volume.verify", f"volume:{volume['label']}",
                     outcome="success" if not bad else "failure", detail={"files": len(files),
                                                                          "mismatches": bad[:20]})
    return jobs.Step(total, total, "", finished=True,
                     message="verified" if not bad else f"{len(bad)} files differ")


# ---------------------------------------------------------------- releasing and restoring

def release_volume(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], volume_id: int,
                   data: Mapping[str, Any]) -> int:
    """Remove the online copies of a verified volume's images (explicit, with a reason)."""
    reason = text(data, "reason", required=True, max_length=500)
    now = clock.to_db(clock.now())
    with transaction(conn):
        volume = get_volume(conn, volume_id)
        if volume["state"] != "verified":
            raise Conflict(N_("Only a verified volume can have its online copies released."))
        if volume["released_at"]:
            raise Conflict(N_("The online copies of this volume were already released."))
        rows = conn.execute("SELECT i.id, i.storage_path FROM volume_files f JOIN instances i ON i.id = f.instance_ref"
                            " WHERE f.volume_ref = ? AND i.released_at IS NULL AND i.sha256 = f.sha256",
                            (volume_id,)).fetchall()
        index.mark_released(conn, [r["id"] for r in rows], now)
        conn.execute("UPDATE volumes SET released_at = ?, released_by = ?, release_reason = ? WHERE id = ?",
                     (now, actor.name, reason, volume_id))
        audit.record(conn, actor, "volume.release", f"volume:{volume['label']}",
                     detail={"reason": reason, "files": len(rows)})
    for row in rows:  # after the commit: a crash here leaves files, never rows without them
        storage.remove(settings["STORAGE_DIR"], row["storage_path"])
    return len(rows)


def manifest(root: Path) -> dict[str, str]:
    """{file ID: SHA-256} from a volume's SHA256.TXT."""
    found = {}
    for line in (root / MANIFEST).read_text(encoding="ascii").splitlines():
        sha, _, name = line.partition("  ")
        found[name.strip()] = sha.strip()
    return found


def restore_study(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], root: Path,
                  study_uid: str) -> dict[str, int]:
    """Bring a study back from a volume folder (ours, or another instance's): every file is
    checked against SHA256.TXT, then goes through filing.ingest(). {outcome: count}."""
    root = root.resolve()
    fs = FileSet(root / DICOMDIR)
    expected = manifest(root)
    found = fs.find(StudyInstanceUID=study_uid)
    if not found:
        raise Conflict(N_("This volume does not hold that study."))
    label = str(fs.ID or root.name)
    outcomes: dict[str, int] = {}
    with arrivals.delivery(conn, Source(f"volume {label}")) as source:
        _restore_files(conn, settings, root, found, expected, source, outcomes)
    with transaction(conn):
        audit.record(conn, actor, "volume.restore", f"study:{study_uid}", detail={"volume": label, **outcomes})
    return outcomes


def _restore_files(conn: sqlite3.Connection, settings: Mapping[str, Any], root: Path, found: list[Any],
                   expected: dict[str, str], source: Source, outcomes: dict[str, int]) -> None:
    """Ingest the volume's files of a study, each checked against its SHA-256 first."""
    for member in found:
        path = Path(member.path).resolve()
        if root not in path.parents:  # a DICOMDIR may not point outside its medium
            raise Conflict(N_("The volume's DICOMDIR points outside the volume."))
        data = path.read_bytes()
        file_id = path.relative_to(root).as_posix()
        if hashlib.sha256(data).hexdigest() != expected.get(file_id):
            raise Conflict(N_("A file on the volume does not match its SHA-256 (%(file)s). Nothing more was restored."),
                           file=file_id)
        outcome = filing.ingest_bytes(conn, settings["STORAGE_DIR"], data, source)
        outcomes[outcome.result] = outcomes.get(outcome.result, 0) + 1
