"""Reporting: the lock, drafts and autosave, sign-off, amendments, stale saves, the work list,
the "images missing" flag, phrases, printing and the API."""
from __future__ import annotations

import io
import re
import sqlite3
from datetime import timedelta

import pytest
from pydicom.uid import generate_uid

from pacslite.core import audit, clock, db
from pacslite.ris import patients, reports
from pacslite.pacs import filing
from pacslite.pacs.index import Source
from tests.conftest import EXAM_FORM, count, csrf_token
from tests.dicomkit import make_ct

HTMX = {"HX-Request": "true"}


def register(app, conn, **changes) -> str:
    data = {**EXAM_FORM, **changes}
    return patients.register_exam(conn, audit.SYSTEM, app.config, data, data,
                                  confirm_demographics=True).accession_number


def add_image(app, conn, tmp_path, accession: str, patient_id: str = "P0001") -> filing.Outcome:
    path = tmp_path / f"{generate_uid()}.dcm"
    make_ct(path, accession=accession, patient_id=patient_id)
    return filing.ingest_bytes(conn, app.config["STORAGE_DIR"], path.read_bytes(), Source("CT01", "10.0.0.5"))


def send(client, path: str, data: dict, **kw):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/exams")}, **kw)


def audit_rows(conn, action: str, outcome: str = "success") -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = ? AND outcome = ?", (action, outcome)).fetchone()[0]


def images_came_hours_before_report(conn, accession: str, hours: float) -> None:
    """The exam's images as if they had come ``hours`` before its report, and no due time kept."""
    reported = clock.from_db(conn.execute("SELECT reported_at FROM exams WHERE accession_number = ?",
                                          (accession,)).fetchone()[0])
    first = (reported - timedelta(hours=hours)).isoformat(timespec="milliseconds")
    conn.execute("UPDATE exams SET images_first_at = ?, report_due_at = NULL WHERE accession_number = ?",
                 (first, accession))


def version_rows(conn, accession: str) -> list[sqlite3.Row]:
    exam = patients.get_exam(conn, accession)
    return reports.versions(conn, exam["id"])


@pytest.fixture
def rad(client_as):
    return client_as("radiologist", username="dr_wang")


@pytest.fixture
def imaged(app, conn, tmp_path) -> str:
    accession = register(app, conn)
    assert add_image(app, conn, tmp_path, accession).result == filing.FILED
    return accession


# ---------------------------------------------------------------- the lock

@pytest.mark.parametrize("level", ["preliminary", "final"])
def test_a_forged_sign_on_an_exam_without_images_is_refused_and_audited(app, conn, rad, level) -> None:
    accession = register(app, conn)
    page = rad.get(f"/exams/{accession}/report").get_data(as_text=True)
    assert "Report locked: no images" in page and 'id="report-form"' not in page
    response = send(rad, f"/exams/{accession}/report/sign",
                    {"confirm": "1", "result_class": "normal", "level": level, "revision": "0", "findings": "Normal.",
                     "impression": "Normal."})
    assert response.status_code == 409
    assert "cannot be signed until its images have arrived" in response.get_data(as_text=True)
    assert version_rows(conn, accession) == []
    assert audit_rows(conn, "report.sign", "denied") == 1
    saved = send(rad, f"/exams/{accession}/report/save", {"revision": "0", "findings": "x", "impression": ""},
                 headers=HTMX)
    assert saved.status_code == 409 and version_rows(conn, accession) == []


def test_the_lock_lifts_when_images_arrive(app, conn, tmp_path, rad) -> None:
    accession = register(app, conn)
    assert rad.get(f"/exams/{accession}/report/lock", headers=HTMX).headers.get("HX-Refresh") is None
    add_image(app, conn, tmp_path, accession)
    assert rad.get(f"/exams/{accession}/report/lock", headers=HTMX).headers["HX-Refresh"] == "true"
    assert 'id="report-form"' in rad.get(f"/exams/{accession}/report").get_data(as_text=True)


def test_notify_technologist_flags_the_exam_until_images_are_filed(app, conn, tmp_path, rad, client_as) -> None:
    accession = register(app, conn)
    tech = client_as("technologist")
    assert send(rad, f"/exams/{accession}/report/notify", {}).status_code == 302
    assert patients.get_exam(conn, accession)["images_missing_by"] == "dr_wang"
    assert audit_rows(conn, "exam.images_missing") == 1
    listing = tech.get("/missing-images").get_data(as_text=True)
    assert accession in listing
    assert re.search(r'id="nav-missing">[^<]*<span class="count">1</span>', listing)

    add_image(app, conn, tmp_path, accession)
    assert patients.get_exam(conn, accession)["images_missing_at"] is None
    assert audit_rows(conn, "exam.images_missing_clear") == 1
    listing = tech.get("/missing-images").get_data(as_text=True)
    assert accession not in listing and 'class="count"' not in listing
    # an exam with images cannot be flagged
    assert send(rad, f"/exams/{accession}/report/notify", {}).status_code == 409


