"""Pick-up tracking (取片 / 自助打印, issue 31): the desk's list of what is ready and not collected,
handing out at the desk, and the kiosk printing the final report for the patient who proves
who they are; a preliminary report is refused with when to come back. (Films handed out after a
real printer printed them: tests/test_printing.py.)"""
from __future__ import annotations

import pytest

from pacslite.core import audit
from pacslite.core.validation import Conflict
from pacslite.pacs import pickup
from pacslite.ris import patients, reports
from tests.conftest import csrf_token, make_user, post
from tests.test_reports import add_image, register

RAD = audit.Actor("dr_wang")
TEXTS = {"findings": "双肺纹理清晰。", "impression": "胸部CT未见异常。", "result_class": "normal"}


@pytest.fixture
def imaged(app, conn, tmp_path) -> str:
    make_user(conn, "dr_wang", "radiologist")
    accession = register(app, conn, phone="138-0000-4321", national_id="")
    add_image(app, conn, tmp_path, accession)
    return accession


def sign(app, conn, accession: str, level: str = "final") -> None:
    exam = patients.get_exam(conn, accession)
    current = reports.latest(conn, exam["id"])
    reports.sign(conn, RAD, exam, {**TEXTS, "level": level, "revision": str(current["revision"] if current else 0)},
                 app.config)


def waiting(app, conn) -> list[str]:
    return [row["accession_number"] for row in pickup.waiting(conn, app.config)]


def test_a_final_report_waits_at_the_desk_until_handed_out_and_again_when_amended(app, conn, imaged) -> None:
    exam = lambda: patients.get_exam(conn, imaged)  # noqa: E731
    sign(app, conn, imaged, "preliminary")
    assert waiting(app, conn) == [] and not pickup.of_exam(conn, exam()["id"]).report_waiting
    with pytest.raises(Conflict):
        pickup.hand_out(conn, audit.Actor("desk"), exam(), pickup.REPORT, pickup.DESK)
    sign(app, conn, imaged)
    assert waiting(app, conn) == [imaged]
    pickup.hand_out(conn, audit.Actor("desk"), exam(), pickup.REPORT, pickup.DESK)
    state = pickup.of_exam(conn, exam()["id"])
    assert waiting(app, conn) == [] and state.report_handed["handed_by"] == "desk"
    assert state.report_handed["place"] == "desk" and state.report_handed["report_version"] == 1
    # an amended report is collected again, in its new version
    reports.amend(conn, RAD, exam(), {"reason": "侧别更正"})
    assert waiting(app, conn) == []  # the amendment is not issued yet
    sign(app, conn, imaged)
    assert waiting(app, conn) == [imaged]
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'pickup.hand_out'").fetchone()[0] == 1
    # no films were printed: nothing of that kind to hand out, nothing recorded
    with pytest.raises(Conflict):
        pickup.hand_out(conn, audit.Actor("desk"), exam(), pickup.FILMS, pickup.DESK)
    assert conn.execute("SELECT COUNT(*) FROM handouts").fetchone()[0] == 1


def _kiosk(client_as) -> str:
    page = post(client_as("admin"), "/admin/screens", {"kind": "kiosk", "name": "Hall kiosk"}).get_data(as_text=True)
    return "/" + page.split('id="device-url">')[1].split("<")[0].split("/", 3)[3]


def test_the_kiosk_prints_a_final_report_for_the_patient_who_proves_it(app, conn, imaged, client_as) -> None:
    kiosk = _kiosk(client_as)
    patient = app.test_client()
    token = csrf_token(patient, kiosk)
    # scanned after the exam: on to the report, which is preliminary: come back later
    scanned = patient.post(kiosk, data={"accession": imaged, "csrf_token": token})
    assert scanned.status_code == 302 and scanned.location.endswith(f"{kiosk}/report?accession={imaged}")
    assert 'id="kiosk-answer"' in patient.get(scanned.location).get_data(as_text=True)
    sign(app, conn, imaged, "preliminary")
    early = patient.post(f"{kiosk}/report", data={"accession": imaged, "answer": "4321", "csrf_token": token})
    assert early.status_code == 409 and "Please come back after" in early.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM handouts").fetchone()[0] == 0
    sign(app, conn, imaged)
    # a wrong answer prints nothing and is audited; the right one prints the report, recorded
    wrong = patient.post(f"{kiosk}/report", data={"accession": imaged, "answer": "1234", "csrf_token": token})
    assert wrong.status_code == 403 and "printed-report" not in wrong.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'pickup.kiosk_refused'"
                        " AND outcome = 'denied'").fetchone()[0] == 1
    printed = patient.post(f"{kiosk}/report", data={"accession": imaged, "answer": "4321", "csrf_token": token})
    html = printed.get_data(as_text=True)
    assert printed.status_code == 200 and 'id="printed-report"' in html and 'data-autoprint="1"' in html
    assert "胸部CT未见异常。" in html and "Preliminary" not in html
    handout = conn.execute("SELECT * FROM handouts").fetchone()
    assert (handout["item"], handout["place"], handout["handed_by"]) == ("report", "kiosk", "kiosk:Hall kiosk")
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'report.print'"
                        " AND actor = 'kiosk:Hall kiosk'").fetchone()[0] == 1
    assert waiting(app, conn) == []
    # the desk's exam page says who handed it out and where
    shown = client_as("registrar").get(f"/exams/{imaged}").get_data(as_text=True)
    assert "kiosk:Hall kiosk" in shown and "at a kiosk" in shown


def test_five_wrong_answers_stop_the_kiosk_for_that_patient(app, conn, imaged, client_as) -> None:
    kiosk = _kiosk(client_as)
    sign(app, conn, imaged)
    patient = app.test_client()
    token = csrf_token(patient, kiosk)
    for answer in ("0000", "1111", "2222", "3333", "x"):
        assert patient.post(f"{kiosk}/report", data={"accession": imaged, "answer": answer,
                                                     "csrf_token": token}).status_code == 403
    locked = patient.post(f"{kiosk}/report", data={"accession": imaged, "answer": "4321", "csrf_token": token})
    assert locked.status_code == 403 and "Too many wrong answers" in locked.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM handouts").fetchone()[0] == 0


def test_a_patient_without_phone_or_id_card_number_collects_at_the_desk(app, conn, client_as, tmp_path) -> None:
    make_user(conn, "dr_wang", "radiologist")
    accession = register(app, conn, patient_id="P0009", phone="", national_id="")
    add_image(app, conn, tmp_path, accession, patient_id="P0009")
    sign(app, conn, accession)
    kiosk = _kiosk(client_as)
    patient = app.test_client()
    refused = patient.post(f"{kiosk}/report", data={"accession": accession, "answer": "", "csrf_token":
                                                   csrf_token(patient, kiosk)})
    assert refused.status_code == 403 and "at the desk" in refused.get_data(as_text=True)
    # the desk: listed, handed out from the list, gone from it
    desk = client_as("registrar")
    assert f'id="pickup-{accession}"' in desk.get("/pickup").get_data(as_text=True)
    handed = post(desk, f"/exams/{accession}/handout", {"item": "report", "next": "/pickup"})
    assert handed.status_code == 302 and handed.location.endswith("/pickup")
    assert f'id="pickup-{accession}"' not in desk.get("/pickup").get_data(as_text=True)
    assert post(desk, f"/exams/{accession}/handout", {"item": "cake"}).status_code == 400
