"""The request's database connection: opened on first use, closed when the request ends.

Only the web layer has requests; the domain modules take a connection as their first argument.
"""
from __future__ import annotations

import sqlite3

from flask import current_app, g

from ..core import db


def get_db() -> sqlite3.Connection:
    """The request's connection, opened on first use and closed at the end of the request."""
    if "db" not in g:
        g.db = db.connect(current_app.config["DATABASE"], pooled=True)
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()
