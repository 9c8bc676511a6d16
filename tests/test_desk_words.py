"""The desk and the words as the department meets them (issue 26): real ID cards accepted, STAT
never read as 危急值."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
from babel.messages.pofile import read_po
from stdnum.cn import ric

from pacslite.core import datetext, workhours
from pacslite.core.validation import ValidationError
from pacslite.ris import idcard, patients
from tests.conftest import EXAM_FORM, ROOT, post, register

CATALOGUE = ROOT / "pacslite" / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"
#: Area codes of offices created after many of their card holders were born (the cards valid).
YOUNG_OFFICES = ["310115", "440106", "440305", "420111", "320102", "330106", "510104", "500103"]


def card(area: str, born: str, order: str = "123") -> str:
    """A valid resident ID card number: the area, the birth date, the order code, the check."""
    body = area + born + order
    return body + ric.calc_check_digit(body + "0")


@pytest.mark.parametrize("area", YOUNG_OFFICES)
@pytest.mark.parametrize("born", ["19500312", "19850615"])
def test_a_card_from_an_office_younger_than_its_holder_registers(client_as, conn, area: str, born: str) -> None:
    number = card(area, born)
    desk = client_as("registrar")
    birth = f"{born[:4]}-{born[4:6]}-{born[6:]}"
    register(desk, patient_id=f"C{area}{born[:4]}", birth_date=birth, national_id=number)
    assert patients.get_patient(conn, f"C{area}{born[:4]}")["national_id"] == number
    offer = desk.get(f"/patients/id-card?national_id={number}&sex=M&birth_date={birth}",
                     headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="id-card-invalid"' not in offer and 'id="id-card-area"' not in offer


def test_an_area_code_nobody_knows_is_a_note_not_a_refusal(client_as, conn) -> None:
    number = card("999999", "19700101")
    desk = client_as("registrar")
    note = desk.get(f"/patients/id-card?national_id={number}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="id-card-area"' in note and "999999" in note and 'id="id-card-invalid"' not in note
    register(desk, patient_id="AREA1", birth_date="1970-01-01", national_id=number)
    assert patients.get_patient(conn, "AREA1")["national_id"] == number


@pytest.mark.parametrize(("number", "says"), [
    ("31011519500312123", "18 characters"),                     # one short
    ("3101151950031212A4", "18 characters"),                    # a letter inside
    (card("310115", "19500231")[:-1] + "0", "19500231"),        # 31 February
    (card("310115", "20991231"), "20991231"),                   # born in the future
    (card("310115", "19500312")[:-1] + "9", "does not agree"),  # the check character
])
def test_a_wrong_number_says_which_part_is_wrong_and_registers_nothing(client_as, conn, number: str,
                                                                        says: str) -> None:
    with pytest.raises(ValidationError) as raised:
        idcard.read(number, today=date(2026, 12, 4))
    assert says in raised.value.message % raised.value.params
    desk = client_as("registrar")
    response = post(desk, "/exams/new", {**EXAM_FORM, "national_id": number})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and re.search(r'id="e-national_id" role="alert">[^<]*' + re.escape(says), page)
    assert patients.find_patient(conn, "P0001") is None


def test_the_card_says_birth_date_and_sex() -> None:
    read = idcard.read(" " + card("110105", "19491231", "002").lower() + " ")
    assert (read.birth_date, read.sex, read.area_known) == (date(1949, 12, 31), "F", True)


# ---------------------------------------------------------------- words

def _catalogue() -> dict[str, str]:
    """The zh_CN catalogue: msgid -> msgstr (a context's message by its msgid)."""
    with open(CATALOGUE, "rb") as handle:
        catalog = read_po(handle)
    return {m.id if isinstance(m.id, str) else m.id[0]: m.string if isinstance(m.string, str) else m.string[0]
            for m in catalog if m.id}


def test_a_priority_is_never_called_critical() -> None:
    """STAT is 紧急 and urgent 加急: 危急 is the word clinicians read as 危急值 (a critical value)."""
    words = {msgid: msgstr for msgid, msgstr in _catalogue().items() if msgid in ("STAT", "Urgent", "Routine")}
    assert words == {"STAT": "紧急", "Urgent": "加急", "Routine": "常规"}


def test_only_critical_findings_are_called_critical_in_chinese() -> None:
    """Every msgstr with 危急 translates a msgid about a critical finding (a finding, here)."""
    wrong = [msgid for msgid, msgstr in _catalogue().items()
             if "危急" in msgstr and not any(word in msgid.lower() for word in ("critical", "finding"))
             and msgid != "Nothing waits for acknowledgement."]  # the critical findings page's empty list
    assert wrong == []


def test_the_chinese_receipt_prints_the_priority_as_urgent_not_critical(client_as) -> None:
    desk = client_as("registrar")
    accession = register(desk, priority="stat", source="emergency")
    post(desk, "/language", {"language": "zh_CN"})
    receipt = desk.get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert "紧急" in receipt and "危急" not in receipt


# ---------------------------------------------------------------- a phrase's blanks

@pytest.mark.parametrize("level", ["preliminary", "final"])
def test_a_report_with_an_unfilled_blank_is_not_signed(app, conn, client_as, tmp_path, level: str) -> None:
    from tests.test_reports import add_image, register as register_exam, version_rows
    accession = register_exam(app, conn)
    add_image(app, conn, tmp_path, accession)
    rad = client_as("radiologist", username="dr_blank")
    form = {"findings": "右肺上叶结节。\n大小约__mm×__mm，边界清。", "impression": "右肺上叶结节，建议随访。",
            "result_class": "abnormal", "level": level, "revision": "0"}
    for confirm in ("", "1"):  # neither the confirmation nor a forged confirmed form signs it
        refused = post(rad, f"/exams/{accession}/report/sign", {**form, "confirm": confirm})
        page = refused.get_data(as_text=True)
        assert refused.status_code == 400
        assert re.search(r'id="e-findings" role="alert">Fill in the blank \(__\) before signing, line 2: '
                         r'大小约__mm×__mm', page)
        assert 'id="f-findings" name="findings" rows="12" maxlength="20000" aria-invalid="true" data-select-blank' in page
        assert 'id="e-impression"' not in page
    assert [v["status"] for v in version_rows(conn, accession)] in ([], ["draft"])
    assert patients.get_exam(conn, accession)["status"] == "in_progress"
    full_width = post(rad, f"/exams/{accession}/report/sign", {**form, "findings": "边界清。",
                                                                "impression": "结节＿＿枚。"})
    assert full_width.status_code == 400 and 'id="e-impression"' in full_width.get_data(as_text=True)
    filled = post(rad, f"/exams/{accession}/report/sign", {**form, "findings": "大小约8mm×6mm，边界清。",
                                                            "confirm": "1"})
    assert filled.status_code == 302
    assert patients.get_exam(conn, accession)["status"] == level


# ---------------------------------------------------------------- dates as the desk types them

TODAY = date(2026, 12, 4)


@pytest.mark.parametrize("typed", ["19580312", "1958-03-12", "1958-3-12", "1958.3.12", "1958/3/12", "1958年3月12日",
                                   " 1958.03.12 "])
def test_a_date_is_read_in_every_form_the_desk_types(typed: str) -> None:
    read = datetext.read_date(typed, "birth_date", TODAY, ages=True)
    assert read == datetext.TypedDate(date(1958, 3, 12)) and not read.estimated


@pytest.mark.parametrize(("typed", "born", "age"), [
    ("67岁", date(1959, 12, 4), (67, "years")), ("67y", date(1959, 12, 4), (67, "years")),
    ("8月", date(2026, 4, 4), (8, "months")), ("8个月", date(2026, 4, 4), (8, "months")),
    ("15天", date(2026, 11, 19), (15, "days")), ("15d", date(2026, 11, 19), (15, "days")),
])
def test_an_age_gives_an_estimated_birth_date(typed: str, born: date, age: tuple[int, str]) -> None:
    read = datetext.read_date(typed, "birth_date", TODAY, ages=True)
    assert (read.value, read.age, read.estimated) == (born, age, True)
    assert datetext.age_in(read.value, TODAY, age[1]) == age[0]


@pytest.mark.parametrize("typed", ["80312", "1958-02-30", "12/03/1958", "03121958", "67", "200岁", "1858-01-01"])
def test_a_date_that_cannot_be_read_is_refused(typed: str) -> None:
    with pytest.raises(ValidationError):
        datetext.read_date(typed, "birth_date", TODAY, ages=True)


def test_an_age_is_not_a_scheduled_date() -> None:
    with pytest.raises(ValidationError):
        datetext.read_date("3天", "scheduled_date", TODAY)


@pytest.mark.parametrize(("typed", "read"), [("22:38", (22, 38)), ("2238", (22, 38)), ("8:05", (8, 5)),
                                             ("0805", (8, 5)), ("22：38", (22, 38)), ("", None)])
def test_a_time_is_read_on_the_24_hour_clock(typed: str, read) -> None:
    moment = datetext.read_time(typed, "scheduled_time")
    assert (moment.hour, moment.minute) == read if read else moment is None


@pytest.mark.parametrize("typed", ["10:38 PM", "24:00", "2260", "7"])
def test_a_time_that_cannot_be_read_is_refused(typed: str) -> None:
    with pytest.raises(ValidationError):
        datetext.read_time(typed, "scheduled_time")


def test_the_desk_registers_with_typed_dates_an_age_and_a_24_hour_time(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk, patient_id="D1", birth_date="19580312", scheduled_date="2026.12.4",
                         scheduled_time="2238")
    patient = patients.get_patient(conn, "D1")
    assert (patient["birth_date"], patient["birth_date_estimated"]) == ("1958-03-12", 0)
    assert patients.get_exam(conn, accession)["scheduled_at"] == "2026-12-04T14:38:00+00:00"  # 22:38 in Shanghai
    register(desk, patient_id="D2", birth_date="67岁")
    estimated = patients.get_patient(conn, "D2")
    assert estimated["birth_date_estimated"] == 1
    assert datetext.age_in(date.fromisoformat(estimated["birth_date"]), date.today(), "years") == 67
    assert "(estimated from the age)" in desk.get("/patients/D2").get_data(as_text=True)
    register(desk, patient_id="D2", birth_date="67岁")  # the same age again: no question, nothing changed
    assert patients.get_patient(conn, "D2")["birth_date"] == estimated["birth_date"]
    bad = post(desk, "/exams/new", {**EXAM_FORM, "patient_id": "D3", "birth_date": "80312",
                                    "scheduled_date": "3天", "scheduled_time": "10:38 PM"})
    page = bad.get_data(as_text=True)
    assert bad.status_code == 400 and all(f'id="e-{f}"' in page for f in ("birth_date", "scheduled_date",
                                                                           "scheduled_time"))
    assert patients.find_patient(conn, "D3") is None


def test_the_form_says_what_it_read_while_the_desk_types(client_as) -> None:
    desk = client_as("registrar")
    hx = {"HX-Request": "true"}
    read = desk.get("/exams/understood?field=birth_date&birth_date=19580312", headers=hx).get_data(as_text=True)
    assert "Read as 1958-03-12" in read
    age = desk.get("/exams/understood?field=birth_date&birth_date=15天", headers=hx).get_data(as_text=True)
    assert "estimated from the age" in age
    time_read = desk.get("/exams/understood?field=scheduled_time&scheduled_time=2238", headers=hx)
    assert "Read as 22:38" in time_read.get_data(as_text=True)
    wrong = desk.get("/exams/understood?field=scheduled_time&scheduled_time=10pm", headers=hx).get_data(as_text=True)
    assert 'class="error"' in wrong and "24-hour" in wrong
    assert desk.get("/exams/understood?field=name&name=x", headers=hx).status_code == 404
    form = desk.get("/exams/new").get_data(as_text=True)
    assert 'type="date"' not in form and 'type="time"' not in form


# ---------------------------------------------------------------- after registering

def test_registering_prints_the_receipt_and_returns_to_an_empty_form(client_as, conn) -> None:
    desk = client_as("registrar")
    response = post(desk, "/exams/new", {**EXAM_FORM, "patient_id": "NEXT1"})
    assert response.status_code == 302 and response.location.startswith("/exams/new?registered=A")
    accession = response.location.split("registered=")[1]
    page = desk.get(response.location).get_data(as_text=True)
    assert f"Registered {accession} for 张三 (NEXT1)." in page and "The receipt is printing." in page
    assert f'src="/exams/{accession}/receipt?print=1"' in page  # printed from a frame of the empty form
    assert 'id="f-patient_id" name="patient_id" type="text" value=""' in page  # the form is empty
    assert "cough" not in page
    again = desk.get(response.location).get_data(as_text=True)  # a reload names it but prints nothing
    assert f"Registered {accession}" in again and 'src="about:blank"' in again and 'id="print-again"' in again
    assert desk.get("/exams/new?registered=NOSUCH").get_data(as_text=True).count('id="registered"') == 0


# ---------------------------------------------------------------- the smaller things

def test_a_reviewer_is_not_told_the_writer_is_still_editing_a_submitted_report(app, conn, client_as, tmp_path) -> None:
    from tests.test_reports import add_image, register as register_exam
    app.config["REPORT_REVIEW"] = True
    accession = register_exam(app, conn)
    add_image(app, conn, tmp_path, accession)
    writer = client_as("radiologist", username="dr_writer")
    assert post(writer, f"/exams/{accession}/report/save", {"findings": "F", "impression": "I",
                                                            "revision": "0"}).status_code in (200, 204)
    reviewer = client_as("radiologist", username="dr_reviewer")
    assert 'id="holder"' in reviewer.get(f"/exams/{accession}/report").get_data(as_text=True)  # while writing
    assert post(writer, f"/exams/{accession}/report/sign", {"confirm": "1", "level": "preliminary", "revision": "1",
                                                            "findings": "F", "impression": "I"}).status_code == 302
    assert 'id="holder"' not in reviewer.get(f"/exams/{accession}/report").get_data(as_text=True)


def test_the_registrar_is_not_offered_the_report_page_button(client_as) -> None:
    desk = client_as("registrar")
    accession = register(desk)
    assert 'id="open-report"' not in desk.get(f"/exams/{accession}").get_data(as_text=True)
    assert 'id="open-report"' in client_as("radiologist").get(f"/exams/{accession}").get_data(as_text=True)


def test_the_users_list_says_who_may_review(conn, client_as) -> None:
    client_as("radiologist", username="dr_senior")
    with conn:
        conn.execute("UPDATE users SET can_review = 1 WHERE username = 'dr_senior'")
    page = client_as("admin").get("/admin/users").get_data(as_text=True)
    row = re.search(r">dr_senior</a></td>.*?</tr>", page, re.S).group(0)
    assert '<td class="may-review">✓ Reviews</td>' in row
    assert '<td class="may-review"></td>' in re.search(r">u_admin</a></td>.*?</tr>", page, re.S).group(0)


def test_the_audit_log_in_chinese_says_why_an_exam_moved_in_chinese(app, conn, client_as) -> None:
    from pacslite.core import audit
    from pacslite.core.db import transaction
    with transaction(conn):
        for cause in ("first image filed", "technologist: exam done", "MPPS COMPLETED from CT01"):
            audit.record(conn, audit.SYSTEM, "exam.state", "exam:A1", detail={"from": "scheduled",
                                                                              "to": "in_progress", "cause": cause})
        audit.record(conn, audit.SYSTEM, "report.sign", "exam:A1", detail={"level": "final",
                                                                            "result_class": "abnormal"})
    admin = client_as("admin")
    post(admin, "/language", {"language": "zh_CN"})
    page = admin.get("/admin/audit").get_data(as_text=True)
    rows = re.sub(r"<details.*?</details>", "", page.split("<tbody>")[1].split("</tbody>")[0], flags=re.S)
    shown = re.sub(r"<[^>]+>", " ", rows)  # what a reader sees, the raw JSON folded away
    assert "首幅图像已归档" in shown and "技师：检查完成" in shown and "CT01 发来的 MPPS：" in shown
    for english in ("first image filed", "exam done", "abnormal", "final"):
        assert english not in shown, english


@pytest.mark.parametrize(("department", "note", "shown"), [
    ("", "", ("放射科", "本报告仅供临床参考。")),
    ("影像科", "-", ("影像科",)),
])
def test_the_printed_report_has_the_department_line_and_its_note(app, conn, client_as, tmp_path, department: str,
                                                                 note: str, shown: tuple[str, ...]) -> None:
    from tests.test_reports import add_image, register as register_exam
    app.config.update(REPORT_DEPARTMENT=department, REPORT_NOTE=note)
    accession = register_exam(app, conn)
    add_image(app, conn, tmp_path, accession)
    rad = client_as("radiologist", username="dr_print")
    assert post(rad, f"/exams/{accession}/report/sign", {"confirm": "1", "level": "final", "revision": "0",
                                                         "result_class": "normal", "findings": "F",
                                                         "impression": "I"}).status_code == 302
    post(rad, "/language", {"language": "zh_CN"})
    page = rad.get(f"/exams/{accession}/report/print").get_data(as_text=True)
    assert re.search(r'id="printed-department">' + shown[0] + "<", page)
    assert ('id="printed-note"' in page) == (note != "-")
    if note != "-":
        assert re.search(r'id="printed-note">' + shown[1] + "<", page)


# ---------------------------------------------------------------- the quarantine in people's words

def test_a_technologist_files_a_quarantined_study_to_its_likely_exam(app, conn, client_as, tmp_path) -> None:
    from tests.test_refiling import register as register_exam, send, study_of, typo_of
    right = register_exam(app, conn, patient_id="P0001", name="吴敏", sex="F", birth_date="1972-02-28")
    other = register_exam(app, conn, patient_id="P0009", name="李四", sex="M", birth_date="1990-01-01",
                          scheduled_at="2030-01-02T09:00")  # no sign points to it: not a likely exam
    uid = send(app, conn, tmp_path, accession=typo_of(right.accession_number), patient_id="P0001", name="WU^MIN",
               sex="F", birth_date="19720228")
    study = study_of(conn, uid)
    tech = client_as("technologist")
    page = tech.get("/quarantine/").get_data(as_text=True)
    assert "WU MIN" in page and "WU^MIN" not in page and "1972-02-28" in page and "19720228" not in page
    assert "Unknown accession number" in page or "accession" in page.lower()
    view = tech.get(f"/studies/{study['id']}").get_data(as_text=True)
    assert 'id="file-to-candidate"' in view and 'id="refile-form"' not in view  # the admin's form is not hers
    candidates = tech.get(f"/quarantine/studies/{study['id']}/candidates",
                          headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "most likely" in candidates and "Agrees:" in candidates
    assert not re.search(r"<strong>\d+</strong>", candidates)  # no bare score

    elsewhere = post(tech, f"/studies/{study['id']}/file", {"accession_number": other.accession_number,
                                                            "reason": "looks like it"})
    assert elsewhere.status_code == 409 and "not one of this study" in elsewhere.get_data(as_text=True)
    no_reason = post(tech, f"/studies/{study['id']}/file", {"accession_number": right.accession_number})
    assert no_reason.status_code == 400 and 'id="e-file_reason"' in no_reason.get_data(as_text=True)
    assert study_of(conn, uid)["exam_ref"] is None
    filed = post(tech, f"/studies/{study['id']}/file", {"accession_number": right.accession_number,
                                                        "reason": "typo at the console"})
    assert filed.status_code == 302
    after = study_of(conn, uid)
    assert after["exam_ref"] == patients.get_exam(conn, right.accession_number)["id"]
    row = conn.execute("SELECT actor, outcome FROM audit_log WHERE action = 'image.refile'").fetchone()
    assert tuple(row) == ("u_technologist", "success")
    # moving a filed study stays the administrator's
    again = post(tech, f"/studies/{study['id']}/file", {"accession_number": other.accession_number,
                                                        "reason": "wrong patient"})
    assert again.status_code == 409 and study_of(conn, uid)["exam_ref"] == after["exam_ref"]
    assert post(tech, f"/studies/{study['id']}/refile", {"accession_number": other.accession_number,
                                                         "reason": "x"}).status_code == 403


# ---------------------------------------------------------------- reporting hours

DAYTIME = {day: ["08:00-18:00"] for day in workhours.DAYS}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


@pytest.mark.parametrize(("start", "hours", "clock_hours", "due"), [
    ("2026-12-04T22:38+08:00", 8, False, "2026-12-05T16:00+08:00"),   # the night does not count
    ("2026-12-04T22:38+08:00", 8, True, "2026-12-05T06:38+08:00"),    # an emergency: around the clock
    ("2026-12-04T10:00+08:00", 1, False, "2026-12-04T11:00+08:00"),   # within the day
    ("2026-12-04T17:30+08:00", 2, False, "2026-12-05T09:30+08:00"),   # across the evening
    ("2026-12-04T06:00+08:00", 24, False, "2026-12-06T12:00+08:00"),  # 10 h a day: 10 + 10 + 4
])
def test_a_report_target_counts_the_reporting_hours(start: str, hours: float, clock_hours: bool, due: str) -> None:
    settings = {"REPORTING_HOURS": DAYTIME, "REPORTING_HOLIDAYS": [], "TIMEZONE": "Asia/Shanghai"}
    assert workhours.due(_utc(start), hours, settings, clock_hours) == _utc(due)


def test_holidays_and_days_without_hours_are_skipped() -> None:
    settings = {"REPORTING_HOURS": {**DAYTIME, "sat": [], "sun": ["08:00-12:00"]},
                "REPORTING_HOLIDAYS": ["2026-12-07"], "TIMEZONE": "Asia/Shanghai"}
    # Friday 17:00: 1 h on Friday, Saturday closed, 4 h on Sunday, Monday a holiday, 3 h on Tuesday
    assert workhours.due(_utc("2026-12-04T17:00+08:00"), 8, settings) == _utc("2026-12-08T11:00+08:00")
    assert workhours.due(_utc("2026-12-04T17:00+08:00"), 8, {**settings, "REPORTING_HOURS": {}}) == \
        _utc("2026-12-05T01:00+08:00")  # no timetable: every hour counts


@pytest.mark.parametrize("hours", [{"mon": "8-18"}, {"mon": ["18:00-08:00"]}, {"monday": ["08:00-18:00"]}])
def test_a_malformed_timetable_stops_the_start(tmp_path, hours) -> None:
    from pacslite.core import config
    with pytest.raises(SystemExit):
        config.load({"INSTANCE_DIR": str(tmp_path), "REPORTING_HOURS": hours})


def test_the_receipt_at_22_38_promises_the_report_within_the_reporting_hours(app, client_as) -> None:
    app.config["REPORTING_HOURS"] = DAYTIME
    desk = client_as("registrar")
    post(desk, "/language", {"language": "zh_CN"})
    routine = register(desk, patient_id="N1", scheduled_date="2026-12-04", scheduled_time="22:38")
    receipt = desk.get(f"/exams/{routine}/receipt").get_data(as_text=True)
    assert "2026-12-05 16:00" in receipt and "06:38" not in receipt  # CT: 8 h of reporting time
    emergency = register(desk, patient_id="N2", scheduled_date="2026-12-04", scheduled_time="22:38",
                         source="emergency", priority="stat")
    receipt = desk.get(f"/exams/{emergency}/receipt").get_data(as_text=True)
    assert "2026-12-04 23:38" in receipt and "紧急" in receipt  # STAT 1 h, around the clock


def test_the_statistics_count_a_report_within_the_reporting_hours(app, conn, client_as, tmp_path) -> None:
    """Images at 17:00, the report at 09:00 the next morning: 16 clock hours, but within a CT
    target of 8 reporting hours (1 h that evening, then from 08:00)."""
    from pacslite import statistics
    from pacslite.core import clock
    from tests.test_reports import add_image, register as register_exam
    app.config["REPORTING_HOURS"] = DAYTIME
    accession = register_exam(app, conn)
    add_image(app, conn, tmp_path, accession)
    evening = _utc(f"{clock.local_today('Asia/Shanghai')}T17:00+08:00")
    with conn:
        conn.execute("UPDATE exams SET images_first_at = ? WHERE accession_number = ?",
                     (clock.to_db(evening), accession))
    rad = client_as("radiologist", username="dr_hours")
    assert post(rad, f"/exams/{accession}/report/sign", {"confirm": "1", "level": "final", "revision": "0",
                                                         "result_class": "normal", "findings": "F",
                                                         "impression": "I"}).status_code == 302
    exam = patients.get_exam(conn, accession)
    assert exam["report_due_at"] == clock.to_db(evening + timedelta(hours=22))  # 16:00 the next day
    with conn:  # as if signed at 09:00 the next morning
        conn.execute("UPDATE exams SET reported_at = ? WHERE accession_number = ?",
                     (clock.to_db(evening + timedelta(hours=16)), accession))
    today = clock.local_today("Asia/Shanghai")
    total = statistics.report(conn, app.config, today, today).total
    assert (total.reported, total.within_target) == (1, 1)
    with conn:  # by clock hours it was late
        conn.execute("UPDATE exams SET report_due_at = NULL WHERE accession_number = ?", (accession,))
    assert statistics.report(conn, app.config, today, today).total.within_target == 0


def test_names_and_dates_from_a_header_read_as_people_write_them() -> None:
    from pacslite.core.names import dicom_person_name, readable_person_name
    from pacslite.web.i18n import dicom_datetime
    assert readable_person_name("WU^MIN=吴^敏") == "吴敏 (WU MIN)"
    assert readable_person_name("WU^MIN") == "WU MIN" and readable_person_name("") == ""
    assert readable_person_name(dicom_person_name("张三")) == "张三 (ZHANG SAN)"
    assert dicom_datetime("19720228") == "1972-02-28"
    assert dicom_datetime("1972") == "1972"  # a typo in a header stays visible, not blank


@pytest.mark.parametrize("who", ["technologist", "admin"])
def test_a_study_filed_by_someone_else_meanwhile_is_not_moved_again(app, conn, tmp_path, monkeypatch,
                                                                     who: str) -> None:
    """Two people correcting one study at once: the second finds it filed when its files are
    written, is refused, and its new files are removed; the first filing stands."""
    from pathlib import Path

    from pacslite.core import audit
    from pacslite.core.validation import Conflict
    from pacslite.pacs import refiling
    from tests.test_refiling import register as register_exam, send, study_of, typo_of
    right = register_exam(app, conn, patient_id="P0001", name="吴敏", sex="F", birth_date="1972-02-28")
    other = register_exam(app, conn, patient_id="P0002", name="吴敏", sex="F", birth_date="1972-02-28")
    uid = send(app, conn, tmp_path, accession=typo_of(right.accession_number), patient_id="P0001",
               name="WU^MIN", sex="F", birth_date="19720228")
    study_id = study_of(conn, uid)["id"]
    files_before = set(Path(app.config["STORAGE_DIR"]).rglob("*.dcm"))
    original = refiling._rewrite_all

    def meanwhile(*args, **kwargs):  # the other person's filing commits while these files are written
        monkeypatch.setattr(refiling, "_rewrite_all", original)
        refiling.refile(conn, audit.SYSTEM, app.config, study_id, {"accession_number": other.accession_number,
                                                                  "reason": "first"})
        return original(*args, **kwargs)

    monkeypatch.setattr(refiling, "_rewrite_all", meanwhile)
    data = {"accession_number": right.accession_number, "reason": "second"}
    with pytest.raises(Conflict):
        if who == "technologist":
            refiling.file_to_candidate(conn, audit.Actor("u_tech", "10.0.0.9"), app.config, study_id, data)
        else:
            refiling.refile(conn, audit.Actor("u_admin", "10.0.0.9"), app.config, study_id, data)
    assert study_of(conn, uid)["exam_ref"] == patients.get_exam(conn, other.accession_number)["id"]
    assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'image.refile'").fetchone()[0] == 1
    files_now = set(Path(app.config["STORAGE_DIR"]).rglob("*.dcm"))
    assert len(files_now - files_before) == 2  # the first filing's two files; the refused one's removed


def test_a_holiday_that_is_not_a_date_stops_the_start(tmp_path) -> None:
    from pacslite.core import config
    with pytest.raises(SystemExit):
        config.load({"INSTANCE_DIR": str(tmp_path), "REPORTING_HOLIDAYS": ["2027-13-01"]})