# ---------------------------------------------------------------- writing and signing

def test_autosave_then_preliminary_then_final_which_never_changes(app, conn, rad, imaged) -> None:
    page = rad.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert 'id="report-form"' in page and 'name="revision" id="f-revision" value="0"' in page
    saved = send(rad, f"/exams/{imaged}/report/save", {"revision": "0", "findings": "Lungs clear.",
                                                     "impression": ""}, headers=HTMX)
    assert saved.status_code == 200 and 'value="1" hx-swap-oob="true"' in saved.get_data(as_text=True)
    [draft] = version_rows(conn, imaged)
    assert (draft["status"], draft["findings"], draft["revision"], draft["held_by"]) == \
        ("draft", "Lungs clear.", 1, "dr_wang")

    assert send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "preliminary", "revision": "1",
                                                    "findings": "Lungs clear.", "impression": ""}).status_code == 302
    [prelim] = version_rows(conn, imaged)
    assert (prelim["status"], prelim["preliminary_by"]) == ("preliminary", "dr_wang")

    no_impression = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "2",
                                                              "findings": "Lungs clear.", "impression": " "})
    assert no_impression.status_code == 400 and "needs an impression" in no_impression.get_data(as_text=True)
    assert send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "2", "findings": "Lungs clear.",
                                                    "impression": "Normal chest."}).status_code == 302
    [final] = version_rows(conn, imaged)
    assert (final["status"], final["signed_by"], final["impression"]) == ("final", "dr_wang", "Normal chest.")
    assert audit_rows(conn, "report.sign") == 2 and audit_rows(conn, "report.save") == 1

    with pytest.raises(db.IntegrityError, match="final report version cannot change"):
        conn.execute("UPDATE report_versions SET impression = 'changed' WHERE id = ?", (final["id"],))
    with pytest.raises(db.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM report_versions WHERE id = ?", (final["id"],))
    late = send(rad, f"/exams/{imaged}/report/save", {"revision": "3", "findings": "x", "impression": "y"},
                headers=HTMX)
    assert late.status_code == 409 and version_rows(conn, imaged)[0]["impression"] == "Normal chest."


def test_a_stale_save_is_refused_and_nothing_is_lost(app, conn, client_as, rad, imaged) -> None:
    other = client_as("radiologist", username="dr_li")
    rad.get(f"/exams/{imaged}/report")
    assert send(other, f"/exams/{imaged}/report/save", {"revision": "0", "findings": "Li's findings",
                                                      "impression": ""}, headers=HTMX).status_code == 200
    # dr_wang opened revision 0 too: his save crosses dr_li's
    stale = send(rad, f"/exams/{imaged}/report/save", {"revision": "0", "findings": "Wang's findings",
                                                     "impression": ""}, headers=HTMX)
    assert stale.status_code == 409 and "Name of dr_li saved this report" in stale.get_data(as_text=True)
    assert version_rows(conn, imaged)[0]["findings"] == "Li's findings"
    signed = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "0",
                                                      "findings": "Wang's findings", "impression": "Wang's"})
    page = signed.get_data(as_text=True)
    assert signed.status_code == 409 and version_rows(conn, imaged)[0]["status"] == "draft"
    assert ">Wang&#39;s findings</textarea>" in page and "Li&#39;s findings" in page  # both texts on the page
    # dr_wang sees who holds the report
    assert "Name of dr_li is editing this report" in rad.get(f"/exams/{imaged}/report").get_data(as_text=True)


def test_an_amendment_is_a_new_version_and_the_old_one_stays(app, conn, rad, imaged, client_as) -> None:
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "0", "findings": "F1",
                                             "impression": "I1"})
    token = _token(conn, client_as)
    assert send(rad, f"/exams/{imaged}/report/amend", {"reason": ""}).status_code == 400
    assert send(rad, f"/exams/{imaged}/report/amend", {"reason": "Nodule missed"}).status_code == 302
    first, second = version_rows(conn, imaged)
    assert (second["version"], second["status"], second["findings"], second["amendment_reason"]) == \
        (2, "draft", "F1", "Nodule missed")
    api = rad.application.test_client()
    assert api.get(f"/api/v1/exams/{imaged}/report", headers=token).get_json()["version"] == 1
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "1", "findings": "F1, nodule",
                                             "impression": "I2"})
    answer = api.get(f"/api/v1/exams/{imaged}/report", headers=token).get_json()
    assert (answer["version"], answer["impression"], answer["signed_by"], answer["amendment_reason"]) == \
        (2, "I2", "dr_wang", "Nodule missed")
    page = rad.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert "Version 1" in page and "Version 2" in page and "I1" in page and "I2" in page
    exam = patients.get_exam(conn, imaged)  # the exam stays final, marked amended
    assert exam["status"] == "final" and exam["amended_at"] is not None
    assert "amended" in rad.get(f"/exams/{imaged}").get_data(as_text=True)
    assert send(rad, f"/exams/{imaged}/report/amend", {"reason": "again"}).status_code == 302  # of version 2


