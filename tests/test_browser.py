"""The issue's "done when", in Debian's Chromium driven by Playwright against the real process.

An admin logs in with the printed password and creates a registrar; the registrar registers a
patient and an exam, opens the receipt in print preview, and its barcode scans back as the
accession number; the registrar is refused the admin pages. No page breaks the CSP.
"""
from __future__ import annotations

import io
import re
import shutil

import pytest
import zxingcpp
from playwright.sync_api import expect
from PIL import Image, ImageDraw
from pydicom import dcmread

from tests import server as pacslite
from tests.conftest import ROOT, flask_cli, free_port, wait_for
from tests.dicomkit import make_ct, store_results, storescu

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    assert shutil.which(CHROMIUM), "Debian's chromium is not installed: run bin/test"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def live(tmp_path):
    running = pacslite.start(tmp_path / "instance")
    yield running
    assert running.stop() == 0


@pytest.fixture
def modality_pacs(tmp_path):
    """Start pacslite (with ``PACSLITE_*`` settings) that accepts storescu; stopped after the test."""
    started = []

    def start(**env: str) -> pacslite.Pacs:
        instance = tmp_path / "instance"
        assert flask_cli(instance, "ae", "add", "STORESCU", "--host", "127.0.0.1", "--modality", "CT").returncode == 0
        started.append(pacslite.Pacs(instance, **env))
        return started[-1]

    yield start
    for pacs in started:
        assert pacs.server.stop() == 0


def watch_console(page, problems: list[str]) -> None:
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))


def page_as(browser, pacs, username: str, problems: list[str], **context: object):
    """A new browser page logged in as ``username`` (password Secret-pass-1), its console
    errors collected in ``problems``."""
    page = browser.new_context(locale="en-US", **context).new_page()
    watch_console(page, problems)
    log_in(page, pacs.server.url, username, "Secret-pass-1")
    return page


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#f-username", username)
    page.fill("#f-password", password)
    page.click("button[type=submit].primary")
    # radiologists start on the reading list; a password an administrator set is changed first
    page.wait_for_url(re.compile(re.escape(url) + r"/(exams|reading|account/password)"))


def decode_barcode(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.Code128]


def test_newcomer_registers_an_exam_and_prints_a_scannable_receipt(browser, live) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    # 3 device pixels per CSS pixel: about 290 dpi, like a receipt printer rather than a screen.
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900}, device_scale_factor=3)
    # every frame's print() counted on the top window (the receipt prints from a frame of the form)
    context.add_init_script("window.print = function () { window.top.__printed = (window.top.__printed || 0) + 1; };")
    page = context.new_page()
    watch_console(page, problems)

    # The admin logs in with the password printed at first start and creates a registrar.
    log_in(page, live.url, "admin", live.admin_password)
    page.click("text=Users")
    page.click("text=New user")
    page.fill("#f-username", "desk1")
    page.fill("#f-display_name", "登记台一")
    page.fill("#f-password", "desk-password-1")
    page.check("input[name=roles][value=registrar]")
    page.click("button:has-text('Create user')")
    page.wait_for_url(f"{live.url}/admin/users")
    assert page.locator("table a:text-is('desk1')").count() == 1
    # ... adds the CT room as a station, and a CT procedure to the catalogue
    page.click("nav >> text=Modalities")
    page.click("text=Add modality")
    page.fill("#f-ae_title", "CT01")
    page.fill("#f-name", "CT room 1")
    page.fill("#f-location", "Building B, room 105")
    page.fill("#f-modality", "CT")
    page.click("button:has-text('Save')")
    page.wait_for_url(f"{live.url}/admin/modalities")
    page.click("nav >> text=Procedures")
    page.click("text=Add procedure")
    page.fill("#f-code", "CT-CHEST")
    page.select_option("#f-modality", "CT")
    page.fill("#f-name_zh", "胸部CT平扫")
    page.fill("#f-name_en", "CT chest, plain")
    page.fill("#f-body_part", "CHEST")
    page.fill("#f-default_station_ae", "CT01")
    page.fill("#f-target_hours", "8")
    page.fill("#f-target_stat_hours", "1")
    page.fill("#f-preparation", "Remove metal objects from the chest.")
    page.click("#procedure-form button:has-text('Save')")
    page.wait_for_url(re.compile(re.escape(live.url) + r"/admin/procedures"))
    assert page.locator("#procedures >> text=CT-CHEST").count() == 1
    page.click("button:has-text('Log out')")
    page.wait_for_url(f"{live.url}/login")

    # The registrar must first change the password the admin set, then registers a patient.
    log_in(page, live.url, "desk1", "desk-password-1")
    assert page.url == f"{live.url}/account/password"
    page.goto(f"{live.url}/exams/new")  # nothing else opens before
    page.wait_for_url(f"{live.url}/account/password")
    page.fill("#f-current_password", "desk-password-1")
    page.fill("#f-new_password", "my-own-desk-secret")
    page.fill("#f-new_password_again", "my-own-desk-secret")
    page.click("#password-form button[type=submit]")
    page.wait_for_url(f"{live.url}/exams")
    page.wait_for_selector("text=Your password has been changed.")
    # three mistakes at once (no sex, no modality, a malformed date): all three are shown together
    page.click("nav >> text=Register exam")
    page.wait_for_load_state()  # htmx (deferred) ready before typing
    page.fill("#f-patient_id", "MZ20261124")
    page.fill("#f-name", "王<b>芳</b>")
    page.fill("#f-procedure", "胸部 CT 平扫")
    page.fill("#f-birth_date", "1988-13-45")
    page.click("button:has-text('Register')")
    for field in ("sex", "modality", "birth_date"):
        expect(page.locator(f"#e-{field}")).to_be_visible()
    assert "1988-13-45 is not a date in the calendar." in page.locator("#e-birth_date").inner_text()
    assert problems == ["Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"]
    problems.clear()  # the refused form answers 400, as it should
    page.click("nav >> text=Register exam")
    page.wait_for_load_state()  # htmx (deferred) ready before typing
    page.fill("#f-patient_id", "MZ20261124")
    page.fill("#f-name", "王<b>芳</b>")
    page.select_option("#f-sex", "F")
    page.fill("#f-birth_date", "1988-07-15")
    page.fill("#f-phone", "13800138000")
    page.select_option("#f-modality", "DR")
    page.wait_for_selector("#exam-choices[data-modality=DR]", state="attached")  # its fields replace the old (htmx)
    page.select_option("#f-source", "outpatient")
    page.fill("#f-procedure", "胸部正位")  # DR has no catalogue: typed
    page.click("button:has-text('Register')")
    # one step: the receipt prints from a frame and the desk is back on an empty form
    page.wait_for_url(re.compile(re.escape(live.url) + r"/exams/new\?registered=A\d+$"))
    accession = page.url.split("registered=")[1]
    wait_for(lambda: page.evaluate("window.__printed || 0") == 1, "the receipt printing from the form's frame")
    assert page.input_value("#f-patient_id") == "" and page.input_value("#f-name") == ""
    assert f"Registered {accession} for 王<b>芳</b> (MZ20261124)." in page.locator("#registered").inner_text()
    page.click("#registered >> text=Open the exam")
    assert page.locator("h1 .mono").inner_text() == accession
    assert page.locator("text=王<b>芳</b>").count() >= 1  # shown as typed, not as markup

    # She comes back: the scanned ID (typed, then Enter) fills her details from the record,
    # Enter moves on instead of submitting, Ctrl + Enter registers; her phone is not erased.
    page.click("nav >> text=Register exam")
    page.wait_for_load_state()  # htmx (deferred) ready before typing
    page.wait_for_function("document.activeElement && document.activeElement.id === 'f-patient_id'")
    page.keyboard.type("MZ20261124")
    page.keyboard.press("Enter")
    page.wait_for_selector("#returning-patient")
    assert page.input_value("#f-name") == "王<b>芳</b>" and page.input_value("#f-phone") == "13800138000"
    assert page.evaluate("document.activeElement.id") != "f-patient_id" and page.url.endswith("/exams/new")
    # CT: the procedure and the station are picked from the lists the modality brings (htmx)
    page.select_option("#f-modality", "CT")
    page.wait_for_selector("#f-procedure_code")
    assert page.locator("#f-procedure").count() == 0
    assert page.locator("#f-station_ae option").all_inner_texts() == [
        "— the procedure's default", "CT01 · CT room 1 · Building B, room 105"]
    page.select_option("#f-procedure_code", "CT-CHEST")
    page.select_option("#f-station_ae", "CT01")
    page.select_option("#f-source", "emergency")
    page.select_option("#f-priority", "stat")
    page.click("#f-clinical_note")  # the last field: Ctrl + Enter registers from the note too
    page.keyboard.type("胸痛 2 小时")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(re.compile(re.escape(live.url) + r"/exams/new\?registered=A\d+$"))
    second = page.url.split("registered=")[1]
    wait_for(lambda: page.evaluate("window.__printed || 0") == 1, "the second receipt printing")  # a new page: counted anew
    page.goto(f"{live.url}/exams/{second}")
    assert second != accession and page.locator("text=CT chest, plain").count() >= 1
    page.goto(f"{live.url}/patients/MZ20261124")  # every stored value kept
    facts = page.locator("dl").first.inner_text()
    assert "1988-07-15" in facts and "13800138000" in facts and "Female" in facts, facts

    # The exam list filters in place (htmx), without a page load.
    page.goto(f"{live.url}/exams")
    page.evaluate("window.__marker = 1")
    page.fill("#f-q", "nobody-has-this-name")
    page.wait_for_selector("#exam-table >> text=No exams.")
    page.fill("#f-q", "wang")
    page.wait_for_selector(f"#exam-table >> text={accession}")
    assert page.evaluate("window.__marker") == 1

    # The receipt, in print preview, carries a barcode that scans as the accession number.
    for fmt in ("80mm", "a5"):
        receipt = context.new_page()
        watch_console(receipt, problems)
        receipt.goto(f"{live.url}/exams/{second}/receipt?format={fmt}")
        receipt.wait_for_load_state("networkidle")
        receipt.emulate_media(media="print")
        assert receipt.locator(".receipt-tools").is_hidden()
        assert receipt.evaluate("document.getElementById('barcode').naturalWidth") > 0
        shot = receipt.locator("article.slip").screenshot(path=str(ARTIFACTS / f"receipt-{fmt}.png"))
        assert decode_barcode(shot) == [second], fmt
        pdf = receipt.pdf(path=str(ARTIFACTS / f"receipt-{fmt}.pdf"), prefer_css_page_size=True)
        assert "王<b>芳</b>" in receipt.locator("dd.big").first.inner_text()
        assert receipt.locator("#receipt-priority").inner_text() == "STAT"
        assert receipt.locator("#receipt-location").inner_text() == "Building B, room 105 (CT01)"
        assert receipt.locator("#receipt-preparation").inner_text().endswith("Remove metal objects from the chest.")
        height = float(re.search(rb"/MediaBox\s*\[\s*0 0 [\d.]+ ([\d.]+)", pdf).group(1)) / 72 * 25.4
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1, fmt
        if fmt == "80mm":  # the roll is cut where the content ends, not at a fixed 160 mm
            assert abs(height - int(receipt.evaluate("document.body.dataset.pageHeightMm"))) < 1.5, height
            assert 60 < height < 150, height
        receipt.close()
    # "Print receipt" on the exam page opens the print dialog by itself, once
    receipt = context.new_page()
    receipt.add_init_script("window.print = function () { window.__printed = (window.__printed || 0) + 1; };")
    receipt.goto(f"{live.url}/exams/{second}/receipt?print=1")
    receipt.wait_for_function("window.__printed === 1")
    receipt.close()
    assert (ARTIFACTS / "receipt-a5.pdf").stat().st_size > 1000

    assert problems == []  # nothing refused by the CSP, no missing resource, no script error

    # A registrar is refused an admin page.
    response = page.goto(f"{live.url}/admin/users")
    assert response.status == 403
    assert "You do not have permission" in page.content()
    context.close()


