"""Hardening of the pages, the API and the audit chain against hostile input (issue 13)."""
from __future__ import annotations

import csv
import io
import select
import socket
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.conftest import register


def test_csv_cells_that_look_like_formulas_are_neutralised(client_as, conn) -> None:
    from pacslite.core import audit
    from pacslite.ris import aes
    for title in ('=HYPERLINK("x")', "@SUM(A1)", "-2+3"):  # AE titles a hostile admin entry could hold
        aes.add_ae(conn, audit.SYSTEM, {"ae_title": title, "modality": "CT"})
    desk = client_as("registrar")
    register(desk, station_ae='=HYPERLINK("x")')
    register(desk, station_ae="@SUM(A1)", patient_id="P0002", name="李四")
    register(desk, station_ae="-2+3", patient_id="P0003", name="王五")
    text = client_as("admin").get("/statistics.csv").get_data(as_text=True).lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    stations = {row[1] for row in rows if row[0] == "station"}
    assert stations == {"'=HYPERLINK(\"x\")", "'@SUM(A1)", "'-2+3"}, stations
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for cell in row), rows
    assert rows[1][:3] == ["all", "all", "3"]  # numbers stay numbers


def _login_from(client, peer: str, forwarded_for: str | None, password: str) -> str:
    from tests.conftest import csrf_token
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    token = csrf_token(client)
    response = client.post("/login", data={"username": "desk", "password": password, "csrf_token": token},
                           headers=headers, environ_base={"REMOTE_ADDR": peer})
    return "302" if response.status_code == 302 else response.get_data(as_text=True)


def test_behind_a_trusted_proxy_each_client_is_throttled_on_its_own(tmp_path) -> None:
    from pacslite.core import db
    from pacslite import create_app
    from tests.conftest import INDEPENDENT_OF_HOST_AND_HOUR, PASSWORD, make_user
    app = create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "DEFAULT_LANGUAGE": "en",
                      "TRUSTED_PROXIES": ["10.0.0.1", "10.9.0.0/16"], "LOGIN_MAX_FAILURES": 1000,
                      **INDEPENDENT_OF_HOST_AND_HOUR})
    conn = db.connect(app.config["DATABASE"])
    make_user(conn, "desk", "registrar")
    limit = app.config["LOGIN_MAX_FAILURES_PER_ADDRESS"]
    for _ in range(limit):  # one ward PC behind the proxy (and a second proxy hop) mistypes
        assert "Wrong user name" in _login_from(app.test_client(), "10.0.0.1", "192.168.5.7, 10.9.3.3", "wrong")
    assert "from this computer" in _login_from(app.test_client(), "10.0.0.1", "192.168.5.7", PASSWORD)
    # … and another PC behind the same proxy still logs in
    assert _login_from(app.test_client(), "10.0.0.1", "192.168.5.8", PASSWORD) == "302"
    addresses = {row[0] for row in conn.execute("SELECT address FROM login_failures")}
    assert addresses == {"192.168.5.7"}
    assert conn.execute("SELECT address FROM audit_log WHERE action = 'login' AND outcome = 'success'"
                        " ORDER BY id DESC").fetchone()[0] == "192.168.5.8"

    # from an address that is not a trusted proxy the header is ignored: no escaping the lock by forging it
    for n in range(limit):
        _login_from(app.test_client(), "172.16.0.9", f"192.168.7.{n}", "wrong")
    assert "from this computer" in _login_from(app.test_client(), "172.16.0.9", "192.168.7.200", PASSWORD)
    assert conn.execute("SELECT COUNT(*) FROM login_failures WHERE address = '172.16.0.9'").fetchone()[0] == limit
    conn.close()


def test_a_malformed_trusted_proxy_stops_the_start_with_its_name(tmp_path) -> None:
    from pacslite import create_app
    with pytest.raises(SystemExit, match="'proxy.example' is not an IP address"):
        create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "TRUSTED_PROXIES": ["proxy.example"]})


CLIENT_SEND_BUFFER = 64 * 1024