def test_with_review_everywhere_a_final_report_is_submitted_first_and_issued_by_another(
        app, conn, rad, imaged, client_as) -> None:
    app.config["REPORT_REVIEW"] = True  # every modality without its own "review" setting
    texts = {"findings": "F", "impression": "I"}
    refused = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final",
                                                       "revision": "0", **texts})
    assert refused.status_code == 409 and "submit this report for review first" in refused.get_data(as_text=True)
    assert version_rows(conn, imaged) == [] and patients.get_exam(conn, imaged)["status"] == "in_progress"
    assert send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "preliminary", "revision": "0",
                                                    **texts}).status_code == 302
    assert patients.get_exam(conn, imaged)["status"] == "preliminary"
    reviewer = client_as("radiologist", username="dr_qian")
    with conn:
        conn.execute("UPDATE users SET can_review = 1 WHERE username = 'dr_qian'")
    assert send(reviewer, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final",
                                                         "revision": "1", **texts}).status_code == 302
    assert patients.get_exam(conn, imaged)["status"] == "final"


def _token(conn, client_as) -> dict[str, str]:
    from pacslite.ris import users
    client_as("clinician", username="ward_api")
    return {"Authorization": f"Bearer {users.create_token(conn, audit.SYSTEM, 'ward_api')}"}


# ---------------------------------------------------------------- reading it

def test_clinicians_read_and_print_final_reports_only(app, conn, rad, imaged, client_as) -> None:
    ward = client_as("clinician")
    token = _token(conn, client_as)
    api = app.test_client()
    assert api.get(f"/api/v1/exams/{imaged}/report", headers=token).status_code == 404
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "preliminary", "revision": "0", "findings": "Draft text",
                                             "impression": "Prelim"})
    assert "Prelim" not in ward.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert ward.get(f"/exams/{imaged}/report/print?version=1").status_code == 404
    assert rad.get(f"/exams/{imaged}/report/print?version=1").status_code == 200  # the radiologist may
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "1", "findings": "<b>Final</b> text",
                                             "impression": "Normal"})
    page = ward.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert "&lt;b&gt;Final&lt;/b&gt; text" in page and 'id="report-form"' not in page
    prints_before = audit_rows(conn, "report.print")
    printed = ward.get(f"/exams/{imaged}/report/print?format=a5").get_data(as_text=True)
    assert "report-a5.css" in printed and "张三" in printed
    assert re.search(r'Reporting radiologist: <strong class="signer">Name of dr_wang</strong>', printed)
    assert audit_rows(conn, "report.print") == prints_before + 1
    ward.get(f"/exams/{imaged}/report/print")  # a reprint is audited too
    assert audit_rows(conn, "report.print") == prints_before + 2
    assert send(ward, f"/exams/{imaged}/report/amend", {"reason": "x"}).status_code == 403
    assert api.get(f"/api/v1/exams/{imaged}/report", headers=token).get_json()["findings"] == "<b>Final</b> text"


def test_quarantined_images_of_the_same_patient_are_warned_about(app, conn, tmp_path, rad, imaged) -> None:
    outcome = add_image(app, conn, tmp_path, "A000TYPO", patient_id="P0001")
    assert outcome.result == filing.QUARANTINED
    page = rad.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert "Quarantined images of this patient ID (P0001)" in page
    other = register(app, conn, patient_id="P0002", name="李四")
    add_image(app, conn, tmp_path, other, patient_id="P0002")
    assert "Quarantined images" not in rad.get(f"/exams/{other}/report").get_data(as_text=True)