def test_chinese_pages_render_with_the_csp_in_force(browser, live) -> None:
    problems: list[str] = []
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    watch_console(page, problems)
    page.goto(f"{live.url}/login")
    assert page.locator("h1").inner_text() == "登录"
    log_in(page, live.url, "admin", live.admin_password)
    assert page.locator("nav >> text=审计日志").count() == 1
    page.click("button:has-text('English')")
    page.wait_for_selector("nav >> text=Audit log")
    page.screenshot(path=str(ARTIFACTS / "exams-en.png"))
    assert problems == []
    context.close()


CARDS_OVERFLOWING = ("Array.from(document.querySelectorAll('.card'))"
                     ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.id || c.className)")


def test_pages_fit_1366_and_use_the_width_of_1920_in_both_languages(browser, tmp_path, modality_pacs) -> None:
    """Issue 19's layout: at 1366×768 the exam page's cards do not overflow and Chinese table
    headers are not broken one character a line; at 1920 the lists use the screen's width."""
    pacs = modality_pacs()
    reg = pacs.register(patient_id="LY0001", name="张三", station_ae="STORESCU")
    pacs.send_series(tmp_path / "sent", 2, accession=reg.accession_number, patient_id="LY0001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    pacs.add_user("boss_layout", "admin")
    from pacslite.core import audit
    from pacslite.ris import procedures
    conn = pacs.conn()
    procedures.add_procedure(conn, audit.SYSTEM, pacs.settings, {
        "code": "CT-CHEST", "modality": "CT", "name_zh": "胸部CT平扫", "name_en": "CT chest, plain",
        "body_part": "CHEST", "default_station_ae": "STORESCU", "target_hours": "8", "target_stat_hours": "1",
        "target_emergency_hours": "2", "preparation": "去除胸部金属物品。Remove metal objects from the chest."})
    conn.close()
    problems: list[str] = []
    for locale, language in (("zh-CN", "zh_CN"), ("en-US", "en")):
        page = page_as(browser, pacs, "boss_layout", problems, viewport={"width": 1366, "height": 768})
        page.goto(f"{pacs.server.url}/exams")
        if language == "zh_CN":
            page.click("button:has-text('中文')")
            page.wait_for_selector("nav >> text=审计日志")
        page.goto(f"{pacs.server.url}/exams/{reg.accession_number}")
        assert page.evaluate(CARDS_OVERFLOWING) == [], language
        tallest = page.evaluate("Math.max(...Array.from(document.querySelectorAll('#series-card th'))"
                                ".map(th => th.getBoundingClientRect().height))")
        assert tallest < 40, (language, tallest)  # one line of text, not a column of characters
        page.screenshot(path=str(ARTIFACTS / f"exam-page-1366-{language}.png"), full_page=True)
        for path in ("/admin/procedures", "/admin/modalities", "/statistics", "/exams/new", "/admin/audit"):
            page.goto(f"{pacs.server.url}{path}")
            assert page.evaluate(CARDS_OVERFLOWING) == [], (language, path)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (language, path)
        page.set_viewport_size({"width": 1920, "height": 1080})
        page.goto(f"{pacs.server.url}/exams")
        assert page.locator("main").bounding_box()["width"] > 1800, language
        page.context.close()
    assert problems == []


def test_a_radiologist_meets_the_lock_then_reports_and_prints(browser, tmp_path, modality_pacs) -> None:
    """The reporting issue's "done when": the lock on an exam without images, the technologist's
    flag, images arriving through storescu, the editor opening by itself, sign, print."""
    pacs = modality_pacs()
    pacs.add_user("dr_wang", "radiologist", display_name="王医生")
    pacs.add_user("tech_li", "technologist")
    reg = pacs.register(patient_id="BR0001", name="张三")
    problems: list[str] = []
    doctor = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768}).new_page()
    tech = browser.new_context(locale="en-US").new_page()
    for page in (doctor, tech):
        watch_console(page, problems)

    # No images yet: the reading list does not offer the exam, and opening it shows the lock.
    log_in(doctor, pacs.server.url, "dr_wang", "Secret-pass-1")
    doctor.click("nav >> text=Reading list")
    assert reg.accession_number not in doctor.locator("#reading-table").inner_text()
    doctor.goto(f"{pacs.server.url}/exams/{reg.accession_number}")
    doctor.click("#open-report")
    doctor.wait_for_selector("#report-lock")
    assert doctor.locator("#report-form").count() == 0
    doctor.click("text=Notify technologist")
    doctor.wait_for_selector("text=The technologists have been told")

    # The technologist sees the flag, with its count in the navigation bar.
    log_in(tech, pacs.server.url, "tech_li", "Secret-pass-1")
    assert tech.locator("#nav-missing .count").inner_text() == "1"
    tech.click("#nav-missing")
    assert reg.accession_number in tech.locator("#missing-images").inner_text()

    # The images arrive; the open report page turns into the editor by itself.
    images = []
    for n in range(2):
        path = tmp_path / f"img{n}.dcm"
        make_ct(path, accession=reg.accession_number, patient_id="BR0001", name="ZHANG^SAN", sex="M",
                birth_date="19800203", instance_number=n + 1)
        images.append(path)
    sent = storescu(pacs.port, images)
    assert list(store_results(sent.stdout + sent.stderr).values()) == ["Success"] * 2
    doctor.wait_for_selector("#report-form", timeout=20_000)
    # The lock reloaded the page: the form can be in the document before htmx has bound its autosave.
    doctor.wait_for_load_state("load")

    # Drafts save themselves; then the report is signed and printed.
    doctor.fill("#f-findings", "Both lungs are clear. 双肺清晰。")
    doctor.wait_for_selector("#save-status.saved")
    assert pacs.query("SELECT findings FROM report_versions")[0][0] == "Both lungs are clear. 双肺清晰。"
    doctor.fill("#f-impression", "No abnormality. 未见异常。")
    doctor.check("#result-class input[value=normal]")
    doctor.evaluate("window.scrollTo(0, 0)")
    sign = doctor.locator("#report-form button:has-text('Sign final')").bounding_box()
    assert sign is not None and sign["y"] + sign["height"] <= 768, sign  # on screen without scrolling
    doctor.click("button:has-text('Sign final')")
    # signing asks first, showing the impression and the result class, its button on screen at 1366×768
    confirm = doctor.locator("#confirm-sign")
    confirm.wait_for()
    assert "未见异常。" in confirm.locator("#confirm-impression").inner_text()
    assert confirm.locator("#confirm-result").inner_text() == "Normal"
    button = confirm.locator("button:has-text('Confirm and sign final')")
    box = button.bounding_box()
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 768, box
    assert pacs.query("SELECT status FROM report_versions")[0][0] == "draft"  # nothing signed yet
    button.click()
    doctor.wait_for_selector("text=Report signed as final.")
    with doctor.context.expect_page() as opened:
        doctor.click("#versions >> text=Print (A4)")
    printed = opened.value
    printed.wait_for_load_state()
    assert "未见异常。" in printed.locator("#printed-impression").inner_text()
    signature = printed.locator("#printed-report footer").inner_text()
    assert "Reporting radiologist: 王医生" in signature and "dr_wang" not in signature  # names, never logins
    ARTIFACTS.mkdir(exist_ok=True)
    doctor.screenshot(path=str(ARTIFACTS / "report-signed.png"), full_page=True)
    printed.emulate_media(media="print")
    printed.screenshot(path=str(ARTIFACTS / "report-a4.png"), full_page=True)
    printed.pdf(path=str(ARTIFACTS / "report-a4.pdf"), prefer_css_page_size=True)
    assert printed.locator("#superseded-mark").count() == 0  # the valid report carries no mark

    # An amendment replaces version 1: its reprint is marked superseded, on paper too.
    doctor.fill("#f-reason", "Nodule missed in the left lung")
    doctor.click("button:has-text('Start amendment')")
    doctor.wait_for_selector("#report-form")
    doctor.wait_for_load_state("load")  # a new page: its autosave is bound once it has loaded
    doctor.fill("#f-impression", "Nodule of 6 mm in the left lower lobe. 左肺下叶 6 毫米结节。")
    doctor.wait_for_selector("#save-status.saved")
    doctor.check("#result-class input[value=abnormal]")
    doctor.click("button:has-text('Sign final')")
    doctor.click("#confirm-sign button:has-text('Confirm and sign final')")
    doctor.wait_for_selector("text=Report signed as final.")
    old = doctor.locator("details#version-1")
    assert "Amended: superseded by version 2" in old.locator("summary").inner_text()
    assert not old.evaluate("d => d.open")  # the history is folded; version 2 is shown first
    old.locator("summary").click()
    with doctor.context.expect_page() as opened:
        old.locator("text=Print (A4)").click()
    reprint = opened.value
    reprint.wait_for_load_state()
    reprint.emulate_media(media="print")
    mark = reprint.locator("#superseded-mark")
    assert mark.is_visible() and "superseded by version 2" in mark.inner_text()
    assert "未见异常。" in reprint.locator("#printed-impression").inner_text()
    reprint.screenshot(path=str(ARTIFACTS / "report-superseded-a4.png"), full_page=True)

    # The flag cleared itself when the images were filed.
    tech.reload()
    assert tech.locator("#nav-missing .count").count() == 0
    assert reg.accession_number not in tech.locator("main").inner_text()
    assert pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'report.print'")[0][0] == 2
    assert problems == []


