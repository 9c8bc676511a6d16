"""The procedure catalogue (admin page and CLI), the exam form's procedure and station lists, each
modality's target and location on the modalities page, and the receipt they feed."""
from __future__ import annotations

import re
from datetime import timedelta

from pacslite.core import audit, clock
from pacslite.ris import aes, patients, procedures
from tests.conftest import EXAM_FORM, count, flask_cli, post, register

HEAD_CT = {"code": "CT-HEAD", "modality": "CT", "name_zh": "头颅CT平扫", "name_en": "CT head, plain",
           "body_part": "HEAD", "default_station_ae": "CT01", "target_hours": "6", "target_stat_hours": "0.5",
           "target_emergency_hours": "1", "preparation": "Remove hairpins and earrings."}


def stations(conn) -> None:
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT", "name": "CT room 1",
                                    "location": "Building B, floor 1, room 105"})
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT02", "modality": "CT"})
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DR01", "modality": "DX"})


def test_the_admin_adds_a_procedure_with_every_error_shown_at_once_then_edits_and_retires_it(
        client_as, conn) -> None:
    stations(conn)
    admin = client_as("admin")
    bad = post(admin, "/admin/procedures/new", {**HEAD_CT, "modality": "", "name_zh": "", "name_en": "",
                                                "default_station_ae": "DR01", "target_hours": "soon",
                                                "target_stat_hours": "-1"})
    page = bad.get_data(as_text=True)
    assert bad.status_code == 400
    for field in ("modality", "name_zh", "target_hours", "target_stat_hours"):
        assert f'id="e-{field}"' in page, field
    assert count(conn, "procedures") == 0
    wrong_station = post(admin, "/admin/procedures/new", {**HEAD_CT, "default_station_ae": "DR01"})
    assert wrong_station.status_code == 400 and 'id="e-default_station_ae"' in wrong_station.get_data(as_text=True)
    assert post(admin, "/admin/procedures/new", HEAD_CT).status_code == 302
    assert post(admin, "/admin/procedures/new", HEAD_CT).status_code == 400  # the code is taken
    listed = admin.get("/admin/procedures?modality=CT").get_data(as_text=True)
    assert "头颅CT平扫" in listed and "CT head, plain" in listed
    assert post(admin, "/admin/procedures/CT-HEAD", {**HEAD_CT, "target_hours": "4"}).status_code == 302
    change = audit.search(conn, action="procedure.update")[0]
    assert '"target_hours": [6.0, 4.0]' in change["detail"] and change["actor"] != audit.SYSTEM.name
    unchanged = procedures.get_procedure(conn, "CT-HEAD")
    assert post(admin, "/admin/procedures/CT-HEAD", {**HEAD_CT, "name_zh": "", "name_en": "", "target_urgent_hours": "x"}
                ).status_code == 400  # an edit that is wrong changes nothing
    assert dict(procedures.get_procedure(conn, "CT-HEAD")) == dict(unchanged)
    assert post(admin, "/admin/procedures/CT-NONE/active", {"active": "0"}).status_code == 404
    assert post(admin, "/admin/procedures/CT-HEAD/active", {"active": "0"}).status_code == 302
    assert procedures.catalogue_for(conn, "CT") == []
    assert client_as("registrar").get("/admin/procedures").status_code == 403


