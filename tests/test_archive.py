"""The archive: capacity and forecast, the high-water mark; volumes, off-site copy, scrub, backup."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from pacslite.core import audit
from pacslite.ris import patients
from pacslite.pacs import capacity, filing
from pacslite import sweep
from pacslite.pacs.index import Source
from pacslite.core.validation import Conflict
from tests import databases
from tests.conftest import EXAM_FORM, flask_cli
from tests.dicomkit import make_ct, store_results, storescu
from tests.server import Pacs


def register(app, conn, **changes) -> str:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data,
                                  confirm_demographics=True).accession_number


def add_study(app, conn, tmp_path: Path, accession: str, images: int = 2, size: int = 0) -> str:
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(images):
        path = tmp_path / f"{generate_uid()}.dcm"
        make_ct(path, study_uid=study_uid, series_uid=series_uid, accession=accession, patient_id="P0001",
                instance_number=number + 1, seed=number, size=size)
        filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01"))
    return study_uid


def test_the_forecast_counts_what_arrives(app, conn, tmp_path) -> None:
    add_study(app, conn, tmp_path, register(app, conn), images=3)
    result = capacity.forecast(conn, app.config)
    today = result.days[-1]
    stored = conn.execute("SELECT COUNT(*), SUM(size) FROM instances").fetchone()
    assert (today.images, today.bytes) == (stored[0], stored[1]) and len(result.days) == 90
    assert result.bytes_per_day == stored[1] / 30
    high_water = int(result.usage.total * app.config["STORAGE_HIGH_WATER_PERCENT"] / 100)
    assert result.days_until_full == max(high_water - result.usage.used, 0) / (stored[1] / 30)


def test_storage_low_raises_an_alert(app, conn, tmp_path) -> None:
    settings = {**app.config, "STORAGE_WARN_PERCENT": 0.001}
    sweep.run(conn, settings)
    [alert] = sweep.list_alerts(conn, rule="storage_low")
    assert alert["subject"] == "store"
    sweep.run(conn, app.config)  # the condition is gone: the alert clears itself
    assert sweep.list_alerts(conn, rule="storage_low") == []


def test_the_high_water_mark_refuses_a_store_with_a700(tmp_path) -> None:
    instance = tmp_path / "instance"
    assert flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1").returncode == 0
    pacs = Pacs(instance, PACSLITE_STORAGE_HIGH_WATER_PERCENT="0.001")  # any real disk is above it
    try:
        path = tmp_path / "ct.dcm"
        make_ct(path)
        sent = storescu(pacs.port, [path])
        assert list(store_results(sent.stdout + sent.stderr).values()) == ["Refused: OutOfResources"]
        assert pacs.query("SELECT COUNT(*) FROM instances")[0][0] == 0
        assert not any(p.is_file() for p in (Path(pacs.settings["STORAGE_DIR"]) / "dicom").rglob("*")) \
            if (Path(pacs.settings["STORAGE_DIR"]) / "dicom").exists() else True
    finally:
        pacs.server.stop()


def test_the_archive_page_shows_days_until_full(app, conn, tmp_path, client_as) -> None:
    add_study(app, conn, tmp_path, register(app, conn))
    page = client_as("admin").get("/archive/").get_data(as_text=True)
    days = capacity.forecast(conn, app.config).days_until_full
    shown = re.search(r'id="days-until-full"><strong>(\d+)</strong>', page)
    # the disk's free space moves between the page and this forecast (other writers: the
    # database server's own files), so the same figure within a thousandth
    assert shown and abs(int(shown.group(1)) - days) <= max(1.0, days / 1000), (shown, days)
    assert client_as("technologist").get("/archive/").status_code == 403


def _archiving(app) -> dict:
    return {**app.config, "ARCHIVE_AGE_DAYS": 0}


def test_build_verify_release_and_restore_a_volume(app, conn, tmp_path, client_as) -> None:
    import hashlib
    import pycdlib
    from pydicom.fileset import FileSet
    from pacslite.core import db, jobs, storage
    from pacslite.pacs import archive
    from pacslite import create_app
    settings = _archiving(app)
    accession = register(app, conn)
    first = add_study(app, conn, tmp_path, accession, images=3)
    add_study(app, conn, tmp_path, accession, images=2)
    originals = {r["sop_instance_uid"]: r["sha256"] for r in conn.execute("SELECT * FROM instances")}
    volume_id = archive.plan_volume(conn, audit.SYSTEM, settings)
    with pytest.raises(Conflict, match="not built yet"):  # a planned volume has nothing to verify
        archive.start_verify(conn, audit.SYSTEM, volume_id)
    assert jobs.run_until_idle(conn, settings) >= 3
    volume = archive.get_volume(conn, volume_id)
    assert volume["state"] == "built"
    root = archive.volume_dir(settings, volume["label"])
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {"DICOMDIR", "README.TXT", "SHA256.TXT"} <= names and not any("AUTORUN" in n.upper() for n in names)
    assert all(re.fullmatch(r"[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?", part) for n in names for part in n.split("/"))
    fs = FileSet(root / "DICOMDIR")  # read as another program would
    assert len(fs) == 5
    for member in fs:
        assert hashlib.sha256(Path(member.path).read_bytes()).hexdigest() == originals[member.SOPInstanceUID]
    iso = pycdlib.PyCdlib()
    iso.open(str(archive.iso_path(settings, volume["label"])))
    assert any(c.file_identifier() == b"DICOMDIR.;1" for c in iso.list_children(iso_path="/"))
    iso.close()
    label = client_as("admin").get(f"/archive/volumes/{volume_id}/label").get_data(as_text=True)
    assert volume["label"] in label and accession in label and "张三" in label

    archive.start_verify(conn, audit.SYSTEM, volume_id)
    jobs.run_until_idle(conn, settings)
    assert archive.get_volume(conn, volume_id)["state"] == "verified"
    victim = root / conn.execute("SELECT file_id FROM volume_files LIMIT 1").fetchone()[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one byte
    archive.start_verify(conn, audit.SYSTEM, volume_id)
    jobs.run_until_idle(conn, settings)
    failed = archive.get_volume(conn, volume_id)
    assert failed["state"] == "failed" and victim.relative_to(root).as_posix() in failed["verify_detail"]
    with pytest.raises(Exception, match="verified"):
        archive.release_volume(conn, audit.SYSTEM, settings, volume_id, {"reason": "x"})
    victim.write_bytes(good)
    archive.start_verify(conn, audit.SYSTEM, volume_id)
    jobs.run_until_idle(conn, settings)
    assert archive.get_volume(conn, volume_id)["state"] == "verified"

    assert archive.release_volume(conn, audit.SYSTEM, settings, volume_id, {"reason": "Disc PL1 in the tower"}) == 5
    released = conn.execute("SELECT storage_path FROM instances WHERE released_at IS NOT NULL").fetchall()
    assert len(released) == 5
    assert not any(storage.resolve(settings["STORAGE_DIR"], r[0]).exists() for r in released)

    # workstations cannot retrieve released images, and the study page says how to restore them
    from pacslite.pacs import outbound
    row = conn.execute("SELECT * FROM instances LIMIT 1").fetchone()
    with pytest.raises(outbound.Unsendable, match="offline"):
        outbound.payload(settings["STORAGE_DIR"], row, {row["transfer_syntax_uid"]})
    study_id = conn.execute("SELECT s.id FROM studies s WHERE s.study_instance_uid = ?", (first,)).fetchone()[0]
    page = client_as("admin").get(f"/studies/{study_id}").get_data(as_text=True)
    assert 'id="offline-hint"' in page and volume["label"] in page and "Restore from the volume" in page

    with pytest.raises(Conflict, match="does not hold that study"):
        archive.restore_study(conn, audit.SYSTEM, settings, root, "1.2.3.4")
    assert archive.restore_study(conn, audit.SYSTEM, settings, root, first) == {"restored": 3}
    back = conn.execute("SELECT i.* FROM instances i JOIN series se ON se.id = i.series_ref JOIN studies st"
                        " ON st.id = se.study_ref WHERE st.study_instance_uid = ?", (first,)).fetchall()
    assert all(r["released_at"] is None for r in back)
    for row in back:
        assert storage.sha256_file(storage.resolve(settings["STORAGE_DIR"], row["storage_path"]))[1] == \
            originals[row["sop_instance_uid"]]

    fresh = create_app({"INSTANCE_DIR": str(tmp_path / "fresh"), "DEFAULT_LANGUAGE": "en"})
    other = db.connect(fresh.config["DATABASE"])
    assert archive.restore_study(other, audit.SYSTEM, fresh.config, root, first) == {"quarantined": 3}
    assert other.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 3


def test_a_job_pauses_resumes_and_survives_a_restart(app, conn, tmp_path) -> None:
    from pacslite.core import db, jobs
    from pacslite.pacs import archive
    settings = _archiving(app)
    add_study(app, conn, tmp_path, register(app, conn), images=2)
    volume_id = archive.plan_volume(conn, audit.SYSTEM, settings)
    job_id = jobs.active(conn, "build_volume", f"volume:{volume_id}")["id"]
    assert jobs.run_one_step(conn, settings)  # DICOMDIR written
    assert jobs.get(conn, job_id)["cursor"] == "copy:0"
    jobs.pause(conn, audit.SYSTEM, job_id)
    assert jobs.run_until_idle(conn, settings) == 0 and jobs.get(conn, job_id)["state"] == "paused"
    jobs.resume(conn, audit.SYSTEM, job_id)
    assert jobs.run_one_step(conn, settings)
    conn.close()  # "restart": a new connection picks the running job up where it stopped
    again = db.connect(app.config["DATABASE"])
    assert jobs.next_job(again)["id"] == job_id
    jobs.run_until_idle(again, settings)
    assert (jobs.get(again, job_id)["state"], archive.get_volume(again, volume_id)["state"]) == ("done", "built")
    with pytest.raises(Conflict, match="Only a queued or running job can be paused"):
        jobs.pause(again, audit.SYSTEM, job_id)
    again.close()


def test_the_offsite_copy_is_lossy_about_ten_to_one_and_never_filed_back(app, conn, tmp_path, client_as) -> None:
    from pydicom import dcmread
    from pacslite.core import jobs, storage
    from pacslite.pacs import offsite
    settings = {**app.config, "OFFSITE_DIR": str(tmp_path / "offsite")}
    add_study(app, conn, tmp_path, register(app, conn), images=3, size=512)
    assert offsite.pending(conn)["images"] == 3
    assert offsite.ensure_job(conn, settings) is not None
    jobs.run_until_idle(conn, settings)
    assert offsite.pending(conn)["images"] == 0
    rows = conn.execute("SELECT c.*, i.size AS original_size, i.sop_instance_uid FROM offsite_copies c"
                        " JOIN instances i ON i.id = c.instance_ref").fetchall()
    assert len(rows) == 3
    manifest = (tmp_path / "offsite" / "MANIFEST.TSV").read_text().splitlines()
    for row in rows:
        path = storage.resolve(settings["OFFSITE_DIR"], row["path"])
        assert storage.sha256_file(path)[1] == row["sha256"] and f"{row['path']}\t{row['sha256']}" in "\n".join(manifest)
        ds = dcmread(path)
        assert ds.pixel_array.shape == (512, 512)  # it opens
        assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_15444_1")
        assert ds.SOPInstanceUID != row["sop_instance_uid"]
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == row["sop_instance_uid"]
        assert 0.05 < row["size"] / row["original_size"] < 0.15, row["size"] / row["original_size"]
        refused = None
        try:
            filing.ingest_bytes(conn, settings["STORAGE_DIR"], path.read_bytes(), Source("BACKUP"))
        except filing.IngestError as exc:
            refused = exc.status
        assert refused == filing.DATA_SET_MISMATCH
    app.config["OFFSITE_DIR"] = settings["OFFSITE_DIR"]
    page = client_as("admin").get("/archive/").get_data(as_text=True)
    assert '<dd id="offsite-behind"><strong>up to date</strong>' in page


def test_the_archive_page_says_when_no_offsite_location_is_configured(app, client_as) -> None:
    assert "PACSLITE_OFFSITE_DIR" in client_as("admin").get("/archive/").get_data(as_text=True)


def test_the_scrub_finds_missing_and_changed_files_and_clears_when_right(app, conn, tmp_path) -> None:
    """The quick pass (daily) finds a missing file and one whose size changed; the full pass
    (SHA-256) also finds one changed in place; both clear their alerts once the files are right."""
    from pacslite.core import storage
    from pacslite.pacs import integrity
    add_study(app, conn, tmp_path, register(app, conn), images=4)
    flipped, missing, shortened, _ = conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
    paths = {row["id"]: storage.resolve(app.config["STORAGE_DIR"], row["storage_path"])
             for row in (flipped, missing, shortened)}
    kept = {row_id: path.read_bytes() for row_id, path in paths.items()}
    good = kept[flipped["id"]]
    paths[flipped["id"]].write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, other bytes
    paths[missing["id"]].unlink()
    paths[shortened["id"]].write_bytes(kept[shortened["id"]][:-10])

    def found() -> set[tuple[str, str]]:
        return {(a["rule"], a["subject"]) for a in sweep.list_alerts(conn)}

    while integrity.quick_step(conn, app.config) and integrity.passes(conn)["quick"].done_at is None:
        pass
    assert found() == {("file_missing", f"instance:{missing['id']}"), ("file_changed", f"instance:{shortened['id']}")}
    assert not integrity.quick_step(conn, app.config)  # a round just ended: not due for a day
    while integrity.full_step(conn, app.config, float("inf")) >= 0 and integrity.passes(conn)["full"].done_at is None:
        pass
    assert ("file_changed", f"instance:{flipped['id']}") in found() and len(found()) == 3
    assert integrity.full_step(conn, app.config, float("inf")) == -1  # the next full round is in SCRUB_FULL_DAYS
    for row_id, path in paths.items():
        path.write_bytes(kept[row_id])
    integrity.scrub_until_done(conn, {**app.config, "SCRUB_INTERVAL_HOURS": 0, "SCRUB_FULL_DAYS": 0})
    assert sweep.list_alerts(conn) == [] and len(sweep.list_alerts(conn, state="cleared")) == 3


def test_the_full_pass_reads_the_store_once_in_its_days_at_a_bounded_rate(app, conn, tmp_path) -> None:
    from pacslite.pacs import integrity
    add_study(app, conn, tmp_path, register(app, conn), images=2)
    settings = {**app.config, "SCRUB_MB_PER_SECOND": 20, "SCRUB_FULL_DAYS": 30}
    assert integrity.full_rate(conn, settings) == 1024 * 1024  # a small store: the 1 MiB/s floor
    conn.execute("UPDATE instances SET size = ?", (2 * 1024 ** 4,))  # as if 4 TiB were stored
    assert integrity.full_rate(conn, settings) == pytest.approx(4 * 1024 ** 4 / (30 * 86400))
    assert integrity.full_rate(conn, {**settings, "SCRUB_FULL_DAYS": 1}) == 20 * 1024 * 1024  # the cap


def test_an_online_backup_restores_into_a_fresh_instance(app, conn, tmp_path) -> None:
    import shutil
    from pacslite.core import db
    from pacslite.pacs import integrity
    from pacslite import create_app
    add_study(app, conn, tmp_path, register(app, conn), images=2)
    result = flask_cli(tmp_path / "instance", "backup", "db", "--to", str(tmp_path / "copies"))
    assert result.returncode == 0, result.stderr
    backup = Path(re.search(r"database backed up to (\S+)", result.stdout).group(1))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    if databases.ON_POSTGRESQL:  # the admin guide's restore: pg_restore into a new, empty database
        restored_app = create_app({"INSTANCE_DIR": str(fresh), "DEFAULT_LANGUAGE": "en",
                                   "DATABASE_URL": databases.restore(backup, fresh)})
    else:  # the admin guide's restore: the backup becomes pacslite.db
        shutil.copy(backup, fresh / "pacslite.db")
        restored_app = create_app({"INSTANCE_DIR": str(fresh), "DEFAULT_LANGUAGE": "en"})
    restored = db.connect(restored_app.config["DATABASE"])
    tables = db.table_names(conn)
    assert "audit_log" in tables and "instances" in tables
    for table in tables:
        assert restored.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() == \
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall(), table
    assert integrity.backup_if_due(conn, app.config) is not None  # the first scheduled one
    assert integrity.backup_if_due(conn, app.config) is None  # not due again yet


def test_a_study_page_says_where_the_study_lives(app, conn, tmp_path, client_as) -> None:
    from pacslite.core import jobs
    from pacslite.pacs import archive
    settings = {**_archiving(app), "OFFSITE_DIR": str(tmp_path / "offsite")}
    uid = add_study(app, conn, tmp_path, register(app, conn), images=2)
    archive.plan_volume(conn, audit.SYSTEM, settings)
    jobs.start(conn, audit.SYSTEM, "offsite_copy", "offsite")
    jobs.run_until_idle(conn, settings)
    study_id = conn.execute("SELECT id FROM studies WHERE study_instance_uid = ?", (uid,)).fetchone()[0]
    page = client_as("admin").get(f"/studies/{study_id}").get_data(as_text=True)
    where = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", re.search(r'id="study-locations">(.*?)</dd>', page, re.S)
                                       .group(1)))
    assert where.strip() == "online: 2 of 2 images · offline volumes: PL000001 (Built) · off-site copy: 2 of 2 images"


def test_start_up_does_not_wait_for_the_files_and_the_scrub_finds_one_gone_meanwhile(tmp_path) -> None:
    """Start-up recovers only what a crash left; the scrub's quick pass, started by start-up in
    its own thread, finds a file deleted while pacslite was stopped."""
    from tests import server as pacs_server
    from tests.conftest import wait_for
    instance = tmp_path / "instance"
    assert flask_cli(instance, "ae", "add", "STORESCU").returncode == 0
    pacs = pacs_server.Pacs(instance)
    try:
        reg = pacs.register(patient_id="SC0001")
        pacs.send_series(tmp_path / "sent", 2, accession=reg.accession_number, patient_id="SC0001")
        assert pacs.server.stop() == 0
        gone = pacs.query("SELECT id, storage_path FROM instances ORDER BY id")[0]
        (Path(pacs.settings["STORAGE_DIR"]) / gone[1]).unlink()
        pacs.restart()
        wait_for(lambda: [r[0] for r in pacs.query("SELECT subject FROM alerts WHERE rule = 'file_missing'"
                                                   " AND state = 'open'")] == [f"instance:{gone[0]}"],
                 "the quick pass's file_missing alert")
        assert not any("indexed images have no file" in line for line in pacs.server.output)
    finally:
        pacs.server.stop()
