"""The JSON API with bearer tokens, and the command line as a user runs it (`flask --app app …`)."""

import pytest

from pacslite.core import audit
from pacslite.ris import aes, patients, procedures, users
from tests.conftest import count, flask_cli, login, make_user

BODY = {"patient": {"patient_id": "HIS001", "name": "赵六", "sex": "F", "birth_date": "1975-03-04",
                    "phone": "13900000000"},
        "modality": "MR", "source": "inpatient", "procedure": "Brain MRI", "body_part": "HEAD",
        "requesting_department": "Neurology", "requesting_physician": "Dr Wang", "priority": "urgent",
        "scheduled_at": "2026-11-25T14:00:00+08:00", "station_ae": ""}


@pytest.fixture
def token(conn) -> str:
    make_user(conn, "his", "registrar")
    return users.create_token(conn, audit.SYSTEM, "his")


def test_register_through_the_api(app, conn, token) -> None:
    client = app.test_client()
    response = client.post("/api/v1/exams", json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.json
    data = response.json
    assert data["patient_id"] == "HIS001" and data["status"] == "scheduled" and data["patient_created"] is True
    assert patients.is_valid_accession(data["accession_number"], "A")
    assert data["study_instance_uid"].startswith("2.25.")
    assert data["scheduled_at"] == "2026-11-25T06:00:00+00:00"
    got = client.get(f"/api/v1/exams/{data['accession_number']}", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200
    assert got.json["status"] == "scheduled" and got.json["images"] == {"series": 0, "instances": 0, "expected": None}
    row = audit.search(conn, action="exam.register")[0]
    assert row["actor"] == "his" and row["patient_id"] == "HIS001"


def test_the_api_registers_by_procedure_code_and_refuses_what_the_catalogue_does_not_have(app, conn, token) -> None:
    """Once MR has a catalogue, the API names a procedure by code (its name, body part, station
    and target come from the catalogue); an unknown code, a typed name or a station that is not an
    MR AE get a 400 naming the field, and register nothing."""
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "MR1", "modality": "MR"})
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT1", "modality": "CT"})
    procedures.add_procedure(conn, audit.SYSTEM, app.config, {
        "code": "MR-HEAD", "modality": "MR", "name_zh": "头颅MR平扫", "name_en": "MRI brain", "body_part": "HEAD",
        "default_station_ae": "MR1", "target_hours": "24", "target_urgent_hours": "4",
        "preparation": "Remove all metal."})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for change, field in (({"procedure_code": "MR-KNEE"}, "procedure_code"), ({}, "procedure_code"),
                          ({"procedure_code": "MR-HEAD", "station_ae": "CT1"}, "station_ae"),
                          ({"procedure_code": "MR-HEAD", "station_ae": "MR99"}, "station_ae")):
        response = client.post("/api/v1/exams", json={**BODY, **change, "body_part": ""}, headers=headers)
        assert (response.status_code, response.json["field"]) == (400, field), change
    assert count(conn, "exams") == 0
    response = client.post("/api/v1/exams", json={**BODY, "procedure_code": "MR-HEAD", "body_part": ""},
                           headers=headers)
    assert response.status_code == 201, response.json
    exam = response.json
    name = {"zh": "头颅MR平扫", "en": "MRI brain"}[app.config["DEFAULT_LANGUAGE"][:2]]  # the department's
    assert (exam["procedure"], exam["procedure_code"], exam["body_part"], exam["station_ae"]) == (
        name, "MR-HEAD", "HEAD", "MR1")
    assert exam["report_target_hours"] == 4  # urgent: the shorter of 24 and 4


def test_the_api_updates_changed_demographics_with_an_audit_record(app, conn, token) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/exams", json=BODY, headers=headers).status_code == 201
    changed = {**BODY, "patient": {**BODY["patient"], "name": "赵陆", "phone": "1"}}
    response = client.post("/api/v1/exams", json=changed, headers=headers)
    assert response.status_code == 400 and response.json["field"] == "patient.phone"
    changed["patient"]["phone"] = "010 555"
    response = client.post("/api/v1/exams", json=changed, headers=headers)
    assert response.status_code == 201 and response.json["patient_created"] is False
    assert patients.get_patient(conn, "HIS001")["name"] == "赵陆"
    update = audit.search(conn, action="patient.update")[0]
    assert "赵六" in update["detail"] and "赵陆" in update["detail"]


