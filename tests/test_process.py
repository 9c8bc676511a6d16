"""The single process: first start, restart, clean stop on SIGTERM and SIGINT."""
import signal
import stat
import urllib.request
from http.cookiejar import CookieJar
from urllib.parse import urlencode

import pytest

from tests import databases
from tests import server as pacslite


def opener():
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))


def log_in(browser, url: str, username: str, password: str) -> str:
    import re
    page = browser.open(f"{url}/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    final = browser.open(f"{url}/login", data=urlencode({"username": username, "password": password,
                                                        "csrf_token": token}).encode())
    return final.geturl()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_start_prints_the_admin_password_once_and_stops_cleanly(tmp_path, sig) -> None:
    instance = tmp_path / "instance"
    first = pacslite.start(instance)
    try:
        password = first.admin_password
        assert password and len(password) >= 12
        assert log_in(opener(), first.url, "admin", password).endswith("/exams")
        assert log_in(opener(), first.url, "admin", "admin").endswith("/login")  # no fixed default
    finally:
        assert first.stop(sig) == 0
    assert any("stopped" in line for line in first.output)
    assert (instance / "pacslite.db").is_file() != databases.ON_POSTGRESQL  # no file on PostgreSQL
    key = instance / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key_text = key.read_text()

    second = pacslite.start(instance)
    try:
        assert second.admin_password is None
        assert not any("first start" in line for line in second.output)
        assert log_in(opener(), second.url, "admin", password).endswith("/exams")
    finally:
        assert second.stop() == 0
    assert key.read_text() == key_text


def test_a_session_survives_a_restart(tmp_path) -> None:
    instance = tmp_path / "instance"
    first = pacslite.start(instance)
    browser = opener()
    try:
        log_in(browser, first.url, "admin", first.admin_password)
    finally:
        first.stop()
    second = pacslite.start(instance)
    try:
        port_url = second.url
        # the port differs, so carry the cookie over by hand
        jar = [h for h in browser.handlers if isinstance(h, urllib.request.HTTPCookieProcessor)][0].cookiejar
        cookie = next(c for c in jar if c.name == "pacslite_session")
        request = urllib.request.Request(f"{port_url}/admin/users", headers={"Cookie": f"pacslite_session={cookie.value}"})
        response = urllib.request.urlopen(request)
        assert response.geturl().endswith("/admin/users") and b"admin" in response.read()
    finally:
        second.stop()


def test_the_audit_head_is_anchored_while_running_and_at_stop(tmp_path) -> None:
    """Case 13: the chain's head reaches instance/audit_anchors when pacslite stops, and every
    AUDIT_ANCHOR_MINUTES while it runs."""
    import time

    from pacslite.core import audit, db
    instance = tmp_path / "instance"

    def head_is_anchored() -> bool:
        conn = db.connect(databases.of(instance))
        try:
            head = audit.head(conn)
        finally:
            conn.close()
        anchors = list(audit.read_anchors(databases.files_dir(instance) / "audit_anchors"))
        return bool(anchors) and (anchors[-1].row_id, anchors[-1].hash) == (head.row_id, head.hash)

    running = pacslite.start(instance, PACSLITE_AUDIT_ANCHOR_MINUTES="60")  # only the stop can anchor
    try:
        log_in(opener(), running.url, "admin", running.admin_password)  # a new audit row
    finally:
        assert running.stop() == 0
    assert head_is_anchored(), "the head was not anchored at stop"
    password = running.admin_password

    running = pacslite.start(instance, PACSLITE_AUDIT_ANCHOR_MINUTES="0.01")  # every 0.6 s
    try:
        log_in(opener(), running.url, "admin", password)
        deadline = time.monotonic() + 20
        while not head_is_anchored() and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the file for the condition itself
        assert head_is_anchored(), "the head was not anchored while running"
    finally:
        assert running.stop() == 0
    assert stat.S_IMODE((databases.files_dir(instance) / "audit_key").stat().st_mode) == 0o600
