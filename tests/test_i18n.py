"""Every visible string has a Chinese translation; the choice is remembered; local times."""
import re

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from pacslite.ris import users
from pacslite.web.i18n import SOURCE
from tests.conftest import ROOT, post, register

KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None, "_l": None, "lazy_gettext": None}


def extracted_messages() -> set[str]:
    method_map = [("pacslite/**.py", "python"), ("templates/**.html", "jinja2")]
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(str(ROOT), method_map=method_map,
                                                                       keywords=KEYWORDS):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_string_has_a_chinese_translation() -> None:
    with open(SOURCE / "zh_CN" / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = read_po(handle)
    translated = {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in catalog if m.id}
    messages = extracted_messages()
    assert len(messages) > 150
    missing = sorted(m for m in messages if not translated.get(m) or (isinstance(translated[m], tuple)
                                                                       and not all(translated[m])))
    assert missing == [], "run bin/i18n-update and translate these"
    for message in messages:  # placeholders survive translation
        string = translated[message]
        string = string[0] if isinstance(string, tuple) else string
        assert sorted(re.findall(r"%\(\w+\)[sd]", message)) == sorted(re.findall(r"%\(\w+\)[sd]", string)), message


def test_pages_in_chinese_by_browser_preference(app) -> None:
    page = app.test_client().get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert "登录" in page and "用户名" in page and 'lang="zh-CN"' in page
    page = app.test_client().get("/login", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert "Log in" in page and "登录" not in page


def test_the_choice_is_remembered_in_the_account(app, conn, client_as) -> None:
    desk = client_as("registrar", username="desk")
    assert "Exams" in desk.get("/exams").get_data(as_text=True)
    assert post(desk, "/language", {"language": "zh_CN", "next": "/exams"}).location == "/exams"
    assert users.by_username(conn, "desk").language == "zh_CN"
    from tests.conftest import login
    fresh = app.test_client()  # another PC, English browser
    login(fresh, "desk")
    page = fresh.get("/exams", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "检查号" in page or "没有检查" in page


def test_times_are_shown_in_the_configured_zone(app, conn, client_as) -> None:
    desk = client_as("registrar")
    accession = register(desk, scheduled_date="2026-11-24", scheduled_time="07:30")
    stored = conn.execute("SELECT scheduled_at FROM exams WHERE accession_number = ?", (accession,)).fetchone()[0]
    assert stored == "2026-11-23T23:30:00+00:00"
    assert "2026-11-24 07:30" in desk.get(f"/exams/{accession}").get_data(as_text=True)


def test_chinese_receipt(app, conn, client_as) -> None:
    desk = client_as("registrar", username="desk_zh")
    post(desk, "/language", {"language": "zh_CN"})
    accession = register(desk, source="emergency", birth_date="2026-01-01")
    page = desk.get(f"/exams/{accession}/receipt").get_data(as_text=True)
    assert "检查回执" in page and "急诊" in page and "个月" in page and "放射科 CT 检查室" in page
