"""The HL7 page: failed messages with their reason, as they arrived, and *process again* once
the cause is put right (audited); what waits for the HIS."""
from pacslite.core import audit
from pacslite.hl7 import handlers
from pacslite.ris import procedures
from tests.conftest import post
from tests.hl7kit import ack_code, orm, pid

HOSTILE = "<script>alert(1)</script>"


def test_a_failed_order_is_processed_again_once_the_catalogue_has_its_procedure(app, conn, client_as) -> None:
    app.config["HL7_SENDERS"] = {"HIS": {"hosts": ["127.0.0.1"]}}
    app.extensions["hl7_process_again"] = handlers.process_again  # as app.py wires it
    procedures.add_procedure(conn, audit.SYSTEM, app.config, {"code": "CT100", "modality": "CT", "name_zh": "头颅CT",
                                                              "name_en": "Head CT"})
    message = orm("NW", "ORD8001", pid("HA0001", "张三"), procedure=f"CT200^{HOSTILE}^L")
    answer = handlers.handle(conn, app.config, message.encode(), "127.0.0.1")
    assert ack_code(answer) == "AE"
    admin = client_as("admin")
    page = admin.get("/admin/hl7").get_data(as_text=True)
    assert "Not a procedure of this modality in the catalogue." in page
    message_id = conn.execute("SELECT id FROM hl7_messages").fetchone()[0]
    shown = admin.get(f"/admin/hl7/messages/{message_id}").get_data(as_text=True)
    assert HOSTILE not in shown and "&lt;script&gt;" in shown and 'id="process-again"' in shown

    again = post(admin, f"/admin/hl7/messages/{message_id}/process-again", follow_redirects=True)
    assert "failed again (AE)" in again.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM exams").fetchone()[0] == 0
    procedures.add_procedure(conn, audit.SYSTEM, app.config, {"code": "CT200", "modality": "CT", "name_zh": "胸部CT",
                                                              "name_en": "Chest CT"})
    accepted = post(admin, f"/admin/hl7/messages/{message_id}/process-again", follow_redirects=True)
    assert "The message was processed and accepted." in accepted.get_data(as_text=True)
    row = conn.execute("SELECT outcome, attempts FROM hl7_messages WHERE id = ?", (message_id,)).fetchone()
    assert tuple(row) == ("AA", 3)
    assert conn.execute("SELECT procedure_code, status FROM exams WHERE placer_order_number = 'ORD8001'"
                        ).fetchone()[:] == ("CT200", "ordered")
    audited = [(r["outcome"], r["actor"]) for r in audit.search(conn, action="hl7.process_again")]
    assert sorted(audited) == [("failure", "u_admin"), ("success", "u_admin")]
    refused = post(admin, f"/admin/hl7/messages/{message_id}/process-again", follow_redirects=True)
    assert "accepted already" in refused.get_data(as_text=True)
    assert "No message failed." in admin.get("/admin/hl7").get_data(as_text=True)
