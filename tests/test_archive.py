"""The archive: capacity and forecast, the high-water mark; volumes, off-site copy, scrub, backup."""
from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from pacslite import audit, capacity, filing, patients, sweep
from pacslite.index import Source
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
    assert f'id="days-until-full"><strong>{round(days)}</strong>' in page
    assert client_as("technologist").get("/archive/").status_code == 403
