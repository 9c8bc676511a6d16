"""Admin pages: add, change roles, disable, reset passwords; the audit log page."""
from pacslite.core import audit
from pacslite.ris import aes, users
from tests.conftest import EXAM_FORM, PASSWORD, csrf_token, login, post, register


def test_admin_manages_a_user_through_the_pages(app, conn, client_as) -> None:
    admin = client_as("admin", username="boss")
    created = post(admin, "/admin/users/new", {"username": "tech1", "display_name": "技师甲",
                                               "password": "tech-password-1", "roles": ["technologist"]})
    assert created.status_code == 302
    tech = users.by_username(conn, "tech1")
    assert tech.roles == {"technologist"}

    assert post(admin, "/admin/users/new", {"username": "tech1", "password": "x" * 10,
                                            "roles": ["clinician"]}).status_code == 400  # taken
    assert post(admin, "/admin/users/new", {"username": "t2", "password": "x" * 10, "roles": []}).status_code == 400
    assert users.by_username(conn, "t2") is None

    changed = post(admin, f"/admin/users/{tech.id}", {"display_name": "技师甲", "roles": ["technologist", "registrar"],
                                                      "active": "on"})
    assert changed.status_code == 302
    assert users.by_username(conn, "tech1").roles == {"technologist", "registrar"}

    client = app.test_client()
    assert login(client, "tech1", "tech-password-1").status_code == 302
    assert post(admin, f"/admin/users/{tech.id}", {"display_name": "", "roles": ["technologist"]}).status_code == 302
    assert users.by_username(conn, "tech1").active is False
    assert "/login" in client.get("/exams").location  # disabling ended the session

    assert post(admin, f"/admin/users/{tech.id}/password", {"password": "short"}).status_code == 400
    assert post(admin, f"/admin/users/{tech.id}/password", {"password": "brand-new-pass"}).status_code == 302
    actions = [r["action"] for r in audit.search(conn, actor="boss")]
    assert actions.count("user.update") == 2 and "user.reset_password" in actions and "user.create" in actions


def test_admin_cannot_lock_themself_out(conn, client_as) -> None:
    admin = client_as("admin", username="boss")
    me = users.by_username(conn, "boss")
    response = post(admin, f"/admin/users/{me.id}", {"display_name": "", "roles": ["admin"]})  # not active
    assert response.status_code == 400 and users.by_username(conn, "boss").active
    response = post(admin, f"/admin/users/{me.id}", {"display_name": "", "roles": ["registrar"], "active": "on"})
    assert response.status_code == 400 and "admin" in users.by_username(conn, "boss").roles


