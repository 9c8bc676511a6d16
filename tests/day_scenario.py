"""The department's day in Chromium (issue 31), run in a private network namespace by
tests/test_browser_queue.py, because the film printer (DCMTK's dcmprscp) cannot be told to listen
on loopback only:

    unshare --net --map-root-user sh -c 'ip link set lo up && exec python -m tests.day_scenario WORKDIR'

A patient is booked at the desk, checked in, called on the waiting-room screen (a wall TV, read
from 5 m), the exam started from the queue; the images arrive (storescu), the technologist
prints films to the printer (what it received checked image box by image box), the radiologist
signs the final report, and the patient prints it at the kiosk by scanning the receipt. Prints
one JSON line of what happened; any failed check ends it with a traceback."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydicom import dcmread

from pacslite.pacs import printing
from pacslite.ris import queue
from tests import server as pacslite
from tests.conftest import flask_cli, wait_for
from tests.databases import free_port
from tests.print_scenario import start_printer
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, log_in, watch_console
from tests.test_browser_desk import register_at_desk


def walk(browser, work: Path) -> dict:
    instance = work / "instance"
    printer_port = free_port()
    printer = start_printer(work / "printer", printer_port)
    for args in (("STORESCU", "--host", "127.0.0.1", "--modality", "CT"),
                 ("DRYLASER", "--host", "127.0.0.1", "--port", str(printer_port), "--modality", "HC")):
        assert flask_cli(instance, "ae", "add", *args).returncode == 0
    pacs = pacslite.Pacs(instance)
    try:
        return _day(browser, pacs, work)
    finally:
        assert pacs.server.stop() == 0
        printer.terminate()
        printer.wait(timeout=30)


def _day(browser, pacs, work: Path) -> dict:
    assert flask_cli(pacs.instance, "ae", "add", "CT01", "--modality", "CT", "--name", "CT1室").returncode == 0
    for user, role in (("admin_q", "admin"), ("desk_q", "registrar"), ("tech_q", "technologist"),
                       ("dr_q", "radiologist")):
        pacs.add_user(user, role, display_name=f"{user} 医生" if role == "radiologist" else "")
    url = pacs.server.url
    problems: list[str] = []

    def page_of(user: str, locale: str = "zh-CN"):
        """Each user in a browser of their own (a session each), in Chinese unless told."""
        context = browser.new_context(locale=locale, viewport={"width": 1366, "height": 768})
        context.add_init_script("window.print = function () { window.top.__printed = (window.top.__printed || 0) + 1; };")
        page = context.new_page()
        watch_console(page, problems)
        log_in(page, url, user, "Secret-pass-1")
        return page

    # the administrator: CT01 takes bookings every day, all day; a screen for the CT hall
    admin = page_of("admin_q")
    admin.goto(f"{url}/admin/booking/CT01")
    rows = admin.locator("#timetable-form tbody tr")
    for day in range(7):
        row = rows.nth(day)
        row.locator("select[name=weekday]").select_option(str(day))
        row.locator("input[name=starts]").fill("00:00")
        row.locator("input[name=ends]").fill("23:50")
        row.locator("input[name=slot_minutes]").fill("10")
        row.locator("input[name=capacity]").fill("3")
    admin.click("#timetable-form button[type=submit]")
    admin.wait_for_url(f"{url}/admin/booking")
    admin.goto(f"{url}/admin/screens")
    admin.fill("#f-name", "CT候诊区")
    admin.fill("#f-rooms", "CT01")
    admin.click("#device-form button[type=submit]")
    screen_url = admin.locator("#device-url").inner_text()

    # the desk: registered, Alt+B, Enter: booked into the first free slot, back on the empty form
    desk = page_of("desk_q")
    accession = register_at_desk(desk, url, {"#f-patient_id": "Q0001", "#f-name": "王小英", "#f-phone": "13800000000",
                                             "#f-birth_date": "19800203", "#f-procedure": "胸部CT平扫"},
                                 choose={"#f-sex": "F", "#f-modality": "CT", "#f-source": "outpatient",
                                         "#f-station_ae": "CT01"})
    desk.keyboard.press("Alt+b")
    desk.wait_for_url(re.compile(re.escape(f"{url}/exams/{accession}/booking")))
    desk.keyboard.press("Enter")
    desk.wait_for_url(f"{url}/exams/new?registered={accession}")
    assert pacs.query("SELECT COUNT(*) FROM bookings WHERE status = 'booked'")[0][0] == 1

    # the patient comes: checked in at the desk, the slip with the number
    desk.goto(f"{url}/exams/{accession}")
    desk.click("#queue-number")
    desk.wait_for_selector("#slip-ticket")
    assert desk.locator("#slip-ticket").inner_text() == "CT01-001"
    assert "CT1室" in desk.locator("#slip-room").inner_text()

    # the waiting-room screen, a 1920×1080 TV without an account
    tv = browser.new_context(locale="zh-CN", viewport={"width": 1920, "height": 1080}).new_page()
    watch_console(tv, problems)
    tv.goto(screen_url)
    assert "请等候叫号" in tv.locator(".board-room").inner_text()
    assert tv.locator(".board-next li").first.inner_text() == "CT01-001 王*英"
    next_size = tv.eval_on_selector(".board-next li", "e => parseFloat(getComputedStyle(e).fontSize)")
    assert next_size >= 48, next_size  # readable from 5 m on a 1080p TV (3 cm letters)

    # the technologist calls: the screen shows the number, the masked name and the room by itself
    tech = page_of("tech_q")
    tech.goto(f"{url}/queue/CT01")
    tech.click("#call-next")
    tv.wait_for_selector(".board-now[data-call]", timeout=15_000)
    called = tv.locator(".board-now").inner_text()
    assert "CT01-001" in called and "王*英" in called and "王小英" not in tv.content()
    assert tv.locator(".board-room h2").inner_text() == "CT1室"
    assert tv.locator(".board-now").get_attribute("data-say") == "请 001 号 王*英 到 CT1室 检查。"
    now_size = tv.eval_on_selector(".board-now", "e => parseFloat(getComputedStyle(e).fontSize)")
    assert now_size >= 96, now_size
    tv.locator("body[data-last-call]").wait_for(state="attached")

    # the patient walks in: started, the exam in progress
    entry = pacs.query("SELECT id FROM queue_entries")[0][0]
    tech.locator(f"tr[data-entry='{entry}'] button.primary").click()
    tech.wait_for_load_state()
    assert pacs.query("SELECT status FROM exams WHERE accession_number = ?", accession)[0][0] == "in_progress"
    assert pacs.query("SELECT state FROM queue_entries")[0][0] == queue.STARTED

    # the exam: five images through storescu, filed to it
    pacs.send_series(work / "images", 5, accession=accession, patient_id="Q0001", name="WANG^XIAOYING", sex="F",
                     birth_date="19800203", size=64)
    wait_for(lambda: pacs.query("SELECT instance_count FROM exams WHERE accession_number = ?", accession)[0][0] == 5,
             "the five images are filed to the exam")

    # films: from the exam page, images 1 to 5 on 2×2 film, the second in the bone window
    tech.goto(f"{url}/exams/{accession}")
    tech.click("#print-films-link")
    series_id = pacs.query("SELECT id FROM series")[0][0]
    tech.check(f"#series-{series_id}")
    tech.locator(".film-image").nth(4).wait_for()
    assert tech.locator("figure.film").count() == 2  # four images and one, as they will print
    second = pacs.query("SELECT id FROM instances ORDER BY CAST(instance_number AS INTEGER)")[1][0]
    tech.select_option(f"select[name='preset-i{second}']", "bone")
    tech.locator(".film-image img[src*='ww=1800']").wait_for()  # the preview again, that image in the bone window
    assert tech.locator(f"select[name='preset-i{second}']").input_value() == "bone"
    ARTIFACTS.mkdir(exist_ok=True)
    tech.screenshot(path=str(ARTIFACTS / "films.png"), full_page=True)
    tech.click("#print-films")
    tech.wait_for_url(f"{url}/exams/{accession}#films")
    wait_for(lambda: pacs.query("SELECT state FROM print_jobs")[0][0] == "printed", "the printer printed", 60)
    tech.reload()
    assert tech.locator("#films tr.film-printed").count() == 1

    # what the printer received: per film its layout, and in each image box exactly the picture
    # pacslite rendered for that position (the second in the bone window)
    conn = pacs.conn()
    try:
        job = conn.execute("SELECT * FROM print_jobs").fetchone()
        expected = [[picture.pixels.hex() for picture in film.pictures]
                    for film in printing.films_of(pacs.settings["STORAGE_DIR"], conn, job)]
        windows = [(pick["center"], pick["width"]) for pick in json.loads(job["images"])]
    finally:
        conn.close()
    received = _received(work / "printer" / "database")
    films = sorted(received, key=lambda film: -len(film[1]))
    assert [film[0] for film in films] == ["STANDARD\\2,2"] * 2
    assert [film[1] for film in films] == expected
    assert windows[1] == (400.0, 1800.0) and windows[0] == (None, None)

    # the radiologist signs the final report
    doctor = page_of("dr_q", locale="en-US")
    doctor.goto(f"{url}/exams/{accession}/report")
    doctor.wait_for_selector("#report-form")
    doctor.fill("#f-findings", "双肺纹理清晰。")
    doctor.fill("#f-impression", "胸部CT未见异常。")
    doctor.check("#result-class input[value=normal]")
    doctor.click("button:has-text('Sign final')")
    doctor.click("#confirm-sign button:has-text('Confirm and sign final')")
    doctor.wait_for_selector("text=Report signed as final.")

    # the patient at the kiosk (a portrait touch screen): scans the receipt, gives the last four
    # digits of the phone number, and the report prints; the desk sees it collected
    admin.goto(f"{url}/admin/screens")
    admin.select_option("#device-form select[name=kind]", "kiosk")
    admin.fill("#f-name", "大厅自助机")
    admin.click("#device-form button[type=submit]")
    kiosk_url = admin.locator("#device-url").inner_text()
    kiosk = browser.new_context(locale="zh-CN", viewport={"width": 1080, "height": 1920})
    kiosk.add_init_script("window.print = function () { document.body.dataset.printed = '1'; };")
    stand = kiosk.new_page()
    watch_console(stand, problems)
    stand.goto(kiosk_url)
    stand.fill("#kiosk-scan", accession)
    stand.keyboard.press("Enter")
    stand.wait_for_selector("#kiosk-answer")
    stand.fill("#kiosk-answer", "1234")
    stand.keyboard.press("Enter")
    stand.wait_for_selector("#kiosk-error")
    assert "不符" in stand.locator("#kiosk-error").inner_text()
    assert problems.pop() == "Failed to load resource: the server responded with a status of 403 (FORBIDDEN)"
    stand.fill("#kiosk-answer", "0000")  # the last four of the phone the desk typed, 13800000000
    stand.keyboard.press("Enter")
    stand.wait_for_selector("#printed-report")
    stand.locator("body[data-printed='1']").wait_for(state="attached")
    assert "胸部CT未见异常。" in stand.locator("#printed-impression").inner_text()
    stand.screenshot(path=str(ARTIFACTS / "kiosk-report.png"))
    handout = pacs.query("SELECT item, place, handed_by FROM handouts")
    assert [tuple(row) for row in handout] == [("report", "kiosk", "kiosk:大厅自助机")]
    desk.goto(f"{url}/exams/{accession}")
    assert "自助机" in desk.locator("#pickup-report").inner_text()
    desk.goto(f"{url}/pickup")
    desk.click(f"#pickup-{accession} button:has-text('已发放')")
    desk.wait_for_load_state()
    assert [tuple(r) for r in pacs.query("SELECT item, place FROM handouts ORDER BY id")] == \
        [("report", "kiosk"), ("films", "desk")]
    assert problems == [], problems
    return {"accession": accession, "films": len(films), "image_boxes": sum(len(f[1]) for f in films)}


def _received(database: Path) -> list[tuple[str, list[str]]]:
    """What dcmprscp kept: per film (a stored print object), its display format and its image
    boxes' pixels (hex), in position order."""
    hardcopy, films = {}, []
    for path in sorted(database.glob("*.dcm")):
        ds = dcmread(path)
        if path.name.startswith("HG_"):
            hardcopy[str(ds.SOPInstanceUID)] = bytes(ds.PixelData).hex()
        elif path.name.startswith("SP_"):
            boxes = {int(item.ImageBoxPosition): str(item.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
                     for item in ds.get("ImageBoxContentSequence", [])}
            films.append((str(ds.FilmBoxContentSequence[0].ImageDisplayFormat), sorted(boxes.items())))
    return [(layout, [hardcopy[uid] for _, uid in boxes]) for layout, boxes in films]


def main(work: Path) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            result = walk(browser, work)
        finally:
            browser.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
