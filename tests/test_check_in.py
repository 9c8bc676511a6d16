"""The desk's check-in (签到) of exams the HIS ordered: scan, one key, the receipt prints."""
import re

from flask import Flask

from pacslite.core import audit
from pacslite.core.db import transaction
from pacslite.ris import orders
from tests.conftest import count, post

HOSTILE = '<script>alert(1)</script>'


def place(app: Flask, conn, placer: str, patient_id: str = "H0001", name: str = "周九",
          national_id: str = "110101199003078515", **exam) -> str:
    """An order as the HL7 listener places it (the same domain call, in the message's transaction)."""
    order = orders.Order("HIS", placer, "NW", exam={"modality": "CT", "procedure": "胸部CT平扫", "source": "outpatient",
                                                     "requesting_department": "呼吸内科", **exam})
    with transaction(conn):
        placed = orders.receive(conn, audit.Actor("hl7:HIS"), app.config,
                                {"patient_id": patient_id, "name": name, "sex": "M", "national_id": national_id},
                                order)
    return placed.accession_number


def test_a_scanned_card_finds_the_order_and_one_key_checks_it_in(app, conn, client_as) -> None:
    accession = place(app, conn, "ORD0001")
    place(app, conn, "ORD0002", patient_id="H0002", name=HOSTILE, national_id="")
    desk = client_as("registrar")
    page = desk.get("/check-in").get_data(as_text=True)
    assert page.count('class="primary check-in"') == 2  # both wait, today
    assert HOSTILE not in page and "&lt;script&gt;" in page
    found = desk.get("/check-in?q=110101199003078515").get_data(as_text=True)  # the ID card, scanned
    # the only match's button has the focus (Enter checks in); the scan box gives it up
    assert re.search(r'<button type="submit" class="primary check-in" autofocus>', found)
    assert not re.search(r'id="scan"[^>]*autofocus', found)
    assert f'/exams/{accession}/check-in' in found.split('id="check-in-found"')[1].split("</div>")[0]
    response = post(desk, f"/exams/{accession}/check-in")
    assert response.status_code == 302
    assert tuple(conn.execute("SELECT status, checked_in_at IS NOT NULL FROM exams WHERE accession_number = ?",
                        (accession,)).fetchone()) == ("scheduled", 1)
    assert [r["actor"] for r in audit.search(conn, action="exam.check_in")] == ["u_registrar"]
    after = desk.get(response.headers["Location"]).get_data(as_text=True)
    assert f"/exams/{accession}/receipt?print=1" in after.split('id="receipt-frame"')[1].split(">")[0]
    assert desk.get(response.headers["Location"]).get_data(as_text=True).count("print=1\"></iframe>") == 0  # once


def test_check_in_twice_or_of_a_walk_in_changes_nothing(app, conn, client_as) -> None:
    accession = place(app, conn, "ORD0003")
    desk = client_as("registrar")
    assert post(desk, f"/exams/{accession}/check-in").status_code == 302
    before = count(conn, "audit_log")
    again = post(desk, f"/exams/{accession}/check-in", follow_redirects=True)
    assert "is not waiting for check-in" in again.get_data(as_text=True)
    assert count(conn, "audit_log") == before
    assert "No ordered exam waits for" in desk.get("/check-in?q=NOSUCH").get_data(as_text=True)
