"""Sessions, CSRF, headers, redirects and login throttling."""
import pytest

from pacslite.core import audit
from pacslite.ris import users
from tests.conftest import PASSWORD, csrf_token, login, make_user, post, register


def test_post_without_csrf_token_is_refused_and_changes_nothing(client_as, conn) -> None:
    desk = client_as("registrar")
    from tests.conftest import EXAM_FORM
    response = desk.post("/exams/new", data=EXAM_FORM)
    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    assert conn.execute("SELECT COUNT(*) FROM exams").fetchone()[0] == 0


def test_htmx_style_csrf_header_is_accepted(client_as, conn) -> None:
    desk = client_as("registrar")
    accession = register(desk)
    token = csrf_token(desk, "/exams")
    bad = desk.post(f"/exams/{accession}/cancel", data={"reason": "x"}, headers={"X-CSRFToken": "forged"})
    assert bad.status_code == 400
    good = desk.post(f"/exams/{accession}/cancel", data={"reason": "x"}, headers={"X-CSRFToken": token})
    assert good.status_code == 302


def test_login_itself_needs_the_csrf_token(app, conn) -> None:
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    response = client.post("/login", data={"username": "desk", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/exams").status_code == 302  # still anonymous


def test_headers_and_cookie_flags(app, conn) -> None:
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    response = login(client, "desk")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/exams")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    body = page.get_data(as_text=True)
    assert "<script>" not in body and " style=" not in body and "onclick" not in body


@pytest.mark.parametrize("target, lands_on", [
    ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("http:/evil", "/"),
    # a local path whose encoded CR LF stays inside the URL: no header is injected
    ("/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"),
])
def test_no_open_redirect_through_next(app, conn, target, lands_on) -> None:
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    response = client.post("/login", data={"username": "desk", "password": PASSWORD, "next": target,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.location == lands_on
    assert [c for c in response.headers.getlist("Set-Cookie") if c.startswith("x")] == []  # no injected cookie


def test_next_to_a_local_page_is_followed(app, conn) -> None:
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    first = client.get("/patients?q=abc")
    assert first.status_code == 302 and "next=" in first.location
    response = client.post("/login", data={"username": "desk", "password": PASSWORD, "next": "/patients?q=abc",
                                           "csrf_token": csrf_token(client)})
    assert response.location == "/patients?q=abc"


def test_logout_ends_the_session(client_as) -> None:
    desk = client_as("registrar")
    assert desk.get("/exams").status_code == 200
    cookie_before = desk.get_cookie("pacslite_session")
    assert post(desk, "/logout").status_code == 302
    assert desk.get("/exams").status_code == 302
    # a copy of the old cookie does not bring the session back either
    desk.set_cookie("pacslite_session", cookie_before.value)
    assert desk.get("/exams").status_code == 302


def test_password_reset_and_disable_end_sessions(app, conn, client_as) -> None:
    desk = client_as("registrar", username="victim")
    user = users.by_username(conn, "victim")
    users.reset_password(conn, audit.Actor("admin"), user.id, "another-pass-1")
    assert desk.get("/exams").status_code == 302
    desk2 = app.test_client()
    assert login(desk2, "victim", "another-pass-1").status_code == 302
    users.update(conn, audit.Actor("admin"), user.id, {"display_name": "", "roles": ["registrar"], "active": False})
    assert desk2.get("/exams").status_code == 302
    response = login(app.test_client(), "victim", "another-pass-1")
    assert response.status_code == 200 and "disabled" in response.get_data(as_text=True)


def test_account_locks_after_repeated_failures(app, conn) -> None:
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    for _ in range(app.config["LOGIN_MAX_FAILURES"] - 1):
        assert "Wrong user name or password." in login(client, "desk", "wrong").get_data(as_text=True)
    locked = login(client, "desk", "wrong").get_data(as_text=True)
    assert "this account is locked until" in locked
    # even the right password is refused while locked
    refused = login(client, "desk")
    assert refused.status_code == 200 and "locked" in refused.get_data(as_text=True)
    assert client.get("/exams").status_code == 302
    failures = audit.search(conn, action="login", outcome="failure")
    assert len(failures) == app.config["LOGIN_MAX_FAILURES"]
    # an admin's password reset unlocks
    users.reset_password(conn, audit.Actor("admin"), users.by_username(conn, "desk").id, PASSWORD)
    assert login(client, "desk").status_code == 302


def test_address_locks_after_many_failures_across_accounts(app, conn) -> None:
    app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"] = 6
    make_user(conn, "desk", "registrar")
    client = app.test_client()
    for i in range(6):
        login(client, f"guess{i}", "wrong")
    response = login(client, "desk")  # right password, wrong place
    assert "Too many failed attempts from this computer" in response.get_data(as_text=True)
    other = app.test_client()
    assert login(other, "desk", PASSWORD).status_code == 200  # same address (127.0.0.1 in tests)
    remote = app.test_client()
    token = csrf_token(remote)
    ok = remote.post("/login", data={"username": "desk", "password": PASSWORD, "csrf_token": token},
                     environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert ok.status_code == 302


def test_denied_request_is_audited(client_as, conn) -> None:
    clinician = client_as("clinician")
    assert clinician.get("/admin/users").status_code == 403
    row = audit.search(conn, action="access.denied")[0]
    assert row["actor"] == "u_clinician" and row["outcome"] == "denied" and "/admin/users" in row["target"]


def test_an_unknown_language_is_refused_and_changes_nothing(conn, client_as) -> None:
    desk = client_as("registrar", username="lang_desk")
    assert post(desk, "/language", {"language": "fr"}).status_code == 400
    assert users.by_username(conn, "lang_desk").language is None
    assert post(desk, "/language", {"language": "en"}).status_code == 302
    assert users.by_username(conn, "lang_desk").language == "en"


def test_a_poll_does_not_send_the_session_back_so_it_cannot_undo_another_requests_change(client_as) -> None:
    """The cookie session is written only when a request changes it. A page's polls and image
    loads run while its form is posted: had each answered with the session it was sent with, one
    finishing after the post would put back the session without the post's message (a critical
    finding sent, and no "sent" shown) or the receipt it asked to print."""
    admin = client_as("admin")
    sent = [header for header in admin.get("/alerts/count", headers={"HX-Request": "true"}).headers.getlist("Set-Cookie")
            if header.startswith("pacslite_session=")]
    assert sent == []
    before = admin.get_cookie("pacslite_session").value
    changed = post(admin, "/language", {"language": "zh_CN", "next": "/exams"})
    assert changed.status_code == 302 and admin.get_cookie("pacslite_session").value != before  # a change is sent
