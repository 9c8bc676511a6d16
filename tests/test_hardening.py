"""Hardening of the pages, the API and the audit chain against hostile input (issue 13)."""
from __future__ import annotations

import csv
import io

from tests.conftest import register


def test_csv_cells_that_look_like_formulas_are_neutralised(client_as) -> None:
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
    from pacslite import create_app, db
    from tests.conftest import HOST_DISK_INDEPENDENT, PASSWORD, make_user
    app = create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "DEFAULT_LANGUAGE": "en",
                      "TRUSTED_PROXIES": ["10.0.0.1", "10.9.0.0/16"], "LOGIN_MAX_FAILURES": 1000,
                      **HOST_DISK_INDEPENDENT})
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
    import pytest

    from pacslite import create_app
    with pytest.raises(SystemExit, match="'proxy.example' is not an IP address"):
        create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "TRUSTED_PROXIES": ["proxy.example"]})