def test_the_reading_list_puts_urgent_then_overdue_first(app, conn, tmp_path, rad) -> None:
    routine = register(app, conn, patient_id="R1")
    overdue = register(app, conn, patient_id="R2", modality="CR")
    stat = register(app, conn, patient_id="R3", priority="stat")
    reported = register(app, conn, patient_id="R4")
    no_images = register(app, conn, patient_id="R5")
    for accession, pid in ((routine, "R1"), (overdue, "R2"), (stat, "R3"), (reported, "R4")):
        add_image(app, conn, tmp_path, accession, patient_id=pid)
    two_hours_ago = clock.to_db(clock.now() - timedelta(hours=2))  # CR's target is 1 h
    with conn:
        conn.execute("UPDATE exams SET images_first_at = ? WHERE accession_number = ?", (two_hours_ago, overdue))
    send(rad, f"/exams/{reported}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "0", "findings": "f",
                                               "impression": "i"})
    page = rad.get("/reading").get_data(as_text=True)
    order = [a for a in re.findall(r'class="mono">(\w+)</a>', page)]
    assert order == [stat, overdue, routine]
    assert no_images not in page and reported not in page
    assert re.search(rf'class="priority-routine overdue">\s*<td><a href="/exams/{overdue}/report"', page)
    partial = rad.get("/reading?modality=CR", headers=HTMX).get_data(as_text=True)
    assert partial.startswith('{#') is False and "<html" not in partial
    assert re.findall(r'class="mono">(\w+)</a>', partial) == [overdue]


# ---------------------------------------------------------------- templates

def test_templates_on_the_report_page_and_kept_by_the_admin(app, conn, client_as, rad, imaged) -> None:
    admin = client_as("admin")
    bad = send(admin, "/admin/templates/new", {"level": "department", "modality": "CT", "name": "Empty"})
    assert bad.status_code == 400 and count(conn, "report_templates") == 0
    assert send(admin, "/admin/templates/new", {"level": "department", "modality": "CT", "body_part": "CHEST",
                                               "folder": "胸部", "name": "胸部CT平扫正常",
                                               "findings": "{左/右}肺纹理清晰。<b>",
                                               "impression": "胸部CT未见异常。"}).status_code == 302
    assert audit_rows(conn, "template.add") == 1
    assert "胸部CT平扫正常" in admin.get("/admin/templates").get_data(as_text=True)
    page = rad.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert 'id="templates-panel"' in page and "胸部CT平扫正常" in page
    assert 'data-findings="{左/右}肺纹理清晰。&lt;b&gt;"' in page  # inserted by the browser, escaped here
    # searched by pinyin initials, through htmx
    found = rad.get(f"/exams/{imaged}/report/templates?q=xbc", headers=HTMX).get_data(as_text=True)
    assert found.count("data-template ") == 1 and "胸部CT平扫正常" in found
    assert "胸部CT平扫正常" not in rad.get(f"/exams/{imaged}/report/templates?q=tl", headers=HTMX).get_data(as_text=True)
    # saved as the radiologist's own, seen by them only
    mine = send(rad, f"/exams/{imaged}/report/templates", {"name": "我的肺炎", "folder": "",
                                                         "findings": "右肺下叶斑片影。", "impression": "肺炎。"},
                headers=HTMX)
    assert mine.status_code == 200 and "我的肺炎" in mine.get_data(as_text=True)
    assert tuple(conn.execute("SELECT owner, modality, body_part FROM report_templates WHERE name = '我的肺炎'"
                              ).fetchone()) == ("dr_wang", "CT", "CHEST")
    other = client_as("radiologist", username="dr_other")
    assert "我的肺炎" not in other.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert send(rad, f"/exams/{imaged}/report/templates", {"name": "", "findings": "x"}, headers=HTMX).status_code == 400
    assert version_rows(conn, imaged) == []  # nothing of it saved the report
    assert send(rad, "/admin/templates/new", {"level": "department", "name": "x", "findings": "y"}).status_code == 403
    # exported and imported again by the administrator
    exported = admin.get("/admin/templates/export.csv")
    assert exported.status_code == 200 and "胸部CT平扫正常" in exported.get_data(as_text=True)
    assert "我的肺炎" not in exported.get_data(as_text=True)
    upload = admin.post("/admin/templates/import", data={"csrf_token": csrf_token(admin, "/admin/templates"),
                                                         "file": (io.BytesIO(exported.data), "t.csv")},
                        content_type="multipart/form-data")
    assert upload.status_code == 303 and audit_rows(conn, "template.import") == 1


def test_turnaround_targets_by_modality_and_source(app) -> None:
    from pacslite.core import config
    settings = {**app.config, "TURNAROUND_BY_SOURCE": {"CT/emergency": 1}}
    assert config.turnaround_hours(settings, "CT", "emergency") == 1
    assert config.turnaround_hours(settings, "CT", "outpatient") == 8
    assert config.turnaround_hours(settings, "DR", "outpatient") == 1
    assert config.turnaround_hours(settings, "US", "inpatient") == 24
    assert config.turnaround_hours(settings, "XX", "inpatient") == 24  # not configured
    # a STAT or urgent exam gets the shorter of its priority's target and its own
    assert config.turnaround_hours(settings, "CT", "outpatient", "stat") == 1
    assert config.turnaround_hours(settings, "CT", "outpatient", "urgent") == 2
    assert config.turnaround_hours(settings, "DR", "outpatient", "urgent") == 1  # DR's own is shorter
    assert config.turnaround_hours(settings, "CT", "outpatient", "routine") == 8
    exam = {"images_first_at": "2026-11-24T02:00:00+00:00", "scheduled_at": "2026-11-24T01:00:00+00:00",
            "target_hours": config.turnaround_hours(settings, "CT", "emergency"), "source": "emergency",
            "priority": "routine"}
    assert clock.to_db(reports.due_at(exam, settings)) == clock.to_db(clock.from_db("2026-11-24T03:00:00+00:00"))


