"""The sweep: each rule, no duplicates, alerts that clear themselves, resolving, API, CLI."""
from __future__ import annotations

import json
from datetime import timedelta

from pydicom.uid import generate_uid

from pacslite.core import audit, clock
from pacslite.ris import patients, users
from pacslite.pacs import filing
from pacslite import sweep
from pacslite.pacs.index import Source
from tests.conftest import EXAM_FORM, csrf_token, flask_cli
from tests.dicomkit import make_ct


def register(app, conn, **changes) -> str:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data,
                                  confirm_demographics=True).accession_number


def add_image(app, conn, tmp_path, **fields) -> None:
    path = tmp_path / f"{generate_uid()}.dcm"
    make_ct(path, **fields)
    filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01", "10.0.0.5"))


def open_alerts(conn) -> set[tuple[str, str]]:
    return {(a["rule"], a["accession_number"] or a["study_patient_id"]) for a in sweep.list_alerts(conn)}


def test_each_rule_once_and_alerts_clear_themselves(app, conn, tmp_path) -> None:
    missing = register(app, conn, patient_id="S1")
    overdue = register(app, conn, patient_id="S2", modality="DR")
    add_image(app, conn, tmp_path, accession=overdue, patient_id="S2")
    add_image(app, conn, tmp_path, accession="NOSUCH", patient_id="S3")  # quarantined
    cancelled = register(app, conn, patient_id="S4")
    add_image(app, conn, tmp_path, accession=cancelled, patient_id="S4")
    with conn:  # an inconsistency from before pacslite's rules: images on a cancelled exam
        conn.execute("UPDATE exams SET status = 'cancelled' WHERE accession_number = ?", (cancelled,))

    sweep.run(conn, app.config)  # only the conflict is there at once; nothing is late yet
    assert open_alerts(conn) == {("conflict", cancelled)}
    in_two_hours = clock.now() + timedelta(hours=2)
    sweep.run(conn, app.config, now=in_two_hours)  # DR's target is 1 h; quarantine after 1 h
    assert open_alerts(conn) == {("overdue_report", overdue), ("unfiled_images", "S3"), ("conflict", cancelled)}
    later = clock.now() + timedelta(days=8)
    first = sweep.run(conn, app.config, now=later)
    assert {("missing_images", missing), ("stale_registration", missing)} <= open_alerts(conn)
    assert first.opened == 2
    again = sweep.run(conn, app.config, now=later)
    assert (again.opened, again.cleared) == (0, 0)
    assert conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 5

    add_image(app, conn, tmp_path, accession=missing, patient_id="S1")  # the images arrive
    cleared = sweep.run(conn, app.config, now=later)
    assert cleared.cleared == 2
    rules_of_missing = {a["rule"] for a in sweep.list_alerts(conn, state="cleared")}
    assert rules_of_missing == {"missing_images", "stale_registration"}


def test_resolving_needs_a_note_and_is_not_raised_again(app, conn, client_as) -> None:
    accession = register(app, conn)
    later = clock.now() + timedelta(days=2)
    sweep.run(conn, app.config, now=later)
    [alert] = sweep.list_alerts(conn)
    desk = client_as("registrar")
    token = csrf_token(desk, "/alerts")
    assert desk.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token, "resolution": ""}).status_code == 400
    done = desk.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token,
                                                              "resolution": "Patient postponed to Friday"})
    assert done.status_code == 302
    assert sweep.run(conn, app.config, now=later).opened == 0
    [resolved] = sweep.list_alerts(conn, state="resolved")
    assert (resolved["accession_number"], resolved["closed_by"], resolved["resolution"]) == \
        (accession, "u_registrar", "Patient postponed to Friday")
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'alert.resolve'").fetchone()[0] == 1
    ward = client_as("clinician")
    assert ward.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": csrf_token(ward, "/alerts"),
                                                              "resolution": "x"}).status_code == 403


def test_the_api_and_the_navigation_count(app, conn, client_as) -> None:
    accession = register(app, conn)
    sweep.run(conn, app.config, now=clock.now() + timedelta(days=2))
    user = users.create(conn, audit.SYSTEM, {"username": "his", "password": "Secret-pass-1", "roles": ["clinician"]})
    token = users.create_token(conn, audit.SYSTEM, user.username)
    answer = app.test_client().get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert [(a["rule"], a["accession_number"], a["state"]) for a in answer["items"]] == \
        [("missing_images", accession, "open")]
    assert app.test_client().get("/api/v1/alerts?state=bogus",
                                 headers={"Authorization": f"Bearer {token}"}).status_code == 400
    page = client_as("technologist").get("/exams").get_data(as_text=True)
    assert 'id="nav-alerts-count"><span class="count">1</span>' in page
    assert client_as("technologist").get("/alerts/count", headers={"HX-Request": "true"}).get_data(
        as_text=True).strip() == '<span class="count">1</span>'


