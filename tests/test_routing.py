"""Routing (issue 14): forward rules, "send to…" and the outbound queue, as the pages, the
command line and the queue's thread see them; delivery to real peers is in test_retrieve.py."""
from __future__ import annotations

import pytest

from pacslite.core import audit
from pacslite.ris import aes
from pacslite.pacs import filing, routing
from pacslite import sweep
from pacslite.dicom import sender
from pacslite.pacs.index import Source
from tests.conftest import flask_cli, free_port, post, register
from tests.dicomkit import make_ct


@pytest.fixture
def closed_port_ae(conn):
    """A destination nobody listens on (loopback, a port just freed)."""
    return aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DOWN01", "host": "127.0.0.1", "port": free_port(),
                                           "rights": ""})


def test_a_rule_needs_a_configured_destination_and_bad_input_changes_nothing(app, conn, client_as, closed_port_ae):
    admin = client_as("admin", username="route_admin")
    for bad in ({"destination_ae": "NOWHERE"}, {"destination_ae": ""},
                {"destination_ae": "DOWN01", "calling_ae": "BAD\\AE"}, {"destination_ae": "DOWN01", "modality": "C T"}):
        assert post(admin, "/admin/forwarding/rules", bad).status_code == 400, bad
    assert routing.list_rules(conn) == []
    assert post(admin, "/admin/forwarding/rules", {"destination_ae": "DOWN01", "modality": "ct"}).status_code == 302
    [rule] = routing.list_rules(conn)
    assert (rule["calling_ae"], rule["modality"], rule["destination_ae"]) == ("", "CT", "DOWN01")
    page = admin.get("/admin/forwarding").get_data(as_text=True)
    assert "DOWN01" in page and 'id="rules"' in page
    assert post(admin, "/admin/forwarding/rules", {"destination_ae": "DOWN01", "modality": "CT"}).status_code == 400
    assert post(admin, f"/admin/forwarding/rules/{rule['id']}/remove").status_code == 302
    assert routing.list_rules(conn) == []
    actions = [r["action"] for r in audit.search(conn, actor="route_admin")]
    assert actions.count("forward.rule_add") == 1 and actions.count("forward.rule_remove") == 1


def test_the_command_line_manages_rules(app, closed_port_ae, tmp_path):
    instance = tmp_path / "instance"
    added = flask_cli(instance, "forward", "add", "--modality", "ct", "--to", "DOWN01")
    assert added.returncode == 0 and "-> DOWN01" in added.stdout, added.stderr
    assert "any AE" in flask_cli(instance, "forward", "list").stdout
    assert flask_cli(instance, "forward", "add", "--to", "NOWHERE").returncode != 0
    assert flask_cli(instance, "forward", "remove", "999").returncode != 0
    assert flask_cli(instance, "forward", "remove", "1").returncode == 0


def file_a_ct(app, conn, accession: str, tmp_path, calling: str = "CT01", study_uid: str | None = None,
              name: str = "") -> None:
    path = tmp_path / f"{name or accession}.dcm"
    make_ct(path, accession=accession, patient_id="P0001", name="ZHANG^SAN", sex="M", birth_date="19800203",
            study_uid=study_uid)
    outcome = filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source(calling, "10.0.0.1"))
    assert outcome.result == "filed"