def _open(url: str, head: bytes) -> socket.socket:
    """A connection to the server with a request's head sent (and no body yet). The client's
    send buffer is kept small so that what it counts as sent is close to what reached the server."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SEND_BUFFER)
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(head)
    return sock


def _kernel_buffers() -> int:
    """The most the kernel may hold between the client and the server without the server reading
    a byte: the client's send buffer (the kernel doubles what is asked) and the largest receive
    buffer TCP may grow the server's socket to (the third figure of tcp_rmem)."""
    with open("/proc/sys/net/ipv4/tcp_rmem") as f:
        receive_most = int(f.read().split()[2])
    return 2 * CLIENT_SEND_BUFFER + receive_most


def _send_until_answered(sock, chunk: bytes, most: int) -> tuple[int, bytes]:
    """Keep sending ``chunk`` until the server answers or closes (or ``most`` bytes went)."""
    sent = 0
    while sent < most:
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
        if select.select([sock], [], [], 0)[0]:
            break
    try:
        return sent, sock.recv(65536)
    except ConnectionResetError:
        return sent, b""


def _head(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: pacslite", *headers, "", ""]).encode()


def test_a_body_over_its_route_limit_is_refused_before_it_is_read(tmp_path) -> None:
    """Case 10: an anonymous POST /login declaring 300 MB is answered 413 at once, not after
    the server spooled it; a chunked body is cut off at the route's limit; an upload route
    takes its own, larger limit."""
    from pacslite.web import limits
    from tests import server as pacs_server
    running = pacs_server.start(tmp_path / "instance", PACSLITE_IMPORT_MAX_BYTES=str(3 * 1024 * 1024))
    form = "Content-Type: application/x-www-form-urlencoded"
    try:
        with _open(running.url, _head("/login", form, "Content-Length: 314572800")) as sock:
            assert sock.recv(65536).startswith(b"HTTP/1.1 413")  # with no byte of the body sent

        with _open(running.url, _head("/login", form, "Transfer-Encoding: chunked")) as sock:
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"a" * 64 * 1024)
            sent, answer = _send_until_answered(sock, chunk, 300 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        # the server read no more than its limit: what was sent beyond it sat in kernel buffers
        # (on loopback those may grow to megabytes, so the bound is the limit plus the buffers,
        # still far below the 300 MB a server that spools the body would take)
        most = limits.DEFAULT_BODY_BYTES + 64 * 1024 + _kernel_buffers()
        assert sent < most, f"{sent} bytes were taken before the refusal (at most {most} expected)"

        # /import/ takes up to IMPORT_MAX_BYTES: 2 MiB is read (then the anonymous visitor is
        # sent to log in), 4 MiB is refused before it is sent
        upload = "Content-Type: application/octet-stream"
        with _open(running.url, _head("/import/", upload, f"Content-Length: {2 * 1024 * 1024}")) as sock:
            sent, answer = _send_until_answered(sock, b"x" * 1024 * 1024, 2 * 1024 * 1024)
            assert sent == 2 * 1024 * 1024 and answer.startswith(b"HTTP/1.1 302"), answer[:100]
        with _open(running.url, _head("/import/", upload, f"Content-Length: {4 * 1024 * 1024}")) as sock:
            assert sock.recv(65536).startswith(b"HTTP/1.1 413")
        with urllib.request.urlopen(running.url + "/login", timeout=10) as response:
            assert response.status == 200
    finally:
        assert running.stop() == 0


def test_flask_refuses_a_body_over_the_route_limit_too(app) -> None:
    """The same limits in the application (for any other server in front of it)."""
    from pacslite.web import limits
    big = b"a" * (limits.DEFAULT_BODY_BYTES + 1)
    response = app.test_client().post("/login", data=big, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    assert limits.body_limit(app, "POST", "/import/") == app.config["IMPORT_MAX_BYTES"] + limits.MULTIPART_MARGIN
    assert limits.body_limit(app, "POST", "/exams/A1/request-forms") == (
        app.config["REQUEST_FORM_MAX_BYTES"] + limits.MULTIPART_MARGIN)
    assert limits.body_limit(app, "POST", "/login") == limits.DEFAULT_BODY_BYTES