def test_a_report_is_submitted_for_review_and_issued_by_a_second_radiologist(browser, tmp_path,
                                                                            modality_pacs) -> None:
    """Issue 18's review, in Chromium: the writer submits, cannot issue it, a reviewer does; the
    print names both. The result is critical: the requesting ward's clinician sees it in the
    navigation bar and acknowledges it; another finding, left unacknowledged, escalates to the
    admin as overdue."""
    pacs = modality_pacs(PACSLITE_REPORT_REVIEW="1", PACSLITE_CRITICAL_ACK_MINUTES="0.05")
    reg = pacs.register(patient_id="RV0001", name="张三", station_ae="STORESCU", source="inpatient",
                        inpatient_number="ZY2026-0815", ward="神经外科病区", bed="12")
    pacs.send_series(tmp_path / "sent", 1, accession=reg.accession_number, patient_id="RV0001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    pacs.add_user("dr_writer", "radiologist", display_name="王医生")
    pacs.add_user("dr_senior", "radiologist", display_name="李主任")
    pacs.add_user("boss_rv", "admin")
    problems: list[str] = []  # the review permission is given as an admin would, on the user's page
    admin = page_as(browser, pacs, "boss_rv", problems)
    senior_id = pacs.query("SELECT id FROM users WHERE username = 'dr_senior'")[0][0]
    admin.goto(f"{pacs.server.url}/admin/users/{senior_id}")
    admin.check("#f-can-review")
    admin.click("button[type=submit].primary")
    admin.wait_for_url(f"{pacs.server.url}/admin/users")
    signature = tmp_path / "signature.png"  # and the reviewer's signature image uploaded
    drawn = Image.new("L", (900, 300), 255)
    ImageDraw.Draw(drawn).line([(40, 220), (250, 60), (420, 240), (640, 80), (860, 200)], fill=0, width=14)
    drawn.save(signature)
    admin.goto(f"{pacs.server.url}/admin/users/{senior_id}")
    admin.set_input_files("#f-signature", str(signature))
    admin.click("#signature-form button:has-text('Upload')")
    admin.wait_for_selector("#signature-form img.signature")

    writer = page_as(browser, pacs, "dr_writer", problems, viewport={"width": 1366, "height": 768})
    assert writer.url == f"{pacs.server.url}/reading"  # a radiologist starts on the reading list
    row = writer.locator("#reading-table tr", has_text=reg.accession_number)
    assert re.search(r"Male · \d+ y", row.inner_text())
    row.locator("button:has-text('Take')").click()
    writer.wait_for_selector(f"text=Exam {reg.accession_number} is yours to report.")
    writer.goto(f"{pacs.server.url}/exams/{reg.accession_number}/report")
    writer.fill("#f-findings", "Crescent-shaped hyperdensity over the left convexity. 左侧额顶部新月形高密度影。")
    writer.fill("#f-impression", "Acute subdural haematoma. 急性硬膜下血肿。")
    writer.check("#result-class input[value=critical]")
    assert writer.locator("button:has-text('Sign final')").count() == 0
    writer.click("button:has-text('Submit for review')")
    writer.click("#confirm-sign button:has-text('Confirm and sign preliminary')")
    writer.wait_for_selector("#awaiting-review")  # the writer cannot issue it
    assert writer.locator("button:has-text('Review and issue final')").count() == 0

    senior = page_as(browser, pacs, "dr_senior", problems, viewport={"width": 1366, "height": 768})
    senior.goto(f"{pacs.server.url}/reading")
    senior.check("#f-review")
    senior.wait_for_selector(f"#reading-table >> text={reg.accession_number}")
    assert "王医生" in senior.locator("#reading-table tr", has_text=reg.accession_number).locator(".taken").inner_text()
    senior.goto(f"{pacs.server.url}/exams/{reg.accession_number}/report")
    senior.click("button:has-text('Review and issue final')")
    confirm = senior.locator("#confirm-sign")
    confirm.wait_for()
    assert "Critical finding" in confirm.locator("#confirm-result").inner_text()
    confirm.locator("button:has-text('Confirm and sign final')").click()
    senior.wait_for_selector("text=Report signed as final.")
    with senior.context.expect_page() as opened:
        senior.click("#versions >> text=Print (A4)")
    printed = opened.value
    printed.wait_for_load_state()
    printed.emulate_media(media="print")
    footer = printed.locator("#printed-report footer").inner_text()
    assert "Reporting radiologist: 王医生" in footer and "Reviewing radiologist: 李主任" in footer
    assert "dr_" not in printed.locator("#printed-report").inner_text()  # names, never logins
    expect(printed.locator("footer .reviewer ~ img.signature")).to_have_js_property("naturalWidth", 600)
    assert printed.locator("footer .signer ~ img.signature").count() == 0  # the writer has none
    facts = printed.locator("#printed-report dl").inner_text()
    for expected in ("Male · 46 y", "ZY2026-0815", "神经外科病区 · 12", "Respiratory", "Dr Li", "Report time"):
        assert expected in facts, (expected, facts)
    ARTIFACTS.mkdir(exist_ok=True)
    printed.screenshot(path=str(ARTIFACTS / "report-reviewed-a4.png"), full_page=True)
    for fmt, paper in (("a4", "A4"), ("a5", "A5")):  # Chromium's print of each paper size: one page
        printed.goto(f"{pacs.server.url}/exams/{reg.accession_number}/report/print?format={fmt}")
        pdf = printed.pdf(prefer_css_page_size=True)
        (ARTIFACTS / f"report-reviewed-{fmt}.pdf").write_bytes(pdf)
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1, paper
        width, height = (float(v) for v in re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", pdf).groups())
        assert (round(width / 72 * 25.4), round(height / 72 * 25.4)) == {"a4": (210, 297), "a5": (148, 210)}[fmt]
    assert tuple(pacs.query("SELECT status, preliminary_by, signed_by, result_class FROM report_versions")[0]) == \
        ("final", "dr_writer", "dr_senior", "critical")

    # the critical result went to the requesting department (Respiratory) when it was submitted
    pacs.add_user("ward_resp", "clinician", display_name="赵医生", department="Respiratory")
    ward = page_as(browser, pacs, "ward_resp", problems)
    ward.goto(f"{pacs.server.url}/exams")
    assert ward.locator("#nav-critical-count").inner_text() == "1"
    ward.click("#nav-critical")
    row = ward.locator("#critical-open tr", has_text=reg.accession_number)
    assert "Acute subdural haematoma" in row.inner_text()
    row.locator("textarea[name=note]").fill("已通知神经外科会诊 (neurosurgery called)")
    row.locator("button:has-text('Acknowledge')").click()
    ward.wait_for_selector("text=Critical finding acknowledged.")
    assert reg.accession_number in ward.locator("#critical-done").inner_text()
    assert ward.locator("#nav-critical-count").inner_text() == ""
    # the ward starts on its own department's exams and sees which reports are ready
    ward.click("nav >> text=Exams")
    assert ward.locator("#f-department").input_value() == "Respiratory"
    ready = ward.locator("table.exams tr", has_text=reg.accession_number)
    assert "Report ready" in ready.inner_text()
    ready.locator("a.mono").click()
    expect(ward.locator("#exam-report")).to_contain_text("Acute subdural haematoma")

    # a finding sent from the button while reading, which nobody acknowledges, escalates
    other = pacs.register(patient_id="RV0002", name="李四", station_ae="STORESCU")
    pacs.send_series(tmp_path / "other", 1, accession=other.accession_number, patient_id="RV0002", name="LI^SI",
                     sex="M", birth_date="19800203")
    writer.goto(f"{pacs.server.url}/exams/{other.accession_number}/report")
    writer.fill("#f-finding", "Free air under the diaphragm. 膈下游离气体。")
    writer.click("button:has-text('Send critical finding')")
    writer.wait_for_selector("text=Critical finding sent to Respiratory.")
    wait_for(lambda: pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'critical.escalate'"
                                " AND target = ?", f"exam:{other.accession_number}")[0][0] == 1,
             "the unacknowledged finding escalated")
    admin.goto(f"{pacs.server.url}/critical")
    overdue = admin.locator("#critical-open tr.overdue", has_text=other.accession_number)
    assert "Overdue since" in overdue.inner_text()
    assert admin.locator("#nav-critical-count").inner_text() == "1"
    admin.screenshot(path=str(ARTIFACTS / "critical-findings-overdue.png"), full_page=True)
    assert problems == []


def test_a_radiologist_reads_with_the_images_priors_and_tools_on_one_page(browser, tmp_path,
                                                                         modality_pacs) -> None:
    """Issue 18's report beside its images, at 1920×1080: every series' thumbnail and the light
    viewer beside the editor, the prior exam's final report opened beside both and its images in
    the viewer; on-image text, zoom, pan, a length in millimetres, the CT number under the cursor."""
    from pydicom import dcmread

    from pacslite.core import audit
    from pacslite.ris import patients, reports
    pacs = modality_pacs()
    pacs.add_user("dr_reader", "radiologist", display_name="王医生")
    prior = pacs.register(patient_id="RR0001", name="张三", station_ae="STORESCU", scheduled_date="2026-10-02",
                          scheduled_time="09:00")
    pacs.send_series(tmp_path / "prior", 2, accession=prior.accession_number, patient_id="RR0001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    conn = pacs.conn()
    try:
        reports.sign(conn, audit.Actor("dr_reader"), patients.get_exam(conn, prior.accession_number),
                     {"level": "final", "result_class": "abnormal", "revision": "0", "findings": "8 mm nodule, right upper lobe.",
                      "impression": "Solitary pulmonary nodule, follow up in 3 months."}, pacs.settings)
    finally:
        conn.close()
    current = pacs.register(patient_id="RR0001", name="张三", station_ae="STORESCU")
    sent = pacs.send_series(tmp_path / "current", 3, accession=current.accession_number, patient_id="RR0001",
                            name="ZHANG^SAN", sex="M", birth_date="19800203", size=256)
    problems: list[str] = []
    page = page_as(browser, pacs, "dr_reader", problems, viewport={"width": 1920, "height": 1080})
    page.goto(f"{pacs.server.url}/exams/{current.accession_number}/report")
    image = page.locator("#viewer-image")
    expect(image).to_have_js_property("naturalWidth", 256)  # the first series opened beside the editor
    expect(page.locator("#report-thumbs img.thumb").first).to_have_js_property("naturalWidth", 128)
    viewer_box, editor_box = page.locator("#viewer-stage").bounding_box(), page.locator("#f-findings").bounding_box()
    assert editor_box["x"] > viewer_box["x"] + viewer_box["width"] - 1  # side by side, both on screen
    assert page.locator("main").bounding_box()["width"] >= 1880 and viewer_box["width"] >= 900
    assert "张三" in page.locator(".overlay.top-left").inner_text()
    assert current.accession_number in page.locator(".overlay.top-right").inner_text()
    assert "Im 2 · 2 / 3" in page.locator(".overlay.bottom-left").inner_text()
    assert page.locator("#overlay-window").inner_text().startswith("W ")

    # the CT number under the cursor is the stored value through the rescale (HU)
    ds = dcmread(sorted(sent)[1])
    expected_hu = int(ds.pixel_array[50, 100]) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    expect(image).to_have_js_property("complete", True)

    def screen(x: float, y: float) -> tuple[float, float]:
        box = image.bounding_box()
        return box["x"] + (x + 0.5) / 256 * box["width"], box["y"] + (y + 0.5) / 256 * box["height"]

    with page.expect_response(re.compile(r"/instances/\d+/values\?frame=0")):
        page.mouse.move(*screen(100, 50))  # the values arrive, and show where the cursor rests
    expect(page.locator("#overlay-value")).to_have_text(f"HU {expected_hu} (100, 50)")

    # a length in millimetres from Pixel Spacing (0.661468 mm)
    page.click("button[data-tool=length]")
    page.mouse.move(*screen(28, 128))
    page.mouse.down()
    page.mouse.move(*screen(128, 128), steps=4)
    page.mouse.move(*screen(228, 128), steps=4)
    page.mouse.up()
    measured = page.locator("#viewer-measure").inner_text()
    assert measured.endswith(" mm") and abs(float(measured.split()[0]) - 200 * 0.661468) < 0.5, measured
    assert page.locator("#viewer-marks line").count() == 1

    # zoom (Ctrl + wheel, 1:1) and pan
    before = float(page.locator("#overlay-zoom").inner_text().lstrip("×"))
    page.keyboard.down("Control")
    page.mouse.wheel(0, -120)
    page.keyboard.up("Control")
    assert float(page.locator("#overlay-zoom").inner_text().lstrip("×")) > before
    page.click("button[data-action=zoom]")
    assert page.locator("#overlay-zoom").inner_text() == "×1.00"
    page.click("button[data-tool=pan]")
    box = page.locator("#viewer-stage").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 340, box["y"] + 320, steps=3)
    page.mouse.up()
    assert "translate(40px, 20px)" in page.locator("#viewer-canvas").get_attribute("style")

    # the prior exam, with its final report, opens beside the editor; its images in the viewer
    assert "Solitary pulmonary nodule" in page.locator("#priors").inner_text()
    page.click(f"#prior-{prior.accession_number} button:has-text('Open beside')")
    prior_pane = page.locator("#prior-report")
    expect(prior_pane).to_contain_text("8 mm nodule, right upper lobe.")
    assert prior_pane.bounding_box()["x"] > page.locator("#f-findings").bounding_box()["x"]
    page.fill("#f-findings", "Nodule now 12 mm, right upper lobe (8 mm on 2026-10-02).")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reading-room-1920.png"))
    prior_pane.locator("a.prior-thumb").first.click()
    expect(page.locator(".overlay.top-right")).to_contain_text(prior.accession_number)
    expect(image).to_have_js_property("naturalWidth", 128)
    assert problems == []


def test_an_admin_tests_modalities_with_c_echo_and_sees_their_last_contact(browser, tmp_path,
                                                                           modality_pacs) -> None:
    """Issue 19's modalities page: a C-ECHO test with its result (pacslite answering itself, and
    an AE where nothing listens), the last association and the last image of each AE."""
    from pacslite.core import audit
    from pacslite.ris import aes
    pacs = modality_pacs()
    conn = pacs.conn()
    try:
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": "PACSLITE", "host": "127.0.0.1", "port": str(pacs.port)})
    finally:
        conn.close()
    reg = pacs.register(patient_id="EC0001", name="张三", station_ae="STORESCU")
    pacs.send_series(tmp_path / "sent", 1, accession=reg.accession_number, patient_id="EC0001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    pacs.add_user("boss_echo", "admin")
    problems: list[str] = []
    page = page_as(browser, pacs, "boss_echo", problems, viewport={"width": 1920, "height": 1080})
    page.goto(f"{pacs.server.url}/admin/modalities")
    storescu = page.locator("#modalities tr", has_text="STORESCU")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", storescu.locator("td").nth(9).inner_text())  # last image
    own = page.locator("#modalities tr", has_text="PACSLITE")
    assert own.locator("td").nth(8).inner_text() == "—"  # it never associated yet
    own.locator("button:has-text('C-ECHO')").click()
    page.wait_for_selector(f"text=C-ECHO to PACSLITE (127.0.0.1:{pacs.port}) answered in")
    own = page.locator("#modalities tr", has_text="PACSLITE")
    assert re.search(r"\d{4}-\d\d-\d\d", own.locator("td").nth(8).inner_text())  # the echo's association
    storescu = page.locator("#modalities tr", has_text="STORESCU")
    storescu.locator("button:has-text('C-ECHO')").click()
    page.wait_for_selector("text=failed: nothing answered at this host and port")
    assert [tuple(r) for r in pacs.query("SELECT target, outcome FROM audit_log WHERE action = 'ae.echo'"
                                         " ORDER BY id")] == [("ae:PACSLITE", "success"), ("ae:STORESCU", "failure")]

    # the audit log: the echo tests read as sentences, filtered in place; older rows a page back
    page.click("nav >> text=Audit log")
    page.wait_for_load_state()  # htmx (deferred) ready before typing
    page.fill("input[name=action]", "ae.echo")
    expect(page.locator("#audit-rows tbody tr")).to_have_count(2)
    expect(page.locator("#audit-rows")).to_contain_text("Tested a DICOM AE (C-ECHO)")
    page.select_option("select[name=outcome]", "failure")
    expect(page.locator("#audit-rows tbody tr")).to_have_count(1)
    assert "ae:STORESCU" in page.locator("#audit-rows tbody").inner_text()
    page.locator("#audit-rows details summary").first.click()
    expect(page.locator("#audit-rows details pre").first).to_contain_text('"error": "unreachable"')
    assert "Error: unreachable" in page.locator("#audit-rows .audit-lines").first.inner_text()
    with page.expect_download() as download:
        page.click("#audit-csv")
    assert "ae:STORESCU" in download.value.path().read_text(encoding="utf-8-sig")
    assert problems == []


def test_an_admin_refiles_a_typo_and_sees_the_filing_rate(browser, tmp_path, modality_pacs) -> None:
    """The control issue's "done when", in Chromium against the real process."""
    pacs = modality_pacs()
    right = pacs.register(patient_id="TY0001", name="王五", station_ae="STORESCU")
    pacs.register(patient_id="TY0002", name="赵六")
    typo = right.accession_number[:-3] + str((int(right.accession_number[-3]) + 1) % 10) + \
        right.accession_number[-2:]
    pacs.send_series(tmp_path / "sent", 1, accession=typo, patient_id="TY0001", name="WANG^WU", sex="M",
                     birth_date="19800203")
    pacs.add_user("pacs_admin", "admin")
    problems: list[str] = []
    page = page_as(browser, pacs, "pacs_admin", problems)

    page.click("nav >> text=Quarantine")
    row = page.locator("#quarantine tbody tr").first
    assert typo in row.inner_text()
    first = row.locator("ol.candidates li").first.inner_text()
    assert first.startswith(right.accession_number) and "accession number one character off" in first
    assert row.locator("ol.candidates li").first.locator("form.one-click button").is_visible()  # clear: one click
    row.locator("text=Open study").click()
    assert page.input_value("#f-accession_number") == right.accession_number  # the best candidate
    page.fill("#f-reason", "Accession number typed wrong at the console")
    page.click("#refile-form button[type=submit]")
    page.wait_for_selector("text=The study was re-filed")
    originals = page.locator("#original-attributes").inner_text()
    assert typo in originals and "CORRECT" in originals and "WANG^WU" in originals

    page.click("nav >> text=Audit log")
    page.wait_for_load_state()  # htmx (deferred) ready before typing
    page.fill("input[name=action]", "image.refile")
    expect(page.locator("main")).to_contain_text("Accession number typed wrong")
    page.click("nav >> text=Statistics")
    assert page.locator("#final-rate").inner_text().strip() == "100.00%"
    assert page.locator("#refile-rate").inner_text().startswith("1 image sets, 100.00%")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "statistics.png"), full_page=True)
    assert problems == []


