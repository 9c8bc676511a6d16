"""Every route, as every role and anonymously, against the matrix the administrator guide documents."""
from __future__ import annotations

import re

import pytest

from pacslite.core import audit, clock
from pacslite.ris import aes, critical, documents, patients, procedures, report_templates, users
from pacslite.pacs import archive, filing, key_images, refiling, routing
from pacslite import sweep
from pacslite.pacs.index import Source
from tests.conftest import ROLES, ROOT, csrf_token, image_bytes, make_user, register



def documented_matrix() -> dict[tuple[str, str], dict[str, bool]]:
    text = (ROOT / "docs" / "admin-guide.md").read_text(encoding="utf-8")
    block = text.split("<!-- access-matrix:start -->")[1].split("<!-- access-matrix:end -->")[0]
    lines = [line for line in block.strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["route", "anonymous", *ROLES]
    matrix = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        method, path = re.match(r"`(\w+) ([^`]+)`", cells[0]).groups()
        matrix[(method, path)] = {who: mark == "✓" for who, mark in zip(header[1:], cells[1:])}
    return matrix


def test_every_route_is_documented(app) -> None:
    registered = {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
                  for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert registered == set(documented_matrix())


def test_every_view_declares_its_access(app) -> None:
    for endpoint, view in app.view_functions.items():
        if endpoint != "static":
            assert getattr(view, "access", None), f"{endpoint} declares no access"


def _refiled_study(app, conn, accession: str, tmp_path) -> tuple[int, int]:
    """A study that arrived without an accession number, then re-filed to the exam."""
    from tests.dicomkit import make_ct
    path = tmp_path / "matrix.dcm"
    make_ct(path, patient_id="P0001")
    outcome = filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01"))
    study_id = conn.execute("SELECT s.id FROM studies s JOIN series se ON se.study_ref = s.id JOIN instances i"
                            " ON i.series_ref = se.id WHERE i.sop_instance_uid = ?",
                            (outcome.sop_instance_uid,)).fetchone()[0]
    refiling_id = refiling.refile(conn, audit.SYSTEM, app.config, study_id,
                                        {"accession_number": accession, "reason": "matrix"})
    return study_id, refiling_id


def _an_import(app, conn) -> int:
    from pathlib import Path
    from pacslite.pacs import importing
    folder, refused = importing.stage(app.config, [("notes.txt", lambda path: path.write_bytes(b"not an image"))])
    return importing.create(conn, audit.SYSTEM, Path(folder), refused)


def _an_unlinked_step(app, conn) -> int:
    """A procedure step a modality reported for no known exam."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid
    from pacslite.ris import mpps
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.ScheduledStepAttributesSequence = Sequence([Dataset()])
    ds.PatientID = "UNSCHEDULED"
    return mpps.create(conn, app.config, audit.Actor("ae:MATRIX_CT"), generate_uid(), ds)["id"]


def _an_alert(app, conn) -> int:
    """The sweep, run as if two days had passed: an exam without images raises an alert."""
    from datetime import timedelta
    from pacslite.ris import patients
    from tests.conftest import EXAM_FORM
    patients.register_exam(conn, audit.SYSTEM, app.config, EXAM_FORM, EXAM_FORM, confirm_demographics=True)
    sweep.run(conn, app.config, now=clock.now() + timedelta(days=2))
    return conn.execute("SELECT id FROM alerts WHERE rule = 'missing_images'").fetchone()[0]


def _a_merge(conn) -> int:
    """Two records of one person, merged."""
    from pacslite.pacs import merging
    for patient_id in ("MATRIX1", "MATRIX2"):
        patients.create_patient(conn, audit.SYSTEM, {"patient_id": patient_id, "name": "合并", "sex": "M"})
    return merging.merge_patients(conn, audit.SYSTEM, "MATRIX1", "MATRIX2", {"reason": "matrix"})


def _a_failed_message(conn) -> int:
    """An HL7 message refused, kept with its reason."""
    from pacslite.ris import messages
    messages.record_refused(conn, messages.Header("HIS^HOSP", "MATRIX-1", "ADT^A04"), b"MSH|^~\\&|HIS", "127.0.0.1",
                            messages.Outcome(messages.ERROR, "matrix", messages.DATA_TYPE), lambda outcome: b"MSA|AE")
    return conn.execute("SELECT id FROM hl7_messages").fetchone()[0]


def _a_critical_finding(conn, accession: str) -> int:
    from pacslite.core.db import transaction
    with transaction(conn):
        return critical.record(conn, audit.SYSTEM, patients.get_exam(conn, accession), "x", clock.to_db(clock.now()), 15)


@pytest.fixture
def world(app, conn, client_as, tmp_path):
    desk = client_as("registrar", username="seed_desk")
    accession = register(desk)
    form_id = documents.attach(conn, audit.SYSTEM, app.config, accession, image_bytes(), "form.png")
    target_user = make_user(conn, "target_user", "clinician")
    ae = aes.add_ae(conn, audit.SYSTEM, {"ae_title": "MATRIX_CT", "host": "127.0.0.1", "port": 104})
    template_id = report_templates.save(conn, audit.SYSTEM, app.config, {
        "level": "department", "modality": "CT", "name": "Normal chest", "findings": "No abnormality."})
    study_id, refiling_id = _refiled_study(app, conn, accession, tmp_path)
    values = {"patient_id": "P0001", "accession": accession, "int:form_id": str(form_id),
              "int:user_id": str(target_user.id), "int:ae_id": str(ae["id"]), "int:template_id": str(template_id), "int:qc_id": "1",
              "int:study_id": str(study_id), "int:refiling_id": str(refiling_id),
              "int:alert_id": str(_an_alert(app, conn)),
              "int:finding_id": str(_a_critical_finding(conn, accession)),
              "int:series_id": str(conn.execute("SELECT id FROM series").fetchone()[0]),
              "int:instance_id": str(conn.execute("SELECT id FROM instances").fetchone()[0]),
              "int:key_id": str(key_images.mark(conn, audit.SYSTEM, conn.execute("SELECT id FROM instances").fetchone()[0],
                                                {"note": "matrix"})),
              "int:volume_id": str(archive.plan_volume(conn, audit.SYSTEM, {**app.config, "ARCHIVE_AGE_DAYS": 0})),
              "int:job_id": str(conn.execute("SELECT id FROM jobs").fetchone()[0]),
              "int:import_id": str(_an_import(app, conn)),
              "int:rule_id": str(routing.add_rule(conn, audit.SYSTEM, {"destination_ae": "MATRIX_CT"})),
              "int:step_id": str(_an_unlinked_step(app, conn)), "frames": "1", "tag": "7FE00010",
              "int:merge_id": str(_a_merge(conn)), "int:message_id": str(_a_failed_message(conn)),
              "path:path": "viewer", "username": "target_user", "modality": "CT", "station": "MATRIX_CT",
              "room": "MATRIX_CT", "key": "not-a-key", "int:entry_id": "999999", "int:device_id": "999999",
              "procedure_code": procedures.add_procedure(conn, audit.SYSTEM, app.config, {
                  "code": "MATRIX-CT", "modality": "DSA", "name_en": "Matrix"})["code"]}
    filed = conn.execute("SELECT s.study_instance_uid, se.series_instance_uid, i.sop_instance_uid FROM instances i"
                         " JOIN series se ON se.id = i.series_ref JOIN studies s ON s.id = se.study_ref"
                         " WHERE s.id = ?", (study_id,)).fetchone()
    values.update(study=filed[0], series=filed[1], instance=filed[2])
    clients = {"anonymous": app.test_client()}
    tokens = {}
    for role in ROLES:
        clients[role] = client_as(role, username=f"matrix_{role}")
        tokens[role] = users.create_token(conn, audit.SYSTEM, f"matrix_{role}")
    return values, clients, tokens


def denied_rows(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'access.denied'").fetchone()[0]


def test_matrix(app, conn, world) -> None:
    values, clients, tokens = world
    mismatches = []
    # Logging out ends the clients' sessions, so it goes last.
    rows = sorted(documented_matrix().items(), key=lambda item: item[0] == ("POST", "/logout"))
    for (method, path), expected in rows:
        url = re.sub(r"<([^>]+)>", lambda m: values[m.group(1)], path)
        is_api = path.startswith("/api/")
        for who, client in clients.items():
            headers = {}
            if is_api and who != "anonymous":
                headers["Authorization"] = f"Bearer {tokens[who]}"
            data = None
            if method == "POST" and not is_api:
                data = {"csrf_token": csrf_token(client, "/login")}
            before = denied_rows(conn)
            if is_api and method == "POST":
                response = client.post(url, json={}, headers=headers)
            else:
                response = client.open(url, method=method, data=data, headers=headers)
            audited_denial = denied_rows(conn) > before
            if who == "anonymous":
                sent_to_login = response.status_code == 302 and response.location.startswith("/login")
                allowed = not sent_to_login and response.status_code != 401
            else:
                assert (response.status_code == 403) == audited_denial, (method, url, who, response.status_code)
                allowed = response.status_code not in (401, 403)
            if allowed != expected[who]:
                mismatches.append((method, path, who, response.status_code))
    assert mismatches == []
