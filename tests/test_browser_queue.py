"""The department's day in Chromium (issue 31): booked at the desk, checked in, called on the
waiting-room screen (a wall TV, read from 5 m), the exam started from the queue."""
from __future__ import annotations

import re

from pacslite.ris import queue
from tests.conftest import flask_cli
from tests.test_browser import browser, log_in, modality_pacs, watch_console  # noqa: F401 (fixtures)
from tests.test_browser_desk import register_at_desk


def test_a_patient_is_booked_checked_in_and_called_on_the_waiting_room_screen(browser, modality_pacs) -> None:
    pacs = modality_pacs()
    assert flask_cli(pacs.instance, "ae", "add", "CT01", "--modality", "CT", "--name", "CT1室").returncode == 0
    for user, role in (("admin_q", "admin"), ("desk_q", "registrar"), ("tech_q", "technologist")):
        pacs.add_user(user, role)
    url = pacs.server.url
    problems: list[str] = []

    def page_of(user: str):
        """Each user in a browser of their own (a session each), in Chinese."""
        context = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768})
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
    tv.wait_for_function("document.body.dataset.lastCall !== undefined")

    # the patient walks in: started, the exam in progress
    entry = pacs.query("SELECT id FROM queue_entries")[0][0]
    tech.locator(f"tr[data-entry='{entry}'] button.primary").click()
    tech.wait_for_load_state()
    assert pacs.query("SELECT status FROM exams WHERE accession_number = ?", accession)[0][0] == "in_progress"
    assert pacs.query("SELECT state FROM queue_entries")[0][0] == queue.STARTED
    assert problems == []
