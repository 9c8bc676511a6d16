"""pacslite: a lightweight PACS + RIS for a small radiology department."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from flask import Flask

from .core import audit, config, db
from .ris import exams, users

__version__ = "0.1.0"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web application. Creates and migrates the instance; starts no threads."""
    settings = config.load(test_config)
    instance = Path(settings["INSTANCE_DIR"])
    instance.mkdir(parents=True, exist_ok=True)
    Path(settings["STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)

    app = Flask(__name__, instance_path=str(instance), template_folder=str(config.ROOT / "templates"))
    app.config.update(settings)
    app.config.update(
        DATABASE=settings["DATABASE_URL"] or str(instance / "pacslite.db"),
        SECRET_KEY=_secret_key(instance / "secret_key"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="pacslite_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings["SESSION_HOURS"]),
        # The session cookie is sent only by a request that changes it: a page's polls, running
        # while its form is posted, would otherwise put back the session without the post's
        # message. A login therefore lasts SESSION_HOURS from logging in, not from the last page.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_HEADERS=["X-CSRFToken"],
    )

    # On PostgreSQL the audit chain's key and anchors are kept in the store every node mounts.
    db.keep_files_in(app.config["DATABASE"], Path(settings["STORAGE_DIR"]) / "database")
    admin_password = _prepare_database(app.config["DATABASE"], app.config)
    if admin_password:
        print("pacslite: first start. Created the account 'admin' with the password:\n"
              f"    {admin_password}\nIt is shown only this once: log in and keep it safe.", flush=True)

    from . import cli, web

    web.init_app(app)
    cli.init_app(app)
    return app


def _prepare_database(path: str, settings: Mapping[str, Any]) -> str | None:
    if db.is_postgresql(path):
        (Path(settings["STORAGE_DIR"]) / "database").mkdir(exist_ok=True)
    conn = db.connect(path)
    try:
        db.migrate(conn)
        exams.fill_missing_targets(conn, settings)
        audit.chain_key(conn)  # made now, not by the first change: rows before it would be unkeyed
        return users.ensure_admin(conn)
    finally:
        conn.close()


def _secret_key(path: Path) -> str:
    """The session signing key, generated on first start and kept (mode 0600) in the instance."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32))
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_text(encoding="ascii").strip()