def test_the_command_runs_one_sweep(app, conn, tmp_path) -> None:
    register(app, conn)
    with conn:
        conn.execute("UPDATE exams SET scheduled_at = ?", (clock.to_db(clock.now() - timedelta(days=2)),))
    result = flask_cli(tmp_path / "instance", "sweep", "run")
    assert result.returncode == 0 and "sweep: 1 alerts opened, 0 cleared, 1 open" in result.stdout, result.stderr
    again = flask_cli(tmp_path / "instance", "sweep", "run")
    assert "sweep: 0 alerts opened, 0 cleared, 1 open" in again.stdout


def test_resolving_an_unknown_or_closed_alert_is_refused(app, conn, client_as) -> None:
    register(app, conn)
    sweep.run(conn, app.config, now=clock.now() + timedelta(days=2))
    [alert] = sweep.list_alerts(conn)
    desk = client_as("registrar")
    token = csrf_token(desk, "/alerts")
    assert desk.post("/alerts/999999/resolve", data={"csrf_token": token, "resolution": "x"}).status_code == 404
    assert desk.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token, "resolution": "done"}).status_code == 302
    again = desk.post(f"/alerts/{alert['id']}/resolve", data={"csrf_token": token, "resolution": "twice"})
    assert again.status_code == 409 and "already closed" in again.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'alert.resolve'").fetchone()[0] == 1


def test_a_malformed_statistics_period_says_so_and_shows_the_last_30_days(app, client_as) -> None:
    from pacslite import statistics
    admin = client_as("admin")
    start, end = statistics.default_period(app.config)
    for query in ("start=2026-13-01&end=2026-12-01", "start=2026-11-20&end=2026-11-01", "start=x"):
        page = admin.get(f"/statistics?{query}").get_data(as_text=True)
        assert "That is not a valid period" in page
        assert f'name="start" value="{start.isoformat()}"' in page and f'name="end" value="{end.isoformat()}"' in page
    assert "That is not a valid period" not in admin.get("/statistics?start=2026-11-01&end=2026-11-20").get_data(
        as_text=True)
    assert admin.get("/statistics.csv?start=2026-11-20&end=2026-11-01").status_code == 400


def test_missing_images_count_from_the_scheduled_time_not_the_registration(app, conn) -> None:
    """An MR booked for the day after tomorrow, registered today, is not late today nor tomorrow."""
    booked = clock.now() + timedelta(days=2)
    accession = register(app, conn, patient_id="S9", scheduled_at=booked.isoformat())
    sweep.run(conn, app.config, now=clock.now() + timedelta(days=1, hours=1))
    assert open_alerts(conn) == set()
    sweep.run(conn, app.config, now=booked + timedelta(hours=25))
    assert open_alerts(conn) == {("missing_images", accession)}


def test_a_backup_retention_that_would_not_fit_its_disk_is_raised_before_a_backup_fails(app, conn, client_as) -> None:
    from pacslite.pacs import integrity
    space = integrity.backup_space(conn, app.config)
    assert space.fits and space.database_bytes > 0
    # keeping as many copies as the disk holds, and two more: the next backups would not fit
    app.config["BACKUP_KEEP"] = space.available_bytes // space.database_bytes + 1
    sweep.run(conn, app.config)
    alert = conn.execute("SELECT state, detail FROM alerts WHERE rule = 'backup_space'").fetchone()
    assert alert["state"] == "open"
    detail = json.loads(alert["detail"])
    assert detail["needed_bytes"] > detail["available_bytes"] and detail["fit"] < detail["keep"]
    page = client_as("admin").get("/alerts").get_data(as_text=True)
    assert "Backups will not fit on their disk" in page and "Lower BACKUP_KEEP" in page

    app.config["BACKUP_KEEP"] = 14
    outcome = sweep.run(conn, app.config)
    assert outcome.cleared == 1
    assert conn.execute("SELECT state FROM alerts WHERE rule = 'backup_space'").fetchone()[0] == "cleared"
