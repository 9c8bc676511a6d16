"""Report templates in Chromium (issue 32): a radiologist at 1366×768, the images beside the
report, finds a template by its pinyin initials, inserts it at the cursor with the keyboard,
chooses its slots with Tab and digits, takes a choice back with Ctrl+Z, inserts the normal
report with Alt+N, keeps the texts as a template of their own, marks two key images in the
viewer, grades the images in two keys and signs (refused while a slot is left); the key images
are found in the study by C-FIND (a Key Object Selection document), retrieved by C-GET, shown
by OHIF and printed under the findings on one A4 page; a QC reviewer scores the report, the
statistics show the grade and the score, and the author reads the comment."""
from __future__ import annotations

import re

from playwright.sync_api import expect
from pydicom import dcmread

from pacslite.core import audit
from pacslite.ris import procedures, report_templates, users
from tests.conftest import flask_cli, wait_for
from tests.dicomkit import run
from tests.test_browser import ARTIFACTS, browser, log_in, modality_pacs, watch_console  # noqa: F401 (fixtures)


def test_a_report_written_from_templates_with_the_keyboard(browser, modality_pacs, tmp_path) -> None:
    pacs = modality_pacs()
    assert flask_cli(pacs.instance, "ae", "add", "READER", "--host", "127.0.0.1", "--may", "query,retrieve").returncode == 0
    pacs.add_user("dr_t", "radiologist", display_name="唐医生")
    pacs.add_user("qc_t", "radiologist", display_name="质控医生")
    pacs.add_user("admin_t", "admin")
    conn = pacs.conn()
    try:
        users.update(conn, audit.SYSTEM, users.by_username(conn, "qc_t").id,
                     {"display_name": "质控医生", "roles": ["radiologist"], "active": True, "can_qc": True})
        procedures.add_procedure(conn, audit.SYSTEM, pacs.settings,
                                 {"code": "CT-CHEST", "modality": "CT", "name_zh": "胸部CT平扫", "body_part": "CHEST"})
        report_templates.save(conn, audit.SYSTEM, pacs.settings, {
            "level": "department", "modality": "CT", "body_part": "CHEST", "folder": "胸部", "name": "胸部CT平扫所见",
            "findings": "{左/右}肺纹理清晰，{未见/可见}结节。", "impression": "胸部CT{未见/可见}异常。"})
        report_templates.save(conn, audit.SYSTEM, pacs.settings, {
            "level": "department", "modality": "CT", "name": "胸部CT正常", "procedure_code": "CT-CHEST",
            "findings": "双肺纹理清晰。", "impression": "胸部CT平扫未见异常。"})
    finally:
        conn.close()
    reg = pacs.register(patient_id="TPL001", name="张三", procedure_code="CT-CHEST")
    pacs.send_series(tmp_path / "images", 2, accession=reg.accession_number, patient_id="TPL001", name="ZHANG^SAN",
                     sex="M", birth_date="19800203")
    problems: list[str] = []
    page = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768}).new_page()
    watch_console(page, problems)
    log_in(page, pacs.server.url, "dr_t", "Secret-pass-1")
    page.goto(f"{pacs.server.url}/exams/{reg.accession_number}/report")
    page.wait_for_selector("#report-form")
    assert page.locator("#images-pane").is_visible()  # the images beside the report
    findings, impression = page.locator("#f-findings"), page.locator("#f-impression")

    # what the radiologist wrote stays; the template goes in after it, its first choice selected
    findings.fill("心影不大。")
    page.keyboard.press("Alt+t")
    page.keyboard.type("xbcps")  # 胸部CT平扫…, not 胸部CT正常
    expect(page.locator("#template-results button.template")).to_have_count(1)
    assert page.locator("#template-results button.template").inner_text() == "胸部CT平扫所见"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert findings.input_value() == "心影不大。\n{左/右}肺纹理清晰，{未见/可见}结节。"
    assert impression.input_value() == "胸部CT{未见/可见}异常。"
    assert page.evaluate("document.activeElement.id") == "f-findings"
    assert page.evaluate("(a => a.value.slice(a.selectionStart, a.selectionEnd))(document.activeElement)") == "{左/右}"
    page.keyboard.press("2")  # 右, and on to the next choice
    page.keyboard.press("1")  # 未见
    assert findings.input_value() == "心影不大。\n右肺纹理清晰，未见结节。"
    page.keyboard.press("Control+z")  # the last choice taken back
    assert findings.input_value() == "心影不大。\n右肺纹理清晰，{未见/可见}结节。"
    page.keyboard.press("Tab")
    page.keyboard.press("2")
    assert findings.input_value() == "心影不大。\n右肺纹理清晰，可见结节。"
    # a choice left in the impression: signing is refused, naming the line
    page.locator("#result-class input[value=abnormal]").check()
    page.click("button:has-text('Sign final')")
    page.wait_for_selector("#e-impression")
    assert "Choose one of the choices" in page.locator("#e-impression").inner_text()
    assert problems.pop() == "Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"
    impression = page.locator("#f-impression")
    impression.click()
    page.keyboard.press("Tab")
    page.keyboard.press("1")
    assert impression.input_value() == "胸部CT未见异常。"
    page.locator("#save-status.saved").wait_for()
    wait_for(lambda: pacs.query("SELECT impression FROM report_versions")[0][0] == "胸部CT未见异常。",
             "the draft saved itself")

    # kept as the radiologist's own template; the normal report replaces nothing without Ctrl+Z
    page.click("#save-template summary")
    page.fill("#f-template-name", "我的结节")
    page.click("#save-template button[type=submit]")
    page.locator("#template-note").wait_for()
    assert [tuple(r) for r in pacs.query("SELECT owner, findings FROM report_templates WHERE name = '我的结节'")] == \
        [("dr_t", "心影不大。\n右肺纹理清晰，可见结节。")]
    findings = page.locator("#f-findings")
    findings.click()
    page.keyboard.press("Alt+n")
    assert findings.input_value() == "心影不大。\n右肺纹理清晰，可见结节。\n双肺纹理清晰。"
    assert page.locator("#f-impression").input_value() == "胸部CT未见异常。\n胸部CT平扫未见异常。"
    page.keyboard.press("Control+z")  # each text takes its own part back
    assert findings.input_value() == "心影不大。\n右肺纹理清晰，可见结节。"
    page.locator("#f-impression").focus()
    page.keyboard.press("Control+z")
    assert page.locator("#f-impression").input_value() == "胸部CT未见异常。"

    # two key images from the viewer beside the report, each with a note, in the window shown
    page.locator("#viewer-stage").wait_for()
    page.fill("#key-note", "右肺结节")
    page.click("#mark-key")
    page.locator("#key-images li").first.wait_for()
    page.locator("#viewer-stage").focus()
    page.keyboard.press("ArrowUp")  # the other image (the viewer opens at the middle one)
    page.fill("#key-note", "对照")
    page.click("#mark-key")
    expect(page.locator("#key-images li")).to_have_count(2)
    assert page.locator("#key-images").inner_text().count("右肺结节") == 1

    # the images graded in two keys: Alt+Q, then the grade's digit
    page.keyboard.press("Alt+q")
    page.keyboard.press("2")
    page.locator("#grade-saved").wait_for()
    assert [tuple(r) for r in pacs.query("SELECT grade, graded_by FROM image_grades")] == [("2", "dr_t")]

    # signed final: the confirmation's button on screen at 1366×768
    page.click("button:has-text('Sign final')")
    confirm = page.locator("#confirm-sign button:has-text('Confirm and sign final')")
    box = confirm.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 768, box
    confirm.click()
    page.wait_for_selector("text=Report signed as final.")
    assert [tuple(r) for r in pacs.query("SELECT status, findings, impression FROM report_versions")] == \
        [("final", "心影不大。\n右肺纹理清晰，可见结节。", "胸部CT未见异常。")]

    # the key images are stored in the study as a Key Object Selection document, found by C-FIND
    wait_for(lambda: pacs.query("SELECT COUNT(*) FROM key_object_documents WHERE sop_instance_uid <> ''")[0][0] == 1,
             "the key object document stored", 20)
    (study_uid,) = [r[0] for r in pacs.query("SELECT study_instance_uid FROM studies")]  # the images', and the KOS's
    found_dir = tmp_path / "found"
    found_dir.mkdir()
    found = run(["findscu", "-v", "-S", "-X", "--output-directory", str(found_dir), "-aet", "READER", "-aec", "PACSLITE",
                 "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
                 "-k", "Modality", "-k", "SeriesInstanceUID", "127.0.0.1", str(pacs.port)])
    modalities = sorted(str(dcmread(p).Modality) for p in found_dir.glob("rsp*.dcm"))
    assert found.returncode == 0 and modalities == ["CT", "KO"], found.stderr[-1500:]

    # retrieved by a workstation (C-GET of the KO series) and seen by OHIF (its series in the study)
    ko_series = [str(dcmread(p).SeriesInstanceUID) for p in found_dir.glob("rsp*.dcm") if dcmread(p).Modality == "KO"][0]
    got_dir = tmp_path / "got"
    got_dir.mkdir()
    got = run(["getscu", "-v", "-S", "-aet", "READER", "-aec", "PACSLITE", "-od", str(got_dir),
               "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
               "-k", f"SeriesInstanceUID={ko_series}", "127.0.0.1", str(pacs.port)])
    kos = [dcmread(p) for p in got_dir.iterdir()]
    assert got.returncode == 0 and [k.SOPClassUID for k in kos] == ["1.2.840.10008.5.1.4.1.1.88.59"], got.stderr[-1500:]
    ohif = page.context.new_page()
    ohif.goto(f"{pacs.server.url}/exams/{reg.accession_number}/ohif")
    ohif.wait_for_selector("canvas.cornerstone-canvas", timeout=60_000)
    ohif.get_by_text("Key images", exact=False).first.wait_for(timeout=30_000)  # its KO series in the study browser
    ARTIFACTS.mkdir(exist_ok=True)
    ohif.screenshot(path=str(ARTIFACTS / "ohif-key-images.png"))
    ohif.close()

    # the printed 图文报告: the two key images under the findings, one A4 page
    with page.context.expect_page() as opened:
        page.click("#versions >> text=Print (A4)")
    printed = opened.value
    printed.wait_for_load_state()
    expect(printed.locator("#printed-keys figure")).to_have_count(2)
    assert "右肺结节" in printed.locator("#printed-keys").inner_text()
    assert printed.evaluate("Array.from(document.querySelectorAll('#printed-keys img')).every(i => i.naturalWidth > 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    printed.emulate_media(media="print")
    printed.screenshot(path=str(ARTIFACTS / "report-key-images-a4.png"), full_page=True)
    pdf = printed.pdf(prefer_css_page_size=True)
    (ARTIFACTS / "report-key-images-a4.pdf").write_bytes(pdf)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1

    # a QC reviewer samples the month and scores the report; the statistics show both
    qc_page = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768}).new_page()
    watch_console(qc_page, problems)
    log_in(qc_page, pacs.server.url, "qc_t", "Secret-pass-1")
    qc_page.click("#nav-qc")
    qc_page.fill("#f-per_radiologist", "1")
    qc_page.click("#qc-sample button[type=submit]")
    qc_page.click(f"#qc-list >> text={reg.accession_number}")
    qc_page.check("input[name=description][value='2']")
    qc_page.check("input[name=conclusion][value='1']")
    qc_page.fill("#f-comment", "结论可更具体。")
    qc_page.click("#qc-form button[type=submit]")
    qc_page.wait_for_selector("text=Scored.")
    admin = browser.new_context(locale="en-US", viewport={"width": 1366, "height": 768}).new_page()
    watch_console(admin, problems)
    log_in(admin, pacs.server.url, "admin_t", "Secret-pass-1")
    admin.goto(f"{pacs.server.url}/statistics")
    admin.locator("#grades-technologist").wait_for()
    assert "2 (good): 1" in admin.locator("#grades-month").inner_text()
    assert "75" in admin.locator("#work-radiologists").inner_text()
    page.goto(f"{pacs.server.url}/exams/{reg.accession_number}/report")
    assert "结论可更具体。" in page.locator("#qc-reviews").inner_text()  # the author sees the comment
    assert problems == [], problems