def test_the_sql_report_target_says_what_the_configuration_says(app, conn) -> None:
    """The rule older exams are given their target by, in SQL, is the configuration's."""
    from pacslite.core import config
    settings = {**app.config, "TURNAROUND_BY_SOURCE": {"CT/emergency": 1, "MR/inpatient": 2.5},
                "TURNAROUND_BY_PRIORITY": {"stat": 0.5, "urgent": 3}}
    for targets in (settings, {**settings, "TURNAROUND_BY_PRIORITY": {}}):
        expression, params = config.turnaround_hours_sql(targets)
        for modality in ("CT", "MR", "DR", "US", "XX"):
            for source in ("emergency", "inpatient", "outpatient"):
                for priority in ("stat", "urgent", "routine"):
                    in_sql = conn.execute(f"SELECT {expression} FROM (SELECT ? AS modality, ? AS source,"
                                          f" ? AS priority) AS exam", (*params, modality, source, priority)).fetchone()[0]
                    assert in_sql == config.turnaround_hours(targets, modality, source, priority), (
                        modality, source, priority)


def test_report_turnaround_statistics_count_from_the_first_image_to_the_first_final_report(
        app, conn, rad, tmp_path) -> None:
    from pacslite import statistics
    app.config["TURNAROUND_BY_SOURCE"] = {"CT/emergency": 1}  # CT outpatient: 8 h
    hours = {"outpatient": [1, 2, 2.04, 3, 10], "emergency": [2]}
    for source, values in hours.items():
        for value in values:
            accession = register(app, conn, source=source)
            assert add_image(app, conn, tmp_path, accession).result == filing.FILED
            signed = send(rad, f"/exams/{accession}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "0",
                                                                   "findings": "F", "impression": "I"})
            assert signed.status_code == 302, signed.get_data(as_text=True)
            with conn:  # the images as if they had come ``value`` hours before the report (so the due
                # time kept at signing no longer holds: compared by clock hours, as before it was kept)
                images_came_hours_before_report(conn, accession, value)
    today = clock.local_today(app.config["TIMEZONE"])
    result = statistics.report(conn, app.config, today, today)
    total = result.total
    assert (total.reported, total.within_target) == (6, 4)  # 10 h outpatient and 2 h emergency are late
    # 1, 2, 2, 2, 3, 10 (to 0.1 h): the 90th percentile is the 5th of 6, as before
    assert (total.turnaround_median, total.turnaround_p90) == (2.0, 3.0)
    by_source = {g.name: g for g in result.groups["source"]}
    assert (by_source["emergency"].reported, by_source["emergency"].within_target) == (1, 0)
    assert by_source["outpatient"].turnaround_median == 2.0


def test_a_malformed_save_or_sign_is_refused_and_saves_nothing(app, conn, rad, imaged) -> None:
    bad_revision = send(rad, f"/exams/{imaged}/report/save", {"revision": "x", "findings": "F", "impression": ""},
                        headers=HTMX)
    assert bad_revision.status_code == 400 and "reload the page" in bad_revision.get_data(as_text=True)
    bad_level = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "bogus", "revision": "0", "findings": "F",
                                                         "impression": "I"})
    assert bad_level.status_code == 400
    too_long = send(rad, f"/exams/{imaged}/report/save", {"revision": "0", "findings": "x" * 20_001,
                                                        "impression": ""}, headers=HTMX)
    assert too_long.status_code == 400
    assert version_rows(conn, imaged) == [] and audit_rows(conn, "report.save") == 0


