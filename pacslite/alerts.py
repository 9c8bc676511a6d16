"""Raising and clearing the alerts that other modules own (the sweep's rules are opened and
cleared by :mod:`pacslite.sweep` in bulk): one open alert per rule and subject at a time."""
from __future__ import annotations

import json
import sqlite3
from typing import Any

OPEN, RESOLVED, CLEARED = "open", "resolved", "cleared"


def raise_alert(conn: sqlite3.Connection, rule: str, subject: str, at: str, detail: dict[str, Any], *,
                exam_ref: int | None = None, study_ref: int | None = None, refresh: bool = False) -> bool:
    """Open the alert unless one is live for the subject (open, or resolved by a person: it is
    not raised again); ``refresh`` updates the detail of an open one. True if it was opened."""
    opened = conn.execute("INSERT OR IGNORE INTO alerts (rule, subject, exam_ref, study_ref, state, detail, opened_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (rule, subject, exam_ref, study_ref, OPEN, json.dumps(detail), at)).rowcount == 1
    if not opened and refresh:
        conn.execute("UPDATE alerts SET detail = ? WHERE rule = ? AND subject = ? AND state <> 'cleared' AND +state = ?",
                     (json.dumps(detail), rule, subject, OPEN))
    return opened


def clear_alert(conn: sqlite3.Connection, rules: tuple[str, ...], subject: str, at: str, by: str) -> int:
    """Its condition has gone: the subject's open alerts of ``rules`` clear themselves."""
    return conn.execute(f"UPDATE alerts SET state = ?, closed_at = ?, closed_by = ? WHERE +state = ?"
                        f" AND state <> 'cleared' AND rule IN ({', '.join('?' * len(rules))}) AND subject = ?",
                        (CLEARED, at, by, OPEN, *rules, subject)).rowcount  # by alerts_live, not alerts_state


def live_state(conn: sqlite3.Connection, rule: str, subject: str) -> str | None:
    """'open' or 'resolved' for the subject's live alert of ``rule``; None when there is none."""
    row = conn.execute("SELECT state FROM alerts WHERE rule = ? AND subject = ? AND state <> 'cleared'",
                       (rule, subject)).fetchone()  # the literal lets SQLite use the partial index alerts_live
    return row[0] if row else None