def test_a_technologist_compares_twins_images_before_filing_in_both_languages(browser, tmp_path,
                                                                               modality_pacs) -> None:
    """Issue 28's "done when": twins' exams on one station, and a hand-typed study with neither
    accession number nor patient ID (a girl born on their birthday). The quarantine shows the
    evidence for and against each candidate, says the first two are close and preselects
    neither; the study's page shows its thumbnails beside each twin's most recent earlier
    images, at 1366×768 in Chinese and in English, and the technologist files it."""
    pacs = modality_pacs()
    twins = {"TW0001": ("王芳", "WANG^FANG", "F"), "TW0002": ("王强", "WANG^QIANG", "M")}
    for patient_id, (name, dicom_name, sex) in twins.items():  # each twin's earlier chest CT, filed
        earlier = pacs.register(patient_id=patient_id, name=name, sex=sex, birth_date="1990-05-01",
                                station_ae="STORESCU")
        pacs.send_series(tmp_path / patient_id, 2, accession=earlier.accession_number, patient_id=patient_id,
                         name=dicom_name, sex=sex, birth_date="19900501")
    today = {patient_id: pacs.register(patient_id=patient_id, name=name, sex=sex, birth_date="1990-05-01",
                                       station_ae="STORESCU").accession_number
             for patient_id, (name, _, sex) in twins.items()}
    typed = pacs.send_series(tmp_path / "typed", 2, sex="F", birth_date="19900501")  # no accession, no patient ID
    pacs.add_user("tech_li", "technologist")
    problems: list[str] = []
    for locale, language in (("zh-CN", "zh_CN"), ("en-US", "en")):
        page = page_as(browser, pacs, "tech_li", problems, viewport={"width": 1366, "height": 768})
        words = {"close": "前几个候选检查相差不大", "agrees": "相符：", "waiting": "尚在等待图像", "against": "不符：",
                 "sex": "性别不同", "compare": "对比图像", "earlier": "最近一次既往图像"} if language == "zh_CN" else \
            {"close": "The first candidates are close", "agrees": "Agrees:", "waiting": "still waiting for its images",
             "against": "Against:", "sex": "another sex", "compare": "Compare the images",
             "earlier": "Most recent earlier images"}
        page.click("button:has-text('中文')" if language == "zh_CN" else "button:has-text('English')")
        page.wait_for_selector("nav >> text=" + ("隔离区" if language == "zh_CN" else "Quarantine"))
        page.goto(f"{pacs.server.url}/quarantine/")
        row = page.locator("#quarantine tbody tr").first
        row.locator("ol.candidates").wait_for()
        listed = row.inner_text()
        assert words["close"] in listed and words["agrees"] in listed and words["waiting"] in listed, listed
        ranked = row.locator("ol.candidates > li").all()
        assert [li.inner_text().split()[0] for li in ranked] == [today["TW0001"], today["TW0002"]]
        assert words["against"] in ranked[1].inner_text() and words["sex"] in ranked[1].inner_text()
        assert row.locator("form.one-click").count() == 0  # close: no one-click filing
        row.locator(f"a:has-text('{words['compare']}')").click()
        page.wait_for_selector("#compare-images")
        assert page.locator("#compare-images .compare-row").count() == 3  # the study, then each twin
        for patient_id in twins:
            twin = page.locator(f"#compare-{today[patient_id]}")
            assert words["earlier"] in twin.inner_text()
            assert twin.locator("img.thumb").count() == 1
        thumbs = page.locator("#compare-images img.thumb")
        assert thumbs.count() == 3
        for thumb in thumbs.all():  # each thumbnail loaded and drawn (polled by Playwright, no eval under the CSP)
            thumb.scroll_into_view_if_needed()
            expect(thumb).to_have_js_property("complete", True)
            assert thumb.evaluate("img => img.naturalWidth") > 0
        assert page.locator("#file-to-candidate input[type=radio]:checked").count() == 0  # nothing preselected
        assert page.evaluate(CARDS_OVERFLOWING) == [], language
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), language
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"quarantine-compare-1366-{language}.png"), full_page=True)
        if language == "en":
            page.check(f"#file-to-candidate input[value='{today['TW0001']}']")
            page.fill("#f-file_reason", "Compared with her earlier chest CT")
            page.click("#file-to-candidate button[type=submit]")
            page.wait_for_selector("text=The study was filed")
            conn = pacs.conn()
            filed = conn.execute("SELECT e.accession_number FROM studies s JOIN exams e ON e.id = s.exam_ref"
                                 " WHERE s.study_instance_uid = ?", (dcmread(typed[0]).StudyInstanceUID,)).fetchone()
            conn.close()
            assert filed[0] == today["TW0001"]
        page.context.close()
    assert problems == []