def test_an_amended_reports_first_version_is_marked_superseded_on_screen_and_on_paper(
        app, conn, rad, imaged, client_as) -> None:
    with conn:
        conn.execute("UPDATE users SET display_name = '王医生' WHERE username = 'dr_wang'")
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": "0", "findings": "F1",
                                             "impression": "No abnormality."})
    assert send(rad, f"/exams/{imaged}/report/amend", {"reason": "nodule missed"}).status_code == 302
    ward = client_as("clinician")
    first = ward.get(f"/exams/{imaged}/report/print?version=1").get_data(as_text=True)
    assert 'id="superseded-mark"' not in first  # an amendment in progress replaces nothing yet
    assert "王医生" in first and "dr_wang" not in first.split("<footer>")[1]
    revision = version_rows(conn, imaged)[-1]["revision"]
    signed = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final", "revision": str(revision),
                                                      "findings": "F1", "impression": "Nodule, 6 mm."})
    assert signed.status_code == 302
    first = ward.get(f"/exams/{imaged}/report/print?version=1").get_data(as_text=True)
    assert 'id="superseded-mark"' in first and "superseded by version 2" in first
    assert 'id="superseded-mark"' not in ward.get(f"/exams/{imaged}/report/print").get_data(as_text=True)
    page = ward.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert page.index("Nodule, 6 mm.") < page.index("No abnormality.")  # the current version first
    assert '<details class="version superseded" id="version-1">' in page  # the history folded
    assert 'id="version-2"' not in page


def test_signing_shows_what_will_be_signed_first_and_a_final_report_needs_its_result_class(
        app, conn, rad, imaged, tmp_path) -> None:
    asked = send(rad, f"/exams/{imaged}/report/sign", {"level": "final", "revision": "0", "findings": "Bleed.",
                                                     "impression": "Subdural haematoma.", "result_class": "critical"})
    page = asked.get_data(as_text=True)
    assert asked.status_code == 200 and 'id="confirm-sign"' in page
    assert re.search(r'id="confirm-result">Critical finding \(危急值\)</strong>', page)
    assert 'id="confirm-impression">Subdural haematoma.</p>' in page
    assert version_rows(conn, imaged) == [] and audit_rows(conn, "report.sign") == 0  # nothing signed yet
    unclassed = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "final", "revision": "0",
                                                         "findings": "Bleed.", "impression": "Subdural haematoma."})
    assert unclassed.status_code == 400 and version_rows(conn, imaged) == []
    forged = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "final", "revision": "0",
                                                      "findings": "x", "impression": "y", "result_class": "fine"})
    assert forged.status_code == 400 and version_rows(conn, imaged) == []
    signed = send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "final", "revision": "0",
                                                      "findings": "Bleed.", "impression": "Subdural haematoma.",
                                                      "result_class": "critical"})
    assert signed.status_code == 302
    assert version_rows(conn, imaged)[0]["result_class"] == "critical"
    assert conn.execute("SELECT result_class FROM exams WHERE accession_number = ?", (imaged,)).fetchone()[0] == \
        "critical"
    from pacslite import statistics
    normal = register(app, conn, patient_id="P0002", name="李四")
    assert add_image(app, conn, tmp_path, normal, patient_id="P0002").result == filing.FILED
    send(rad, f"/exams/{normal}/report/sign", {"confirm": "1", "level": "final", "revision": "0", "findings": "F",
                                             "impression": "Normal.", "result_class": "normal"})
    today = clock.local_today(app.config["TIMEZONE"])
    total = statistics.report(conn, app.config, today, today).total
    assert (total.classed, total.positive, total.critical, total.positive_rate) == (2, 1, 1, 0.5)


def test_a_report_written_by_one_radiologist_and_issued_by_another_prints_both_names(
        app, conn, rad, imaged, client_as) -> None:
    with conn:
        conn.execute("UPDATE users SET display_name = '王医生' WHERE username = 'dr_wang'")
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "preliminary", "revision": "0",
                                             "findings": "F", "impression": "I"})
    senior = client_as("radiologist", username="dr_li")
    with conn:
        conn.execute("UPDATE users SET display_name = '李主任' WHERE username = 'dr_li'")
    assert send(senior, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "final", "revision": "1",
                                                        "findings": "F", "impression": "I",
                                                        "result_class": "normal"}).status_code == 302
    footer = rad.get(f"/exams/{imaged}/report/print").get_data(as_text=True).split("<footer>")[1]
    assert re.search(r'Reporting radiologist: <strong class="signer">王医生</strong>', footer)
    assert re.search(r'Reviewing radiologist: <strong class="reviewer">李主任</strong>', footer)
    assert "dr_wang" not in footer and "dr_li" not in footer