def test_the_exam_form_lists_the_modality_procedures_and_stations_and_refuses_others(client_as, conn) -> None:
    stations(conn)
    procedures.add_procedure(conn, audit.SYSTEM, {"MODALITIES": [{"code": "CT", "dicom": "CT"}]}, HEAD_CT)
    desk = client_as("registrar")
    choices = desk.get("/exams/choices?modality=CT", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'name="procedure_code"' in choices and 'value="CT-HEAD"' in choices
    assert re.findall(r'<option value="(\w+)"', choices.split('name="station_ae"')[1]) == ["CT01", "CT02"]
    assert "DR01" not in choices
    no_catalogue = desk.get("/exams/choices?modality=DR", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'name="procedure"' in no_catalogue and 'value="DR01"' in no_catalogue
    # a typed procedure, an unknown station, a DR station: refused, each under its field, nothing registered
    for change, field in (({"procedure_code": ""}, "procedure_code"),
                          ({"procedure_code": "CT-HEAD", "station_ae": "DR99"}, "station_ae"),
                          ({"procedure_code": "CT-HEAD", "station_ae": "DR01"}, "station_ae")):
        response = post(desk, "/exams/new", {**EXAM_FORM, **change})
        assert response.status_code == 400 and f'id="e-{field}"' in response.get_data(as_text=True), change
    assert count(conn, "exams") == 0
    accession = register(desk, procedure_code="CT-HEAD", body_part="", station_ae="", source="emergency",
                         priority="stat")
    exam = patients.get_exam(conn, accession)
    assert (exam["procedure"], exam["procedure_code"], exam["body_part"], exam["station_ae"]) == (
        "CT head, plain", "CT-HEAD", "HEAD", "CT01")  # the department's language (en here), the defaults
    assert exam["target_hours"] == 0.5  # emergency 1 h, STAT 0.5 h: the shorter


def test_the_receipt_prints_the_station_location_the_preparation_and_the_catalogue_target(client_as, conn) -> None:
    stations(conn)
    procedures.add_procedure(conn, audit.SYSTEM, {"MODALITIES": [{"code": "CT", "dicom": "CT"}]}, HEAD_CT)
    desk = client_as("registrar")
    accession = register(desk, procedure_code="CT-HEAD", source="emergency", priority="stat",
                         scheduled_date="2026-11-29", scheduled_time="10:00")
    receipt = desk.get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert "Building B, floor 1, room 105" in receipt and "(CT01)" in receipt
    assert "Remove hairpins and earrings." in receipt
    assert "2026-11-29 10:30" in receipt  # scheduled 10:00 + the STAT target of 0.5 h, not 8 h
    assert "STAT" in receipt.split('id="receipt-priority"')[1][:80]


def test_targets_follow_the_procedure_then_the_configuration_then_the_modalities_page(app, conn,
                                                                                          client_as) -> None:
    settings = app.config
    procedure = procedures.add_procedure(conn, audit.SYSTEM, settings, {**HEAD_CT, "default_station_ae": ""})
    assert procedures.report_target(conn, settings, "CT", "outpatient", "routine", procedure) == 6
    assert procedures.report_target(conn, settings, "CT", "emergency", "routine", procedure) == 1
    assert procedures.report_target(conn, settings, "CT", "outpatient", "urgent", procedure) == 2  # configured cap
    assert procedures.report_target(conn, settings, "CT", "outpatient", "routine") == 8  # the configured CT
    admin = client_as("admin")
    bad = post(admin, "/admin/modalities/targets/CT", {"turnaround_hours": "0", "location": "x"})
    assert bad.status_code == 400 and "More than 0" in bad.get_data(as_text=True)
    assert post(admin, "/admin/modalities/targets/PET", {"turnaround_hours": "2"}).status_code == 404
    assert procedures.modality_setting(conn, "CT") is None and not audit.search(conn, action="modality.settings")
    assert post(admin, "/admin/modalities/targets/CT", {"turnaround_hours": "3", "location": "Room 105"}
                ).status_code == 302
    assert procedures.report_target(conn, settings, "CT", "outpatient", "routine") == 3
    assert '"turnaround_hours": [8.0, 3.0]' in audit.search(conn, action="modality.settings")[0]["detail"]
    page = admin.get("/admin/modalities").get_data(as_text=True)
    assert 'value="3"' in page.split('id="target-CT"')[1][:600] and "Room 105" in page
    procedures.set_active(conn, audit.SYSTEM, "CT-HEAD", False)  # CT takes a typed procedure again
    accession = register(client_as("registrar"))  # no catalogue entry used: the page's 3 h, fixed on the exam
    exam = patients.get_exam(conn, accession)
    assert exam["target_hours"] == 3
    receipt = client_as("registrar").get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert "Room 105" in receipt
    ready = clock.from_db(exam["scheduled_at"]) + timedelta(hours=3)
    assert ready.astimezone(clock.zone("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M") in receipt


def test_the_cli_adds_lists_and_imports_the_catalogue_all_or_nothing(tmp_path) -> None:
    instance = tmp_path / "instance"
    assert flask_cli(instance, "ae", "add", "CT01", "--modality", "CT").returncode == 0
    added = flask_cli(instance, "procedure", "add", "CT-CHEST", "--modality", "CT", "--name-zh", "胸部CT平扫",
                      "--station", "CT01", "--target", "8", "--preparation", "无需空腹")
    assert added.returncode == 0, added.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("code,modality,name_zh,target_hours\nCT-ABD,CT,腹部CT,4\nMR-X,PET,,soon\n", encoding="utf-8")
    refused = flask_cli(instance, "procedure", "import", str(bad))
    assert refused.returncode != 0
    assert "line 3, modality" in refused.stderr and "line 3, target_hours" in refused.stderr
    good = tmp_path / "good.csv"
    good.write_text("code,modality,name_zh,name_en,target_hours\nCT-ABD,CT,腹部CT,CT abdomen,4\n"
                    "CT-CHEST,CT,胸部CT平扫,CT chest,6\n", encoding="utf-8")
    imported = flask_cli(instance, "procedure", "import", str(good))
    assert imported.returncode == 0 and "1 added, 1 updated" in imported.stdout, imported.stderr
    listed = flask_cli(instance, "procedure", "list").stdout
    assert "CT-ABD" in listed and "CT-CHEST" in listed and "6 h" in listed and "CT-MR" not in listed


def test_exams_from_before_the_catalogue_get_their_target_once_at_start_up(app, conn, client_as) -> None:
    """An upgraded department's exams have no target of their own: the first start gives each
    the one the configuration gives it (audited once), and later starts find nothing to do."""
    from pacslite import create_app
    desk = client_as("registrar")
    routine, stat = register(desk), register(desk, patient_id="P0002", priority="stat")
    with conn:  # as the exams of an older pacslite are
        conn.execute("UPDATE exams SET target_hours = NULL")
    create_app({"INSTANCE_DIR": app.config["INSTANCE_DIR"], "TIMEZONE": "Asia/Shanghai", "DEFAULT_LANGUAGE": "en",
                "STORAGE_DIR": app.config["STORAGE_DIR"]})
    targets = dict(conn.execute("SELECT accession_number, target_hours FROM exams").fetchall())
    assert targets == {routine: 8.0, stat: 1.0}  # CT 8 h; STAT 1 h
    assert [r["detail"] for r in audit.search(conn, action="exam.targets")] == ['{"exams": 2, "rule": "configuration"}']
    create_app({"INSTANCE_DIR": app.config["INSTANCE_DIR"], "TIMEZONE": "Asia/Shanghai", "DEFAULT_LANGUAGE": "en",
                "STORAGE_DIR": app.config["STORAGE_DIR"]})
    assert len(audit.search(conn, action="exam.targets")) == 1