def test_a_destination_that_stays_down_is_given_up_with_an_alert(app, conn, client_as, closed_port_ae, tmp_path):
    routing.add_rule(conn, audit.SYSTEM, {"modality": "CT", "destination_ae": "DOWN01"})
    accession = register(client_as("registrar"))
    file_a_ct(app, conn, accession, tmp_path, study_uid="1.2.826.0.1.3680043.10.999.77")
    file_a_ct(app, conn, accession, tmp_path, study_uid="1.2.826.0.1.3680043.10.999.77")  # its next image: one row
    [item] = conn.execute("SELECT * FROM outbound_queue").fetchall()
    assert item["state"] == routing.QUEUED
    settings = {**app.config, "FORWARD_DELAY_SECONDS": 0, "FORWARD_RETRY_FIRST_SECONDS": 0, "FORWARD_RETRY_HOURS": 1}
    assert routing.run_due(conn, settings, sender.send_to) == 1  # refused: queued again
    item = conn.execute("SELECT * FROM outbound_queue").fetchone()
    assert (item["state"], item["attempts"]) == (routing.QUEUED, 1) and "not sent" in item["last_error"]
    assert routing.run_due(conn, {**settings, "FORWARD_RETRY_HOURS": 0}, sender.send_to) == 1  # time is up
    item = conn.execute("SELECT * FROM outbound_queue").fetchone()
    assert (item["state"], item["attempts"]) == (routing.FAILED, 2)
    [alert] = sweep.list_alerts(conn)
    assert alert["rule"] == "forward_failed" and "DOWN01" in alert["detail"]
    # the technologist sees it on the exam page and may send by hand; a registrar may not
    tech = client_as("technologist")
    page = tech.get(f"/exams/{accession}").get_data(as_text=True)
    assert "DOWN01" in page and "Failed" in page and 'id="send-form"' in page
    assert post(tech, f"/exams/{accession}/send", {"destination_ae": "DOWN01"}).status_code == 302
    assert conn.execute("SELECT COUNT(*) FROM outbound_queue WHERE state = 'queued'").fetchone()[0] == 1
    assert post(tech, f"/exams/{accession}/send", {"destination_ae": "NOWHERE"}).status_code == 303
    assert post(client_as("registrar"), f"/exams/{accession}/send", {"destination_ae": "DOWN01"}).status_code == 403
    assert 'id="send-form"' not in client_as("registrar").get(f"/exams/{accession}").get_data(as_text=True)


def test_what_was_being_sent_when_pacslite_stopped_is_queued_again(app, conn, client_as, closed_port_ae, tmp_path):
    routing.add_rule(conn, audit.SYSTEM, {"destination_ae": "DOWN01"})
    file_a_ct(app, conn, register(client_as("registrar")), tmp_path)
    conn.execute("UPDATE outbound_queue SET state = 'sending'")
    assert routing.recover(conn) == 1
    assert conn.execute("SELECT state FROM outbound_queue").fetchone()[0] == routing.QUEUED


def test_an_image_filed_while_its_study_is_being_sent_is_sent_too(app, conn, client_as, tmp_path):
    """The queue's row is 'sending' when the study's next image is filed: once the send is done
    the study is queued again, so that image reaches the destination too (found by a flaky run
    of test_retrieve's routing scenario)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    received: list[str] = []

    def on_store(event):
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    port = free_port()
    listener = AE(ae_title="DEST01")
    listener.supported_contexts = AllStoragePresentationContexts
    server = listener.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DEST01", "host": "127.0.0.1", "port": port, "rights": ""})
        routing.add_rule(conn, audit.SYSTEM, {"modality": "CT", "destination_ae": "DEST01"})
        accession = register(client_as("registrar"))
        study_uid = "1.2.826.0.1.3680043.10.999.78"
        file_a_ct(app, conn, accession, tmp_path, study_uid=study_uid)
        settings = {**app.config, "FORWARD_DELAY_SECONDS": 0}

        def send_while_the_next_image_arrives(settings_, destination, rows, how):
            file_a_ct(app, conn, accession, tmp_path, study_uid=study_uid, name="next")
            return sender.send_to(settings_, destination, rows, how)

        assert routing.run_due(conn, settings, send_while_the_next_image_arrives) == 1
        rows = conn.execute("SELECT state, images_sent FROM outbound_queue ORDER BY id").fetchall()
        assert [tuple(r) for r in rows] == [(routing.SENT, 1), (routing.QUEUED, 0)]
        assert routing.run_due(conn, settings, sender.send_to) == 1
        rows = conn.execute("SELECT state, images_sent FROM outbound_queue ORDER BY id").fetchall()
        assert [tuple(r) for r in rows] == [(routing.SENT, 1), (routing.SENT, 2)]
        filed = {r[0] for r in conn.execute("SELECT sop_instance_uid FROM instances")}
        assert set(received) == filed and len(filed) == 2
    finally:
        server.shutdown()