def test_with_review_one_radiologist_submits_and_another_who_may_review_issues_it(
        app, conn, rad, imaged, client_as) -> None:
    from pacslite.core import config
    app.config["MODALITIES"] = [{**m, "review": "review"} if m["code"] == "CT" else m
                                for m in app.config["MODALITIES"]]
    assert config.review_required(app.config, "CT") and not config.review_required(app.config, "DR")
    with conn:
        conn.execute("UPDATE users SET can_review = 1, display_name = '王医生' WHERE username = 'dr_wang'")
    page = rad.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert "Submit for review" in page and "Sign final" not in page
    final = {"confirm": "1", "level": "final", "findings": "F", "impression": "I", "result_class": "normal"}
    assert send(rad, f"/exams/{imaged}/report/sign", {**final, "revision": "0"}).status_code == 409  # not submitted
    assert send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "level": "preliminary", "revision": "0",
                                                    "findings": "F", "impression": "I"}).status_code == 302
    own = send(rad, f"/exams/{imaged}/report/sign", {**final, "revision": "1"})
    assert own.status_code == 409 and "another radiologist reviews it" in own.get_data(as_text=True)
    junior = client_as("radiologist", username="dr_zhao")  # a radiologist without the review permission
    assert send(junior, f"/exams/{imaged}/report/sign", {**final, "revision": "1"}).status_code == 409
    assert "Review and issue final" not in junior.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert version_rows(conn, imaged)[0]["status"] == "preliminary"

    senior = client_as("radiologist", username="dr_li")
    with conn:
        conn.execute("UPDATE users SET can_review = 1, display_name = '李主任' WHERE username = 'dr_li'")
    waiting = senior.get("/reading?review=1").get_data(as_text=True)
    assert imaged in waiting
    assert imaged not in rad.get("/reading?review=1").get_data(as_text=True)  # not their own to review
    assert "Review and issue final" in senior.get(f"/exams/{imaged}/report").get_data(as_text=True)
    assert send(senior, f"/exams/{imaged}/report/sign", {**final, "revision": "1"}).status_code == 302
    issued = version_rows(conn, imaged)[0]
    assert (issued["status"], issued["preliminary_by"], issued["signed_by"]) == ("final", "dr_wang", "dr_li")
    footer = rad.get(f"/exams/{imaged}/report/print").get_data(as_text=True).split("<footer>")[1]
    assert "王医生" in footer and "李主任" in footer


def test_an_admin_gives_the_review_permission_and_it_is_audited(conn, client_as) -> None:
    from pacslite.ris import users
    admin = client_as("admin", username="boss_r")
    doctor = users.create(conn, audit.SYSTEM, {"username": "dr_sun", "password": "Secret-pass-1",
                                               "roles": ["radiologist"]})
    assert not doctor.can_review
    page = admin.get(f"/admin/users/{doctor.id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    saved = admin.post(f"/admin/users/{doctor.id}", data={"csrf_token": token, "display_name": "孙医生",
                                                          "roles": ["radiologist"], "active": "on",
                                                          "can_review": "on"})
    assert saved.status_code == 302
    assert users.get(conn, doctor.id).can_review
    detail = conn.execute("SELECT detail FROM audit_log WHERE action = 'user.update' ORDER BY id DESC").fetchone()[0]
    assert '"can_review": true' in detail and '"can_review": false' in detail


def test_a_radiologist_takes_an_exam_and_the_others_see_who_has_it(app, conn, rad, imaged, client_as) -> None:
    other = client_as("radiologist", username="dr_li")
    assert send(rad, "/reading/take", {"take": imaged}).status_code == 303
    assert patients.get_exam(conn, imaged)["taken_by"] == "dr_wang"
    listed = other.get("/reading").get_data(as_text=True)
    assert 'class="taken">Name of dr_wang</span>' in listed and "Take over" in listed
    assert "has taken this exam" in other.get(f"/exams/{imaged}/report").get_data(as_text=True)
    # another radiologist cannot take it by accident, nor release it
    refused = send(other, "/reading/take", {"take": imaged}, follow_redirects=True)
    assert "Name of dr_wang has taken this exam." in refused.get_data(as_text=True)
    send(other, "/reading/take", {"release": imaged})
    assert patients.get_exam(conn, imaged)["taken_by"] == "dr_wang"
    # taking it over is explicit and audited with whom it was taken from
    send(other, "/reading/take", {"force": imaged})
    assert patients.get_exam(conn, imaged)["taken_by"] == "dr_li"
    detail = conn.execute("SELECT detail FROM audit_log WHERE action = 'report.take' ORDER BY id DESC").fetchone()[0]
    assert '"from": "dr_wang"' in detail
    send(other, "/reading/take", {"release": imaged})
    assert patients.get_exam(conn, imaged)["taken_by"] is None
    assert send(other, "/reading/take", {"nothing": imaged}).status_code == 400
    assert send(other, "/reading/take", {"take": "A-NO-SUCH"}).status_code == 404
    assert send(client_as("clinician"), "/reading/take", {"take": imaged}).status_code == 403


