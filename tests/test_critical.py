"""Critical findings (危急值, issue 18): recorded at a critical signature or from the button,
seen by the requesting department's clinicians, acknowledged, escalated, counted, read by the HIS."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from pacslite.core import audit, clock
from pacslite.ris import critical, patients
from pacslite import statistics
from tests.test_reports import add_image, audit_rows, register, send

TEXTS = {"findings": "Hyperdense collection in the left temporal lobe.", "impression": "Acute haemorrhage."}


@pytest.fixture
def rad(client_as):
    return client_as("radiologist", username="dr_wang")


@pytest.fixture
def imaged(app, conn, tmp_path) -> str:
    accession = register(app, conn, requesting_department="神经内科")
    add_image(app, conn, tmp_path, accession)
    return accession


def ward_client(client_as, conn, username: str, department: str):
    client = client_as("clinician", username=username)
    conn.execute("UPDATE users SET department = ? WHERE username = ?", (department, username))
    conn.commit()
    return client


def sign_critical(client, conn, accession: str, level: str = "final") -> None:
    """Sign the report, over its current revision, classed critical."""
    from pacslite.ris import reports
    current = reports.latest(conn, patients.get_exam(conn, accession)["id"])
    response = send(client, f"/exams/{accession}/report/sign", {
        "confirm": "1", "level": level, "result_class": "critical", **TEXTS,
        "revision": str(current["revision"] if current else 0)})
    assert response.status_code == 302, response.get_data(as_text=True)


def findings_of(conn, accession: str) -> list:
    return critical.of_exam(conn, patients.get_exam(conn, accession)["id"])


def open_alerts(conn) -> list:
    return conn.execute("SELECT * FROM alerts WHERE rule = 'critical_finding' AND state = 'open'").fetchall()


def test_a_critical_result_reaches_its_department_and_is_acknowledged(app, conn, rad, imaged, client_as) -> None:
    ward = ward_client(client_as, conn, "neuro1", "神经内科")
    other = ward_client(client_as, conn, "cardio1", "心内科")
    assert 'id="nav-critical-count"></span>' in ward.get("/exams").get_data(as_text=True).replace("\n", "")

    sign_critical(rad, conn, imaged)
    [finding] = findings_of(conn, imaged)
    assert (finding["department"], finding["version"], finding["finding"]) == ("神经内科", 1, "Acute haemorrhage.")
    assert finding["due_at"] == clock.to_db(clock.from_db(finding["reported_at"]) + timedelta(minutes=15))
    assert [json.loads(a["detail"])["department"] for a in open_alerts(conn)] == ["神经内科"]
    assert audit_rows(conn, "critical.report") == 1

    # the department's clinician sees it in the navigation bar and on the page; another does not
    assert '<span class="count critical">1</span>' in ward.get("/exams").get_data(as_text=True)
    page = ward.get("/critical").get_data(as_text=True)
    assert "Acute haemorrhage." in page and f'id="critical-{finding["id"]}"' in page and "张三" in page
    assert "Acute haemorrhage." not in other.get("/critical").get_data(as_text=True)
    assert other.get("/critical/count").get_data(as_text=True).strip() == ""
    assert client_as("registrar").get("/critical").status_code == 403

    # another department's clinician cannot acknowledge it: refused, audited, nothing changes
    refused = send(other, f"/critical/{finding['id']}/acknowledge", {"note": "not ours"})
    assert refused.status_code == 409
    assert audit_rows(conn, "critical.acknowledge", "denied") == 1
    assert findings_of(conn, imaged)[0]["acknowledged_at"] is None

    done = send(ward, f"/critical/{finding['id']}/acknowledge", {"note": "Neurosurgery called, CT angiography"})
    assert done.status_code == 302
    [finding] = findings_of(conn, imaged)
    assert finding["acknowledged_by"] == "neuro1" and finding["acknowledgement"] == "Neurosurgery called, CT angiography"
    assert open_alerts(conn) == []
    assert audit_rows(conn, "critical.acknowledge") == 1
    assert send(ward, f"/critical/{finding['id']}/acknowledge", {}).status_code == 409  # once only
    assert "Acknowledged by Name of neuro1" in rad.get(f"/exams/{imaged}/report").get_data(as_text=True)

    # an amendment classed critical again does not tell the ward a second time
    assert send(rad, f"/exams/{imaged}/report/amend", {"reason": "typo"}).status_code == 302
    sign_critical(rad, conn, imaged)
    assert len(findings_of(conn, imaged)) == 1

    today = clock.local_today(app.config["TIMEZONE"])
    figures = statistics.report(conn, app.config, today, today).critical
    assert (figures.reported, figures.acknowledged, figures.late) == (1, 1, 0)
    assert figures.median_minutes is not None and figures.median_minutes < 5


def test_an_unacknowledged_finding_escalates_once_to_radiologists_and_admins(app, conn, rad, imaged,
                                                                             client_as) -> None:
    sign_critical(rad, conn, imaged, level="preliminary")  # sent before the report is final
    [finding] = findings_of(conn, imaged)
    reported = clock.from_db(finding["reported_at"])
    assert critical.escalate_due(conn, app.config, reported + timedelta(minutes=14)) == 0
    assert 'class="count critical"' not in rad.get("/exams").get_data(as_text=True)  # not overdue yet

    assert critical.escalate_due(conn, app.config, reported + timedelta(minutes=16)) == 1
    [finding] = findings_of(conn, imaged)
    assert finding["escalated_at"] == clock.to_db(reported + timedelta(minutes=16))
    assert json.loads(open_alerts(conn)[0]["detail"])["overdue"] is True
    assert audit_rows(conn, "critical.escalate") == 1
    assert critical.escalate_due(conn, app.config, reported + timedelta(minutes=30)) == 0  # once
    assert audit_rows(conn, "critical.escalate") == 1

    # the radiologists' and admins' navigation bar counts it; the page shows it overdue
    assert critical.count_for(conn, critical.Viewer("", True), reported + timedelta(minutes=16)) == 1
    conn.execute("UPDATE critical_findings SET due_at = ?", (clock.to_db(clock.now() - timedelta(minutes=1)),))
    conn.commit()
    admin_page = client_as("admin").get("/critical").get_data(as_text=True)
    assert "Overdue since" in admin_page and '<span class="count critical">1</span>' in admin_page

    # a radiologist records the telephone acknowledgement, and must say who took it
    assert send(rad, f"/critical/{finding['id']}/acknowledge", {"note": ""}).status_code == 400
    assert send(rad, f"/critical/{finding['id']}/acknowledge",
                {"note": "Nurse Zhang, 神经内科, by telephone"}).status_code == 302
    today = clock.local_today(app.config["TIMEZONE"])
    assert statistics.report(conn, app.config, today, today).critical.late == 1


def test_the_button_sends_a_finding_while_reading(app, conn, rad, imaged) -> None:
    assert send(rad, f"/exams/{imaged}/critical", {"finding": "  "}).status_code == 302
    assert findings_of(conn, imaged) == []  # an empty finding is refused and nothing is sent
    assert send(rad, f"/exams/{imaged}/critical", {"finding": "Tension pneumothorax"}).status_code == 302
    [finding] = findings_of(conn, imaged)
    assert finding["version"] is None and finding["finding"] == "Tension pneumothorax"
    sign_critical(rad, conn, imaged)  # the report signed critical afterwards does not send it again
    assert len(findings_of(conn, imaged)) == 1


def test_a_critical_finding_alert_is_closed_by_acknowledgement_only(app, conn, rad, imaged, client_as) -> None:
    sign_critical(rad, conn, imaged)
    [alert] = open_alerts(conn)
    refused = send(client_as("technologist"), f"/alerts/{alert['id']}/resolve", {"resolution": "seen"})
    assert refused.status_code == 409 and len(open_alerts(conn)) == 1


def test_the_his_reads_open_critical_findings(app, conn, rad, imaged, client_as) -> None:
    from pacslite.ris import users
    sign_critical(rad, conn, imaged)
    client_as("registrar", username="his")
    ward_client(client_as, conn, "cardio_api", "心内科")
    his = {"Authorization": f"Bearer {users.create_token(conn, audit.SYSTEM, 'his')}"}
    cardio = {"Authorization": f"Bearer {users.create_token(conn, audit.SYSTEM, 'cardio_api')}"}
    api = app.test_client()
    answer = api.get("/api/v1/critical-findings", headers=his).get_json()
    assert answer["count"] == 1
    item = answer["items"][0]
    assert (item["accession_number"], item["department"], item["finding"], item["overdue"]) == (
        imaged, "神经内科", "Acute haemorrhage.", False)
    assert api.get("/api/v1/critical-findings?department=心内科", headers=his).get_json()["count"] == 0
    assert api.get("/api/v1/critical-findings", headers=cardio).get_json()["count"] == 0
    assert api.get("/api/v1/critical-findings?department=神经内科", headers=cardio).status_code == 403
    assert api.get("/api/v1/critical-findings?state=nonsense", headers=his).status_code == 400
    assert api.get("/api/v1/critical-findings").status_code == 401


def test_a_radiologist_without_a_display_name_cannot_sign(app, conn, imaged, client_as) -> None:
    nameless = client_as("radiologist", username="dr_anon")
    conn.execute("UPDATE users SET display_name = '' WHERE username = 'dr_anon'")
    conn.commit()
    for confirm in ("", "1"):
        response = send(nameless, f"/exams/{imaged}/report/sign", {"confirm": confirm, "level": "final",
                                                                    "result_class": "normal", "revision": "0",
                                                                    **TEXTS})
        assert response.status_code == 409 and "no display name" in response.get_data(as_text=True)
    assert patients.get_exam(conn, imaged)["status"] != "final"


def test_bad_requests_change_nothing(app, conn, rad, imaged, client_as) -> None:
    ward = ward_client(client_as, conn, "neuro9", "神经内科")
    assert send(ward, "/critical/999/acknowledge", {"note": "x"}).status_code == 404
    # a cancelled exam: nothing to tell the ward, and it is said
    from pacslite.ris import exams as exam_states
    from pacslite.core.db import transaction
    cancelled = register(app, conn, requesting_department="神经内科", patient_id="P0009")
    with transaction(conn):
        exam_states.cancel(conn, audit.SYSTEM, patients.get_exam(conn, cancelled), "patient left")
    page = send(rad, f"/exams/{cancelled}/critical", {"finding": "Free air"}, follow_redirects=True)
    assert "This exam was cancelled." in page.get_data(as_text=True)
    assert findings_of(conn, cancelled) == []
    assert audit_rows(conn, "critical.report") == 0


def test_acknowledged_findings_page_back_by_id_even_when_reported_in_one_second(app, conn, imaged) -> None:
    """Paging by the report time lost findings reported in the same second at a page's edge."""
    from pacslite.core.db import transaction
    exam = patients.get_exam(conn, imaged)
    at = clock.to_db(clock.now())
    with transaction(conn):
        ids = [critical.record(conn, audit.SYSTEM, exam, f"finding {n}", at, 15) for n in range(critical.PAGE + 1)]
        conn.execute("UPDATE critical_findings SET acknowledged_at = ?, acknowledged_by = 'w'", (at,))
    everyone = critical.Viewer("", True)
    first = critical.acknowledged_findings(conn, everyone)
    second = critical.acknowledged_findings(conn, everyone, before=first[-1]["id"])
    assert len(first) == critical.PAGE and [r["id"] for r in second] == [ids[0]]
    assert sorted(r["id"] for r in (*first, *second)) == ids