def test_audit_page_lists_and_filters(conn, client_as) -> None:
    desk = client_as("registrar", username="desk")
    accession = register(desk)
    admin = client_as("admin", username="boss")
    page = admin.get("/admin/audit?action=exam.").get_data(as_text=True)
    assert f"exam:{accession}" in page and "login" not in page.split("<tbody>")[1]
    page = admin.get("/admin/audit?actor=boss", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert page.lstrip().startswith('<div id="audit-rows">') and "exam.register" not in page
    page = admin.get("/admin/audit?patient_id=P0001").get_data(as_text=True)
    assert "exam.register" in page and "patient.create" in page
    page = admin.get("/admin/audit?outcome=denied").get_data(as_text=True)
    assert "No audit records." in page
    desk.get("/admin/audit")
    assert "access.denied" in admin.get("/admin/audit?outcome=denied").get_data(as_text=True)
    assert PASSWORD not in admin.get("/admin/audit").get_data(as_text=True)  # passwords never logged


def test_admin_manages_modalities_and_bad_input_changes_nothing(conn, client_as) -> None:
    admin = client_as("admin", username="boss")
    added = post(admin, "/admin/modalities/new", {"ae_title": "CT01", "host": "10.1.2.3", "port": "104",
                                                  "name": "CT 室 1", "location": "一楼", "charset": "GB18030"})
    assert added.status_code == 302
    ct = aes.get_ae(conn, "CT01")
    assert (ct["host"], ct["port"], ct["charset"]) == ("10.1.2.3", 104, "GB18030")
    page = admin.get("/admin/modalities").get_data(as_text=True)
    assert "CT01" in page and "CT 室 1" in page

    for bad in ({"ae_title": "CT01"},  # taken
                {"ae_title": "BAD\\AE"}, {"ae_title": "X" * 17}, {"ae_title": ""},
                {"ae_title": "MR01", "port": "70000"}, {"ae_title": "MR01", "port": "abc"},
                {"ae_title": "MR01", "host": "10.0.0.1; rm -rf"}, {"ae_title": "MR01", "charset": "SJIS"}):
        assert post(admin, "/admin/modalities/new", {"port": "104", **bad}).status_code == 400, bad
    assert [r["ae_title"] for r in aes.list_aes(conn)] == ["CT01"]
    assert post(admin, f"/admin/modalities/{ct['id']}", {"host": "10.1.2.3", "port": "0"}).status_code == 400
    assert aes.get_ae(conn, "CT01")["port"] == 104

    assert post(admin, f"/admin/modalities/{ct['id']}", {"host": "10.1.2.4", "port": "4006",
                                                         "charset": "ISO_IR 192"}).status_code == 302
    assert (aes.get_ae(conn, "CT01")["port"], aes.get_ae(conn, "CT01")["charset"]) == (4006, "ISO_IR 192")
    assert post(admin, f"/admin/modalities/{ct['id']}/remove").status_code == 302
    assert aes.find_ae(conn, "CT01") is None
    assert admin.get(f"/admin/modalities/{ct['id']}").status_code == 404
    actions = [r["action"] for r in audit.search(conn, actor="boss")]
    assert (actions.count("ae.add"), actions.count("ae.update"), actions.count("ae.remove")) == (1, 1, 1)


def test_an_ae_may_use_what_the_admin_ticks(conn, client_as) -> None:
    """Issue 14: rights per AE on the Modalities page."""
    admin = client_as("admin", username="boss2")
    form = admin.get("/admin/modalities/new").get_data(as_text=True)
    assert 'name="rights" value="store" checked' in form and 'name="rights" value="query" >' in form
    assert post(admin, "/admin/modalities/new", {"ae_title": "READ01", "port": "104", "rights_given": "1",
                                                 "rights": ["query", "retrieve"]}).status_code == 302
    assert aes.get_ae(conn, "READ01")["rights"] == "query,retrieve"
    ae_id = aes.get_ae(conn, "READ01")["id"]
    assert post(admin, f"/admin/modalities/{ae_id}", {"port": "104", "rights_given": "1"}).status_code == 302
    assert aes.rights_of(conn, "READ01") == frozenset()  # nothing ticked: nothing but echo
    assert post(admin, f"/admin/modalities/{ae_id}", {"port": "104", "rights_given": "1",
                                                     "rights": ["everything"]}).status_code == 400
    # the one-click "add" of a refused caller gives a modality's rights
    assert post(admin, "/admin/modalities/new", {"ae_title": "CT09", "host": "10.0.0.9", "port": "104"}).status_code == 302
    assert aes.rights_of(conn, "CT09") == frozenset(aes.MODALITY_RIGHTS)
    page = admin.get("/admin/modalities").get_data(as_text=True)
    assert "Send images, Query the worklist" in page


def test_an_admin_uploads_a_signature_image_kept_as_a_small_png(app, conn, client_as) -> None:
    import io

    from PIL import Image

    from tests.conftest import csrf_token, image_bytes
    admin = client_as("admin", username="boss")
    doctor = users.create(conn, audit.SYSTEM, {"username": "dr_sig", "password": PASSWORD, "roles": ["radiologist"],
                                               "display_name": "王医生", "department": "放射科"})

    def upload(data: bytes, name: str = "sig.png"):
        return admin.post(f"/admin/users/{doctor.id}/signature",
                          data={"csrf_token": csrf_token(admin, "/exams"), "signature": (io.BytesIO(data), name)},
                          content_type="multipart/form-data")

    for hostile in (b"<svg onload=alert(1)></svg>", b"GIF89a" + b"\0" * 40, image_bytes("PNG")[:60], b""):
        assert upload(hostile).status_code == 400  # refused, and nothing is kept
        assert users.signature_of(conn, "dr_sig") is None
    assert upload(image_bytes("JPEG", (1800, 600)), "sig.jpg").status_code == 302
    kept = users.signature_of(conn, "dr_sig")
    picture = Image.open(io.BytesIO(kept["png"]))
    assert picture.format == "PNG" and picture.size == (600, 200)
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'user.signature'").fetchone()[0] == 1
    served = client_as("clinician").get("/signatures/dr_sig.png")
    assert served.status_code == 200 and served.data == kept["png"] and served.mimetype == "image/png"
    assert client_as("clinician").get("/signatures/nobody.png").status_code == 404
    assert post(client_as("radiologist"), f"/admin/users/{doctor.id}/signature/remove").status_code == 403
    assert post(admin, f"/admin/users/{doctor.id}/signature/remove").status_code == 302
    assert users.signature_of(conn, "dr_sig") is None
    assert users.by_username(conn, "dr_sig").department == "放射科"


def test_the_visit_numbers_ward_and_bed_are_registered_and_answered(app, conn, client_as) -> None:
    from pacslite.ris import patients
    desk = client_as("registrar")
    accession = register(desk, source="inpatient", inpatient_number="ZY-77", ward="心内科病区", bed="3A")
    exam = patients.get_exam(conn, accession)
    assert (exam["inpatient_number"], exam["ward"], exam["bed"], exam["outpatient_number"]) == (
        "ZY-77", "心内科病区", "3A", "")
    assert "ZY-77" in desk.get(f"/exams/{accession}").get_data(as_text=True)
    assert patients.api_view(exam)["ward"] == "心内科病区"
    too_long = post(desk, "/exams/new", {**EXAM_FORM, "bed": "x" * 17})
    assert too_long.status_code == 400


def test_the_audit_log_reads_as_sentences_pages_by_period_and_exports_csv(app, conn, client_as) -> None:
    import csv
    import io
    from datetime import timedelta

    from pacslite.core import clock
    from pacslite.core.db import transaction
    desk = client_as("registrar", username="desk")
    accession = register(desk)
    with transaction(conn):  # a target that a spreadsheet would take for a formula
        audit.record(conn, audit.Actor("boss"), "exam.cancel", '=HYPERLINK("http://x")', patient_id="P0001")
    admin = client_as("admin", username="boss")
    page = admin.get("/admin/audit?patient_id=P0001").get_data(as_text=True)
    assert "Registered an exam" in page and "exam.register" in page  # the sentence, and the code below it
    assert "<details><summary>Raw record (JSON)</summary>" in page  # the raw detail one click away
    assert '<li>Patient source: <span translate="no">Outpatient</span></li>' in page  # the details read
    assert '<li>Priority: <span translate="no">Routine</span></li>' in page
    register(desk, phone="010 1234")  # the phone changes: a before → after line
    changed = admin.get("/admin/audit?action=patient.update").get_data(as_text=True)
    assert '<li>Phone: <span translate="no">13800000000 → 010 1234</span></li>' in changed
    zh = client_as("admin", username="boss_zh")
    zh.post("/language", data={"language": "zh_CN", "csrf_token": csrf_token(zh, "/exams")})
    in_chinese = zh.get("/admin/audit?patient_id=P0001").get_data(as_text=True)
    assert "登记检查" in in_chinese and '<li>病人来源: <span translate="no">门诊</span></li>' in in_chinese

    today = clock.local_today(app.config["TIMEZONE"])
    assert f"exam:{accession}" in admin.get(f"/admin/audit?since={today}&until={today}").get_data(as_text=True)
    yesterday = today - timedelta(days=1)
    assert "No audit records." in admin.get(f"/admin/audit?until={yesterday}").get_data(as_text=True)

    exported = admin.get(f"/admin/audit.csv?patient_id=P0001&since={today}")
    assert exported.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:5] == ["id", "at", "actor", "address", "action"]
    assert {r[4] for r in rows[1:]} >= {"exam.register", "patient.create", "exam.cancel"}
    assert any(r[6] == "'=HYPERLINK(\"http://x\")" for r in rows[1:])  # neutralised
    assert not any(cell.startswith(("=", "+", "@")) for r in rows for cell in r)
    assert desk.get("/admin/audit.csv").status_code == 403
