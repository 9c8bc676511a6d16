"""The issue's "done when", in Debian's Chromium driven by Playwright against the real process.

An admin logs in with the printed password and creates a registrar; the registrar registers a
patient and an exam, opens the receipt in print preview, and its barcode scans back as the
accession number; the registrar is refused the admin pages. No page breaks the CSP.
"""
from __future__ import annotations

import io
import shutil

import pytest
import zxingcpp
from PIL import Image

from tests import server as pacslite
from tests.conftest import ROOT

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


def watch_console(page, problems: list[str]) -> None:
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#f-username", username)
    page.fill("#f-password", password)
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{url}/exams**")


def decode_barcode(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.Code128]


def test_newcomer_registers_an_exam_and_prints_a_scannable_receipt(browser, live) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    # 3 device pixels per CSS pixel: about 290 dpi, like a receipt printer rather than a screen.
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900}, device_scale_factor=3)
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
    page.click("button:has-text('Log out')")
    page.wait_for_url(f"{live.url}/login")

    # The registrar registers a new patient with an exam.
    log_in(page, live.url, "desk1", "desk-password-1")
    page.click("nav >> text=Register exam")
    page.fill("#f-patient_id", "MZ20261124")
    page.fill("#f-name", "王<b>芳</b>")
    page.select_option("#f-sex", "F")
    page.fill("#f-birth_date", "1988-07-15")
    page.select_option("#f-modality", "CT")
    page.select_option("#f-source", "outpatient")
    page.fill("#f-procedure", "胸部 CT 平扫")
    page.fill("#f-body_part", "CHEST")
    page.click("button:has-text('Register')")
    page.wait_for_url(f"{live.url}/exams/A*")
    accession = page.url.rsplit("/", 1)[1]
    assert page.locator("h1 .mono").inner_text() == accession
    assert page.locator("text=王<b>芳</b>").count() >= 1  # shown as typed, not as markup

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
        receipt.goto(f"{live.url}/exams/{accession}/receipt?format={fmt}")
        receipt.wait_for_load_state("networkidle")
        receipt.emulate_media(media="print")
        assert receipt.locator(".receipt-tools").is_hidden()
        assert receipt.evaluate("document.getElementById('barcode').naturalWidth") > 0
        shot = receipt.locator("article.slip").screenshot(path=str(ARTIFACTS / f"receipt-{fmt}.png"))
        assert decode_barcode(shot) == [accession], fmt
        receipt.pdf(path=str(ARTIFACTS / f"receipt-{fmt}.pdf"), prefer_css_page_size=True)
        assert "王<b>芳</b>" in receipt.locator("dd.big").inner_text()
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
