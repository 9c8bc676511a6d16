"""Fixtures: every test gets its own instance folder, database and store."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pacslite.core import audit, config, db
from pacslite.ris import users
from pacslite import create_app
from tests import databases
free_port = databases.free_port  # tests import it from here

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-1"
ROLES = users.ROLES


#: Tests that are not about capacity must not depend on how full the machine's disk is.
#: Settings that keep a test's outcome independent of this machine's disk and of the hour it runs
#: at: report targets count every hour unless a test sets the reporting hours it is about.
INDEPENDENT_OF_HOST_AND_HOUR = {"STORAGE_HIGH_WATER_PERCENT": 100, "STORAGE_WARN_PERCENT": 100, "STORAGE_WARN_DAYS": 0,
                                "REPORTING_HOURS": {}}


if databases.ON_POSTGRESQL:
    _load = config.load

    def _load_with_database(overrides: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Every instance folder a test makes gets its own PostgreSQL database, unless the test
        names its database (``DATABASE_URL`` empty: SQLite)."""
        settings = _load(overrides, **kwargs)
        if "DATABASE_URL" not in (overrides or {}) and not settings["DATABASE_URL"]:
            settings["DATABASE_URL"] = databases.url_for(Path(settings["INSTANCE_DIR"]))
        return settings
    config.load = _load_with_database


@pytest.fixture(autouse=True, scope="session")
def _postgresql_server() -> None:
    """Started before any test, so that every process a test starts inherits its address."""
    if databases.ON_POSTGRESQL:
        databases.server()


@pytest.fixture(autouse=True, scope="module")
def _drop_module_databases() -> Iterator[None]:
    yield
    if databases.ON_POSTGRESQL:
        databases.drop_made()


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """A test's databases go when it ends; those of its module's servers when the module ends."""
    since = databases.mark()
    yield
    if databases.ON_POSTGRESQL:
        databases.drop_made(since)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app({"INSTANCE_DIR": str(tmp_path / "instance"), "TIMEZONE": "Asia/Shanghai",
                       "DEFAULT_LANGUAGE": "en", **INDEPENDENT_OF_HOST_AND_HOUR})


@pytest.fixture
def conn(app: Flask) -> Iterator[Any]:
    connection = db.connect(app.config["DATABASE"])
    yield connection
    connection.close()


def make_user(conn: Any, username: str, *roles: str, display_name: str | None = None) -> users.User:
    """An account; its display name (which a signature needs) is ``display_name``, else made
    from the user name."""
    name = f"Name of {username}" if display_name is None else display_name
    return users.create(conn, audit.SYSTEM, {"username": username, "password": PASSWORD, "roles": list(roles),
                                             "display_name": name})


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the client's session, read from a page like a browser would."""
    page = client.get(path, follow_redirects=True).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})


@pytest.fixture
def client_as(app: Flask, conn: Any):
    """client_as("registrar") → a test client logged in as a new user holding that role."""
    def make(*roles: str, username: str | None = None) -> FlaskClient:
        name = username or "u_" + "_".join(roles)
        if users.by_username(conn, name) is None:
            make_user(conn, name, *roles)
        client = app.test_client()
        response = login(client, name)
        assert response.status_code == 302, response.get_data(as_text=True)
        return client
    return make


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
    """A form POST carrying the session's CSRF token, as the page's form would."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, "/exams")}, **kw)


EXAM_FORM = {"patient_id": "P0001", "name": "张三", "sex": "M", "birth_date": "1980-02-03", "phone": "13800000000",
             "modality": "CT", "source": "outpatient", "procedure": "Chest CT", "body_part": "CHEST",
             "requesting_department": "Respiratory", "requesting_physician": "Dr Li", "priority": "routine",
             "scheduled_date": "", "scheduled_time": "", "station_ae": "", "clinical_note": "cough"}


def register(client: FlaskClient, **changes: Any) -> str:
    """Register an exam through the page; returns its accession number."""
    response = post(client, "/exams/new", {**EXAM_FORM, **changes})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.location.startswith("/exams/new?registered="), response.location  # back to an empty form
    return response.location.split("registered=", 1)[1]


def flask_cli(instance: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``flask --app app ARGS`` on this instance folder, as an administrator would type it."""
    env = {**os.environ, "PACSLITE_INSTANCE_DIR": str(instance), **databases.env_for(instance),
           **{f"PACSLITE_{k}": str(v) for k, v in INDEPENDENT_OF_HOST_AND_HOUR.items()}}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def wait_for(condition: Any, what: str, seconds: float = 15) -> None:
    """Poll ``condition`` (the state itself, not a delay) until it holds or ``seconds`` pass."""
    import time
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def count(conn: Any, table: str) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30)) -> bytes:
    """A small real image, as a scanner would produce."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 200, 200)).save(out, format=fmt)
    return out.getvalue()