def test_the_reading_list_shows_age_sex_and_targets_by_priority(app, conn, rad, tmp_path) -> None:
    stat = register(app, conn, priority="stat", birth_date="1950-06-01")
    add_image(app, conn, tmp_path, stat)
    [item] = reports.reading_list(conn, app.config)
    assert item.target_hours == 1  # a STAT CT: 1 h, not the modality's 8
    page = rad.get("/reading").get_data(as_text=True)
    assert re.search(r"Male · 7\d y", page) and "<td>1 h</td>" in page


def test_a_radiologist_lands_on_the_reading_list(app, conn, client_as) -> None:
    assert client_as("radiologist", username="dr_land").get("/").location.endswith("/reading")
    assert client_as("registrar").get("/").location.endswith("/exams")


def test_a_prior_opens_beside_only_with_its_final_report(app, conn, rad, imaged, tmp_path) -> None:
    later = register(app, conn)
    add_image(app, conn, tmp_path, later)
    assert rad.get(f"/exams/{imaged}/report/prior", headers=HTMX).status_code == 404  # no final report yet
    send(rad, f"/exams/{imaged}/report/sign", {"confirm": "1", "result_class": "normal", "level": "final",
                                               "revision": "0", "findings": "Clear lungs.", "impression": "Normal"})
    assert f'id="prior-{imaged}"' in rad.get(f"/exams/{later}/report").get_data(as_text=True)
    beside = rad.get(f"/exams/{imaged}/report/prior", headers=HTMX).get_data(as_text=True)
    assert 'id="prior-report"' in beside and "Clear lungs." in beside and "<html" not in beside
    assert rad.get(f"/exams/{imaged}/report/prior").location.endswith(f"/exams/{imaged}/report")
    assert rad.get("/exams/A-NO-SUCH/report/prior", headers=HTMX).status_code == 404


def test_workload_per_technologist_and_radiologist_per_day_and_target(app, conn, rad, tmp_path, client_as) -> None:
    """Issue 19: who performed and who reported how much, per modality and day, and how many
    reports met their target, by target; shown to admins and radiologists, not to the desk."""
    from pacslite import statistics
    tech = client_as("technologist", username="tech_li")
    second = client_as("radiologist", username="dr_zhao")
    late = {"routine": 2, "stat": 2}  # hours from the first image to the report: STAT (1 h) late, CT (8 h) in time
    for priority, value in late.items():
        accession = register(app, conn, priority=priority)
        assert add_image(app, conn, tmp_path, accession).result == filing.FILED
        assert send(tech, f"/exams/{accession}/done", {"images_acquired": "1"}).status_code == 302
        signed = send(rad, f"/exams/{accession}/report/sign", {"confirm": "1", "result_class": "normal",
                                                               "level": "final", "revision": "0",
                                                               "findings": "F", "impression": "I"})
        assert signed.status_code == 302, signed.get_data(as_text=True)
        with conn:  # the due time kept at signing no longer holds: compared by clock hours
            images_came_hours_before_report(conn, accession, value)
    dr = register(app, conn, modality="DR", procedure="Chest PA")
    assert add_image(app, conn, tmp_path, dr).result == filing.FILED
    assert send(second, f"/exams/{dr}/report/sign", {"confirm": "1", "result_class": "normal", "level": "preliminary",
                                                     "revision": "0", "findings": "F", "impression": "I"}
                ).status_code == 302
    today = clock.local_today(app.config["TIMEZONE"])
    work = statistics.workload(conn, app.config, today, today)
    (technologist,) = work.technologists
    assert (technologist.name, technologist.exams, technologist.images, dict(technologist.modalities)) == (
        "tech_li", 2, 2, {"CT": 2})
    people = {p.name: p for p in work.radiologists}
    assert (people["dr_wang"].reports, people["dr_wang"].within_target, people["dr_wang"].turnaround_median) == (
        2, 1, 2.0)
    assert (people["dr_zhao"].reports, people["dr_zhao"].preliminary) == (0, 1)
    assert work.days == {(today.isoformat(), "CT"): [2, 2, 2, 0]}
    compliance = statistics.report(conn, app.config, today, today).compliance
    assert compliance == {1.0: [1, 0], 8.0: [1, 1]}  # STAT 1 h missed, routine CT 8 h met
    admin = client_as("admin")
    assert 'hx-get="/statistics/workload?' in admin.get("/statistics").get_data(as_text=True)  # loaded after
    part = admin.get(f"/statistics/workload?start={today}&end={today}", headers={"HX-Request": "true"})
    page = part.get_data(as_text=True)
    assert 'id="work-radiologists"' in page and "Name of dr_wang" in page and "Name of tech_li" in page
    assert "<html" not in page  # the partial
    assert 'id="workload' not in client_as("registrar").get("/statistics").get_data(as_text=True)
    assert client_as("registrar").get("/statistics/workload").status_code == 403
