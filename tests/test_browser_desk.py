"""Issue 26's "done when", in Debian's Chromium, in Chinese, against the real process: the desk
registers patients with real ID cards (issuing offices younger than their holders), an age only,
a date typed 19580312 and an emergency with Ctrl+Enter from the clinical note; the receipt says
紧急 and promises a 22:38 routine CT within the reporting hours; a report with an unfilled blank
is not signed; a technologist files a quarantined study to its likely exam."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_for
from tests.test_browser import browser, log_in, modality_pacs, watch_console  # noqa: F401 (fixtures)
from tests.test_desk_words import YOUNG_OFFICES, card

pytestmark = pytest.mark.browser
DAYTIME = {day: ["08:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def register_at_desk(page, url: str, fields: dict[str, str], *, choose: dict[str, str] | None = None,
                     submit_from: str = "") -> str:
    """Fill the registration form as the desk types it and register; the accession number."""
    page.goto(f"{url}/exams/new")
    for selector, value in (choose or {}).items():
        page.select_option(selector, value)
        if selector == "#f-modality":  # the modality's procedure and station fields replace the old (htmx)
            page.wait_for_selector(f"#exam-choices[data-modality='{value}']", state="attached")
    for selector, value in fields.items():
        page.fill(selector, value)
    # The last field's change (an ID card number's offer, a patient looked up) is answered before
    # the click: its answer appearing above the button must not move it away from the click.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.wait_for_load_state("networkidle")
    if submit_from:
        page.click(submit_from)
        page.keyboard.press("Control+Enter")
    else:
        page.click("#exam-form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(url) + r"/exams/new\?registered=A\d+$"))
    return page.url.split("registered=")[1]


def test_the_desk_in_chinese_meets_real_cards_ages_and_the_night(browser, tmp_path, modality_pacs) -> None:
    pacs = modality_pacs(PACSLITE_REPORTING_HOURS=json.dumps(DAYTIME))
    pacs.add_user("desk_zh", "registrar")
    pacs.add_user("dr_zh", "radiologist", display_name="王医生")
    pacs.add_user("tech_zh", "technologist")
    url = pacs.server.url
    problems: list[str] = []
    context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768})
    context.add_init_script("window.print = function () { window.top.__printed = (window.top.__printed || 0) + 1; };")
    desk = context.new_page()
    watch_console(desk, problems)
    log_in(desk, url, "desk_zh", "Secret-pass-1")
    assert desk.locator("h1").first.inner_text() != ""

    # Every card of an office younger than its holder registers, born 1950 and 1985, the birth
    # date typed as eight digits.
    patient = {"#f-name": "测试", "#f-phone": "13800000000", "#f-procedure": "胸部正位"}
    for area in YOUNG_OFFICES:
        for born in ("19500312", "19850615"):
            number = card(area, born)
            register_at_desk(desk, url, {"#f-patient_id": f"IC{area}{born[:4]}", **patient,
                                         "#f-birth_date": born, "#f-national_id": number},
                             choose={"#f-sex": "M", "#f-modality": "DR", "#f-source": "outpatient"})
            assert desk.locator("#registered").count() == 1
    stored = dict(pacs.query("SELECT patient_id, national_id FROM patients WHERE patient_id LIKE 'IC%'"))
    assert len(stored) == 16 and stored["IC3101151950"] == card("310115", "19500312")

    # 19580312 as typed; the form says what it read before she registers
    desk.goto(f"{url}/exams/new")
    desk.fill("#f-birth_date", "19580312")
    desk.wait_for_selector("#understood-birth_date >> text=识别为 1958-03-12")
    register_at_desk(desk, url, {"#f-patient_id": "TYPED1", **patient, "#f-birth_date": "19580312"},
                     choose={"#f-sex": "F", "#f-modality": "DR", "#f-source": "outpatient"})
    # an age only: an estimated birth date, marked so
    register_at_desk(desk, url, {"#f-patient_id": "AGE1", **patient, "#f-birth_date": "67岁"},
                     choose={"#f-sex": "F", "#f-modality": "DR", "#f-source": "outpatient"})
    assert pacs.query("SELECT birth_date, birth_date_estimated FROM patients WHERE patient_id = 'AGE1'")[0][1] == 1
    desk.goto(f"{url}/patients/AGE1")
    assert "由年龄推算" in desk.locator("dl").first.inner_text()

    # an emergency, registered with Ctrl+Enter from the clinical note, the last field
    emergency = register_at_desk(desk, url, {"#f-patient_id": "EM1", **patient, "#f-procedure": "头颅CT平扫",
                                             "#f-birth_date": "1970-05-06", "#f-clinical_note": "车祸伤，头痛"},
                                 choose={"#f-sex": "M", "#f-modality": "CT", "#f-source": "emergency",
                                         "#f-priority": "stat"}, submit_from="#f-clinical_note")
    wait_for(lambda: desk.evaluate("window.__printed || 0") == 1, "the emergency's receipt printing")
    receipt = context.new_page()
    receipt.goto(f"{url}/exams/{emergency}/receipt")
    assert receipt.locator("#receipt-priority").inner_text() == "紧急"
    assert "危急" not in receipt.content()
    receipt.close()

    # a routine CT registered at 22:38: its report is promised within the reporting hours
    night = register_at_desk(desk, url, {"#f-patient_id": "NIGHT1", **patient, "#f-procedure": "胸部CT平扫",
                                         "#f-birth_date": "1980.2.3", "#f-scheduled_date": "2026-12-04",
                                         "#f-scheduled_time": "2238"},
                             choose={"#f-sex": "M", "#f-modality": "CT", "#f-source": "outpatient"})
    receipt = context.new_page()
    receipt.goto(f"{url}/exams/{night}/receipt")
    slip = receipt.locator("article.slip").inner_text()
    assert "2026-12-04 22:38" in slip and "2026-12-05 16:00" in slip and "06:38" not in slip, slip
    receipt.close()
    assert problems == []

    # A report with an unfilled blank is not signed.
    reg = pacs.register(patient_id="BL1")
    pacs.send_series(tmp_path / "blank", 1, accession=reg.accession_number, patient_id="BL1", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    doctor = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768}).new_page()
    watch_console(doctor, problems)
    log_in(doctor, url, "dr_zh", "Secret-pass-1")
    doctor.goto(f"{url}/exams/{reg.accession_number}/report")
    doctor.fill("#f-findings", "右肺上叶结节，大小约__mm×__mm。")
    doctor.fill("#f-impression", "右肺上叶结节。")
    doctor.check("#result-class input[value=abnormal]")
    doctor.click("#report-form button[name=level][value=final]")
    doctor.wait_for_selector("#e-findings")
    assert "第 1 行" in doctor.locator("#e-findings").inner_text()
    assert doctor.evaluate("document.activeElement.id") == "f-findings"
    assert doctor.evaluate("document.activeElement.value.substring(document.activeElement.selectionStart,"
                           " document.activeElement.selectionEnd)") == "__"
    assert doctor.locator("#confirm-sign").count() == 0
    assert pacs.query("SELECT status FROM exams WHERE accession_number = ?", reg.accession_number)[0][0] \
        == "in_progress"

    # A technologist files a quarantined study (a typo at the console) to its likely exam.
    right = pacs.register(patient_id="WM1", name="吴敏", sex="F", birth_date="1972-02-28")
    typo = right.accession_number[:-3] + str((int(right.accession_number[-3]) + 1) % 10) + right.accession_number[-2:]
    pacs.send_series(tmp_path / "typo", 2, accession=typo, patient_id="WM1", name="WU^MIN", sex="F",
                     birth_date="19720228")
    tech = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768}).new_page()
    watch_console(tech, problems)
    log_in(tech, url, "tech_zh", "Secret-pass-1")
    tech.goto(f"{url}/quarantine/")
    row = tech.locator("#quarantine tbody tr").first.inner_text()
    assert "WU MIN" in row and "1972-02-28" in row and "WU^MIN" not in row, row
    tech.click("#quarantine .study-link")
    tech.wait_for_selector("#file-to-candidate")
    assert tech.locator(f"#file-to-candidate input[value='{right.accession_number}']").is_checked()
    tech.fill("#f-file_reason", "控制台输错检查号")
    tech.click("#file-to-candidate button[type=submit]")
    tech.wait_for_selector("text=图像集已归档")
    filed = pacs.query("SELECT e.accession_number FROM studies s JOIN exams e ON e.id = s.exam_ref"
                       " WHERE s.quarantine_reason IS NULL AND e.accession_number = ?", right.accession_number)
    assert pacs.query("SELECT COUNT(*) FROM studies WHERE quarantine_reason IS NOT NULL")[0][0] == 0
    assert [tuple(r) for r in filed] == [(right.accession_number,)]
    assert [tuple(r) for r in pacs.query("SELECT actor FROM audit_log WHERE action = 'image.refile'")] == [("tech_zh",)]
    assert [p for p in problems if "400" not in p] == []  # the refused signature answers 400, as it should
    context.close()