def test_a_clinician_scrolls_a_ct_series_with_a_lung_window(browser, tmp_path, modality_pacs) -> None:
    """The viewer issue's "done when": thumbnails on the exam page, then the viewer."""
    pacs = modality_pacs()
    reg = pacs.register(patient_id="VW0001", name="张三")
    pacs.send_series(tmp_path / "sent", 5, accession=reg.accession_number, patient_id="VW0001", size=256)
    pacs.add_user("dr_ward", "clinician")
    problems: list[str] = []
    page = page_as(browser, pacs, "dr_ward", problems, viewport={"width": 1280, "height": 900})
    page.goto(f"{pacs.server.url}/exams/{reg.accession_number}")
    thumbnail = page.locator("img.thumb").first
    expect(thumbnail).to_have_js_property("naturalWidth", 128)
    page.click("a.series-thumb")
    viewer = page.locator("#viewer-image")
    expect(viewer).to_have_js_property("naturalWidth", 256)
    start = int(page.get_attribute("#viewer-image", "data-index"))
    assert start == 2  # the middle of five
    page.hover("#viewer-stage")
    page.mouse.wheel(0, 120)
    expect(viewer).to_have_attribute("data-index", "3")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    expect(viewer).to_have_attribute("data-index", "1")
    assert page.locator("#viewer-position").inner_text() == "2 / 5"
    page.select_option("#viewer-preset", label="Lung")
    expect(viewer).to_have_attribute("src", re.compile(r"wc=-600&ww=1500"))
    expect(viewer).to_have_js_property("complete", True)
    expect(viewer).to_have_js_property("naturalWidth", 256)
    assert page.locator("#viewer-window").inner_text() == "W 1500 L -600"
    box = page.locator("#viewer-stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 20)
    page.mouse.up()
    expect(viewer).not_to_have_attribute("src", re.compile(r"ww=1500"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-lung.png"))
    page.click("button[data-action=header]")
    page.wait_for_selector("#header-panel >> text=StudyInstanceUID")
    assert problems == []


def test_an_admin_archives_a_volume_and_brings_a_study_back(browser, tmp_path, modality_pacs) -> None:
    """The archive issue's "done when", in Chromium against the real process and its job thread."""
    pacs = modality_pacs(PACSLITE_ARCHIVE_AGE_DAYS="0", PACSLITE_OFFSITE_DIR=str(tmp_path / "offsite"))
    reg = pacs.register(patient_id="AR0001", name="张三")
    pacs.send_series(tmp_path / "sent", 3, accession=reg.accession_number, patient_id="AR0001")
    pacs.add_user("pacs_admin", "admin")
    problems: list[str] = []
    page = page_as(browser, pacs, "pacs_admin", problems)

    page.click("nav >> text=Archive")
    expect(page.locator("#days-until-full")).to_contain_text(re.compile(r"\d"))
    page.click("text=Plan the next volume")
    expect(page.locator("#jobs .job").first).to_contain_text("Done", timeout=30_000)  # the bar updated itself
    page.click("#volumes a.mono")
    expect(page.locator("h1")).to_contain_text("Built")
    page.click("button:has-text('Verify')")
    expect(page.locator(".job")).to_contain_text("Done", timeout=30_000)
    page.reload()
    expect(page.locator("h1")).to_contain_text("Verified")
    with page.context.expect_page() as opened:
        page.click("text=Print the label")
    label = opened.value
    expect(label.locator("#volume-label")).to_contain_text(reg.accession_number)
    expect(label.locator("#volume-label")).to_contain_text("张三")

    page.fill("#f-release", "Disc PL000001 is in the tower")
    page.click("#release-form button")
    expect(page.locator(".flash.success")).to_contain_text("released")
    assert pacs.query("SELECT COUNT(*) FROM instances WHERE released_at IS NOT NULL")[0][0] == 3
    page.click("button:has-text('Restore from the volume')")
    expect(page.locator(".flash.success")).to_contain_text("restored")
    assert pacs.query("SELECT COUNT(*) FROM instances WHERE released_at IS NULL")[0][0] == 3

    page.click("nav >> text=Archive")
    if page.locator("#offsite button:has-text('Copy now')").count():
        page.click("#offsite button:has-text('Copy now')")
    expect(page.locator("#jobs")).to_contain_text("Off-site copy")
    for _ in range(30):  # the page does not poll the summary itself: look again as an admin would
        if "up to date" in page.locator("#offsite-behind").inner_text():
            break
        expect(page.locator("#jobs .job").first).to_contain_text("Done", timeout=30_000)
        page.reload()
    expect(page.locator("#offsite-behind")).to_have_text("up to date")
    assert problems == []


def test_a_technologist_imports_scans_a_cd_and_old_dicom(browser, tmp_path, modality_pacs) -> None:
    """The import issue's "done when": scans into an exam, a CD under the local patient ID,
    non-conformant files; everything filed, with the report of what was fixed."""
    import shutil
    import zipfile
    from pydicom import dcmread
    from pydicom.data import data_manager, get_testdata_file
    from tests.dicomkit import make_ct
    from pydicom.fileset import FileSet
    pacs = modality_pacs()
    pacs.add_user("tech_zhou", "technologist")
    scans_exam = pacs.register(patient_id="IM0001", name="张三")
    cd_exam = pacs.register(patient_id="LOCAL01", name="李四", sex="F", birth_date="1990-01-01")
    old_exam = pacs.register(patient_id="IM0003", name="王五")
    scans = []
    for number in range(3):
        path = tmp_path / f"scan{number}.jpg"
        Image.new("RGB", (64, 48), (number * 60, 90, 120)).save(path, "JPEG")
        scans.append(str(path))
    cd_source = data_manager.DATA_ROOT + "/test_files/dicomdirtests"
    fs = FileSet()
    for instance in FileSet(cd_source + "/DICOMDIR"):
        if instance.PatientID == "77654033":
            fs.add(dcmread(instance.path))
    fs.write(tmp_path / "cd")
    cd_zip = tmp_path / "cd.zip"
    with zipfile.ZipFile(cd_zip, "w") as z:
        for path in (tmp_path / "cd").rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(tmp_path / "cd").as_posix())
    bare = tmp_path / "bare.dcm"  # a dataset alone: no preamble, no file meta, no series UID
    bare_ds = make_ct(bare)
    del bare_ds.file_meta, bare_ds.SeriesInstanceUID
    bare_ds.save_as(bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
    old = [get_testdata_file("ExplVR_BigEndNoMeta.dcm"), get_testdata_file("MR_small_implicit.dcm"), str(bare)]
    problems: list[str] = []
    page = page_as(browser, pacs, "tech_zhou", problems)

    def upload(accession: str, files: list[str]) -> None:
        page.goto(f"{pacs.server.url}/import/")
        page.fill("#f-accession", accession)
        page.set_input_files("#f-files", files)
        page.click("#import-form button[type=submit]")

    def report_says(filed: int, *texts: str) -> None:
        expect(page.locator("#import-report")).to_contain_text("Done", timeout=30_000)  # the bar updated itself
        expect(page.locator("#import-lines .result-filed")).to_have_count(filed)
        for text in texts:
            expect(page.locator("#import-lines")).to_contain_text(text)

    page.click("nav >> text=Import")
    upload(scans_exam.accession_number, scans)
    report_says(3, "converted from JPG to Secondary Capture")

    upload(cd_exam.accession_number, [str(cd_zip)])
    expect(page.locator("#reconcile-form")).to_contain_text("77654033")
    page.fill("input[name=local-0]", "LOCAL01")
    page.click("#reconcile-form button[type=submit]")
    report_says(7, "outside patient ID 77654033: local LOCAL01")

    (tmp_path / "notes.txt").write_text("not an image")
    upload(old_exam.accession_number, [*old, str(tmp_path / "notes.txt")])
    report_says(3, "no file meta information: added", "Series Instance UID missing or invalid: generated")
    expect(page.locator("#import-lines .result-failed")).to_contain_text("neither an image nor a DICOM file")

    counts = {acc: pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", acc)[0][0]
              for acc in (scans_exam.accession_number, cd_exam.accession_number, old_exam.accession_number)}
    assert counts == {scans_exam.accession_number: 3, cd_exam.accession_number: 7, old_exam.accession_number: 3}
    assert problems == []
    shutil.rmtree(tmp_path / "cd")


def test_an_admin_routes_ct_to_a_workstation_and_a_technologist_sees_it(browser, tmp_path, modality_pacs) -> None:
    """Issue 14 in Chromium: rights on the Modalities page, a forward rule on Forwarding, the
    queue on the exam page and "Send to…" (the workstation is down here: the study waits)."""
    pacs = modality_pacs(PACSLITE_FORWARD_DELAY_SECONDS="0", PACSLITE_FORWARD_RETRY_FIRST_SECONDS="3600",
                         PACSLITE_FORWARD_POLL_SECONDS="0.2")
    exam = pacs.register(patient_id="RT0001", name="张三", station_ae="")
    pacs.add_user("route_admin", "admin")
    pacs.add_user("route_tech", "technologist")
    problems: list[str] = []
    admin = page_as(browser, pacs, "route_admin", problems)
    admin.click("nav >> text=Modalities")
    admin.click("text=Add modality")
    admin.fill("#f-ae_title", "WS3D")
    admin.fill("#f-host", "127.0.0.1")
    admin.fill("#f-port", str(free_port()))
    for right in ("store", "worklist", "mpps", "commitment"):
        admin.uncheck(f"input[name=rights][value={right}]")
    for right in ("query", "retrieve"):
        admin.check(f"input[name=rights][value={right}]")
    admin.click("form.form button[type=submit]")
    expect(admin.locator("#modalities")).to_contain_text("Query images, Retrieve images")
    admin.click("nav >> text=Forwarding")
    admin.wait_for_load_state()  # htmx (deferred) ready before typing
    admin.fill("#f-modality", "CT")
    admin.select_option("#f-destination_ae", "WS3D")
    admin.click("#rule-form button[type=submit]")
    expect(admin.locator("#rules")).to_contain_text("WS3D")

    pacs.send_series(tmp_path / "sent", 2, accession=exam.accession_number, patient_id="RT0001", name="ZHANG^SAN")
    wait_for(lambda: pacs.query("SELECT attempts FROM outbound_queue WHERE attempts > 0"), "the first attempt")
    admin.reload()
    expect(admin.locator("#queue-rows")).to_contain_text(exam.accession_number)
    expect(admin.locator("#queue-rows")).to_contain_text("not sent")

    tech = page_as(browser, pacs, "route_tech", problems)
    tech.goto(f"{pacs.server.url}/exams/{exam.accession_number}")
    expect(tech.locator("#sending")).to_contain_text("WS3D")
    expect(tech.locator("#sending")).to_contain_text("Queued")
    tech.select_option("#send-form select", "WS3D")
    tech.click("#send-form button[type=submit]")
    expect(tech.locator("main")).to_contain_text("Already queued for WS3D")
    assert problems == []


def test_a_technologist_marks_an_exam_done_and_the_missing_images_show(browser, tmp_path, modality_pacs) -> None:
    """Issue 15 in Chromium: "Exam done" with a count on the exam page; the alert names what is
    missing; the images arrive; a clinician's exam list shows the state and filters by it."""
    pacs = modality_pacs(PACSLITE_MPPS_GRACE_MINUTES="0.02")
    exam = pacs.register(patient_id="DN0001", name="张三", station_ae="")
    pacs.add_user("done_tech", "technologist")
    pacs.add_user("done_ward", "clinician")
    problems: list[str] = []
    tech = page_as(browser, pacs, "done_tech", problems)
    tech.goto(f"{pacs.server.url}/exams/{exam.accession_number}")
    expect(tech.locator("#exam-status")).to_have_text("Scheduled")
    tech.fill("#exam-done input[name=images_acquired]", "2")
    tech.click("#exam-done button[type=submit]")
    expect(tech.locator("#exam-status")).to_have_text("Performed")
    expect(tech.locator("#acquired-received")).to_contain_text("acquired 2 · received 0")
    tech.click("nav >> text=Alerts")
    expect(tech.locator("#alerts")).to_contain_text("Incomplete transmission")
    expect(tech.locator("#alerts")).to_contain_text(exam.accession_number)

    pacs.send_series(tmp_path / "sent", 2, accession=exam.accession_number, patient_id="DN0001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    wait_for(lambda: pacs.query("SELECT state FROM alerts WHERE rule = 'incomplete_transmission'")[0][0] == "cleared",
             "the alert cleared itself")
    tech.goto(f"{pacs.server.url}/exams/{exam.accession_number}")
    expect(tech.locator("#acquired-received")).to_contain_text("acquired 2 · received 2")
    expect(tech.locator("#exam-done")).to_have_count(0)  # done once

    ward = page_as(browser, pacs, "done_ward", problems)
    ward.select_option("select[name=status]", "performed")
    expect(ward.locator("table.exams")).to_contain_text(exam.accession_number)
    ward.select_option("select[name=status]", "final")
    expect(ward.locator("main")).to_contain_text("No exams.")
    assert problems == []


def canvas_pixels(page) -> list[int]:
    """[non-black pixels, distinct grey levels] of OHIF's viewport canvas."""
    return page.evaluate("""() => {
      const c = document.querySelector('canvas.cornerstone-canvas');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let lit = 0; const levels = new Set();
      for (let i = 0; i < d.length; i += 4) { if (d[i] || d[i + 1] || d[i + 2]) lit++; levels.add(d[i]); }
      return [lit, levels.size]; }""")


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(*end, steps=5)
    page.mouse.up()


def compressed_series(directory, syntax: str, count: int, **fields) -> list:
    """``count`` CT images of one series, compressed losslessly in ``syntax``: JPEG 2000 by
    pydicom (OpenJPEG), JPEG-LS by DCMTK's dcmcjpls (pydicom has no JPEG-LS encoder here)."""
    from pydicom import dcmread
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid
    from tests.dicomkit import run
    directory.mkdir(parents=True, exist_ok=True)
    study, series, files = generate_uid(), generate_uid(), []
    for number in range(1, count + 1):
        plain, packed = directory / f"plain-{number}.dcm", directory / f"packed-{number}.dcm"
        make_ct(plain, study_uid=study, series_uid=series, instance_number=number, **fields)
        if syntax == JPEG2000Lossless:
            ds = dcmread(plain)
            ds.compress(JPEG2000Lossless, generate_instance_uid=False)
            ds.save_as(packed, enforce_file_format=True)
        else:
            assert syntax == JPEGLSLossless
            done = run(["dcmcjpls", str(plain), str(packed)])
            assert done.returncode == 0, done.stderr
        assert dcmread(packed, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        files.append(packed)
    return files


def test_ohif_shows_jpeg_2000_and_jpeg_ls_studies_under_its_policy(browser, tmp_path, modality_pacs) -> None:
    """The interoperability run: OHIF asked for frames with ``transfer-syntax=*``, got them as
    stored (compressed), and its decoding worker then evaluated strings as code, which the
    Content-Security-Policy forbids: black viewports. OHIF now asks for Explicit VR Little
    Endian, which pacslite decompresses to; the policy is unchanged (no 'unsafe-eval')."""
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless
    from tests.dicomkit import propose_option
    pacs = modality_pacs()
    pacs.add_user("dr_packed", "radiologist")
    problems: list[str] = []
    page = page_as(browser, pacs, "dr_packed", problems, viewport={"width": 1200, "height": 800})
    for number, syntax in enumerate((JPEG2000Lossless, JPEGLSLossless), start=1):
        reg = pacs.register(patient_id=f"OHC00{number}", name="张三")
        files = compressed_series(tmp_path / syntax, syntax, 3, accession=reg.accession_number,
                                  patient_id=f"OHC00{number}", name="ZHANG^SAN")
        sent = storescu(pacs.port, files, extra=propose_option(files[0]))
        assert set(store_results(sent.stdout + sent.stderr).values()) == {"Success"}, sent.stderr[-2000:]
        stored = pacs.query("SELECT DISTINCT i.transfer_syntax_uid FROM instances i JOIN series se ON se.id ="
                            " i.series_ref JOIN studies s ON s.id = se.study_ref JOIN exams e ON e.id = s.exam_ref"
                            " WHERE e.accession_number = ?", reg.accession_number)
        assert [r[0] for r in stored] == [syntax]  # kept as the modality compressed it
        blocked: list[str] = []
        frames: list[tuple[int, str]] = []
        ohif = page.context.new_page()
        ohif.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text
                or "EvalError" in m.text else None)
        ohif.on("response", lambda r: frames.append((r.status, r.request.headers.get("accept", "")))
                if "/frames/" in r.url else None)
        ohif.goto(f"{pacs.server.url}/exams/{reg.accession_number}/ohif")
        ohif.wait_for_selector("canvas.cornerstone-canvas", timeout=60_000)
        ohif.wait_for_function("""() => { const c = document.querySelector('canvas.cornerstone-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < d.length; i += 4) if (d[i] > 40) return true; return false; }""", timeout=60_000)
        lit, levels = canvas_pixels(ohif)
        assert lit > 5_000 and levels > 50, (syntax, lit, levels)
        assert blocked == [], blocked
        assert frames and all(status == 200 and "transfer-syntax=1.2.840.10008.1.2.1" in accept
                              for status, accept in frames), frames
        ARTIFACTS.mkdir(exist_ok=True)
        ohif.screenshot(path=str(ARTIFACTS / f"ohif-{syntax}.png"))
        ohif.close()
    csp = page.request.get(f"{pacs.server.url}/ohif/app-config.js").headers["content-security-policy"]
    assert "'unsafe-eval'" not in csp


def test_a_radiologist_reads_a_ct_in_ohif_with_measurements(browser, tmp_path, modality_pacs) -> None:
    """Issue 16's "done when": Open in OHIF on the reading list, the CT shown, a length and a
    CT-number ROI measured; every DICOMweb request answered 200; a registrar refused."""
    pacs = modality_pacs()
    reg = pacs.register(patient_id="OH0001", name="张三")
    pacs.send_series(tmp_path / "sent", 5, accession=reg.accession_number, patient_id="OH0001", name="ZHANG^SAN")
    pacs.add_user("dr_ohif", "radiologist")
    pacs.add_user("desk_ohif", "registrar")
    problems: list[str] = []
    page = page_as(browser, pacs, "dr_ohif", problems, viewport={"width": 1400, "height": 900})
    ohif_page = f"/exams/{reg.accession_number}/ohif"
    for where in (f"/exams/{reg.accession_number}", f"/exams/{reg.accession_number}/report"):
        page.goto(f"{pacs.server.url}{where}")
        expect(page.locator("a.ohif-link")).to_have_attribute("href", ohif_page)
    page.goto(f"{pacs.server.url}/reading")
    row = page.locator("tr", has=page.locator(f"text={reg.accession_number}"))
    with page.context.expect_page() as opened:
        row.locator("a.ohif-link").click()
    ohif = opened.value
    dicomweb: list[tuple[int, str]] = []
    blocked: list[str] = []
    ohif.on("response", lambda r: dicomweb.append((r.status, r.url)) if "/dicom-web/" in r.url else None)
    ohif.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    ohif.wait_for_url(re.compile(r"/ohif/viewer\?StudyInstanceUIDs="))
    ohif.wait_for_selector("canvas.cornerstone-canvas", timeout=60_000)
    ohif.wait_for_function("""() => { const c = document.querySelector('canvas.cornerstone-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 40) return true; return false; }""", timeout=60_000)
    lit, levels = canvas_pixels(ohif)
    assert lit > 10_000 and levels > 50, (lit, levels)  # a CT slice, not a blank or flat canvas
    if ohif.locator("text=Skip all").count():
        ohif.click("text=Skip all")
    box = ohif.locator("[data-cy=viewport-pane]").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    ohif.click("[data-cy=Length-btn]")
    drag(ohif, (cx - 120, cy), (cx + 80, cy + 40))
    expect(ohif.locator("svg text", has_text=re.compile(r"\d+(\.\d+)? mm"))).to_have_count(1)
    if ohif.locator("[data-cy=prompt-begin-tracking-yes-btn]").count():
        ohif.click("[data-cy=prompt-begin-tracking-yes-btn]")
    ohif.click("[data-cy=MeasurementTools-split-button-secondary]")
    ohif.locator("div[data-cy=EllipticalROI]").last.click()
    drag(ohif, (cx - 40, cy - 40), (cx + 20, cy + 10))
    expect(ohif.locator("svg text", has_text=re.compile(r"HU"))).not_to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    ohif.screenshot(path=str(ARTIFACTS / "ohif-ct.png"))
    assert dicomweb and all(status == 200 for status, _ in dicomweb), [d for d in dicomweb if d[0] != 200]
    assert any("/frames/" in url for _, url in dicomweb) and any("/metadata" in url for _, url in dicomweb)
    assert blocked == []
    views = pacs.query("SELECT COUNT(*) FROM audit_log WHERE action = 'image.view' AND actor = 'dr_ohif'")[0][0]
    assert views >= 1

    desk = page_as(browser, pacs, "desk_ohif", problems)
    for path in (f"/exams/{reg.accession_number}/ohif", "/ohif/viewer", "/ohif/app-config.js"):
        assert desk.goto(f"{pacs.server.url}{path}").status == 403, path
    assert desk.request.get(f"{pacs.server.url}/dicom-web/studies").status == 403