@pytest.mark.parametrize("change, field", [
    ({"modality": "PET"}, "modality"), ({"source": "walk_in"}, "source"), ({"procedure": ""}, "procedure"),
    ({"scheduled_at": "soon"}, "scheduled_at"), ({"patient": {**BODY["patient"], "sex": "male"}}, "patient.sex"),
    ({"patient": {**BODY["patient"], "birth_date": "04.03.1975"}}, "patient.birth_date"),  # day first: refused, not misread
    ({"patient": {**BODY["patient"], "patient_id": "../x"}}, "patient.patient_id"),
    ({"patient": {**BODY["patient"], "name": 42}}, "patient.name"),
    ({"patient": "HIS001"}, "patient"),
])
def test_invalid_requests_answer_400_naming_the_field(app, conn, token, change, field) -> None:
    before = (count(conn, "exams"), count(conn, "patients"), count(conn, "audit_log"))
    response = app.test_client().post("/api/v1/exams", json={**BODY, **change},
                                      headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.json["field"] == field and response.json["error"]
    assert (count(conn, "exams"), count(conn, "patients"), count(conn, "audit_log")) == before


def test_the_api_needs_a_valid_token_and_the_role(app, conn, token) -> None:
    client = app.test_client()
    assert client.post("/api/v1/exams", json=BODY).status_code == 401
    assert client.post("/api/v1/exams", json=BODY, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/api/v1/exams", data="not json", headers={"Authorization": f"Bearer {token}"}).status_code == 400
    make_user(conn, "ward", "clinician")
    ward_token = users.create_token(conn, audit.SYSTEM, "ward")
    response = client.post("/api/v1/exams", json=BODY, headers={"Authorization": f"Bearer {ward_token}"})
    assert response.status_code == 403
    assert audit.search(conn, action="access.denied")[0]["actor"] == "ward"
    assert count(conn, "exams") == 0
    assert client.get("/api/v1/exams/A000", headers={"Authorization": f"Bearer {ward_token}"}).status_code == 404


def test_a_browser_session_cannot_use_the_api(app, conn) -> None:
    """Without this, a forged cross-site request could ride on the desk's session cookie."""
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    assert login(client, "desk").status_code == 302
    assert client.post("/api/v1/exams", json=BODY).status_code == 401
    assert count(conn, "exams") == 0


def test_cli_user_add_and_token_create(tmp_path) -> None:
    instance = tmp_path / "instance"
    added = flask_cli(instance, "user", "add", "lin", "--role", "registrar", "--role", "technologist",
                      "--name", "林医生", stdin="s3cret-password\n")
    assert added.returncode == 0, added.stderr
    assert "created user lin with roles registrar, technologist" in added.stdout
    assert "first start" in added.stdout  # the empty instance got its admin too
    short = flask_cli(instance, "user", "add", "bad", "--role", "registrar", stdin="short\n")
    assert short.returncode != 0 and "password" in short.stderr
    unknown_role = flask_cli(instance, "user", "add", "x", "--role", "janitor", stdin="s3cret-password\n")
    assert unknown_role.returncode != 0

    created = flask_cli(instance, "token", "create", "lin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("psl_") and " " not in token
    assert "first start" not in created.stdout
    assert flask_cli(instance, "token", "create", "nobody").returncode != 0

    from pacslite import create_app
    app = create_app({"INSTANCE_DIR": str(instance)})
    response = app.test_client().post("/api/v1/exams", json=BODY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    verified = flask_cli(instance, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout


def test_cli_configures_modalities_and_refuses_bad_input(tmp_path) -> None:
    instance = tmp_path / "instance"
    added = flask_cli(instance, "ae", "add", "CT01", "--host", "10.1.2.3", "--port", "4006", "--charset", "GB18030")
    assert added.returncode == 0 and ("added modality CT01 (10.1.2.3:4006, accepted from 10.1.2.3, GB18030,"
                                      " may store,worklist,mpps,commitment)") in added.stdout, added.stderr
    # without --may: a modality's rights; with a host: accepted from it only
    station = flask_cli(instance, "ae", "add", "READ01", "--may", "query,retrieve")
    assert station.returncode == 0 and "may query,retrieve" in station.stdout, station.stderr
    updated = flask_cli(instance, "ae", "update", "READ01", "--port", "11113", "--may", "retrieve,query,store")
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    assert updated.returncode == 0 and "(-:11113, accepted from any host, ISO_IR 192, may store,query,retrieve)" \
        in updated.stdout
    for bad in (["CT01"], ["BAD\\AE"], ["CT02", "--port", "0"], ["CT02", "--charset", "SJIS"], ["CT02", "--may", "all"],
                ["CT02", "--also-from", "a;b"], ["CT02", "--certificate", str(bogus)]):
        refused = flask_cli(instance, "ae", "add", *bad)
        assert refused.returncode != 0 and "Error" in refused.stderr, bad
    assert "no modality NOPE" in flask_cli(instance, "ae", "update", "NOPE", "--may", "query").stderr
    assert flask_cli(instance, "ae", "remove", "READ01").returncode == 0
    listed = flask_cli(instance, "ae", "list")
    assert [line.split()[0] for line in listed.stdout.splitlines() if line.strip()] == ["CT01"]
    missing = flask_cli(instance, "ae", "remove", "NOPE")
    assert missing.returncode != 0 and "no modality NOPE" in missing.stderr
    assert flask_cli(instance, "ae", "remove", "CT01").returncode == 0
    assert flask_cli(instance, "ae", "list").stdout.strip() == ""
