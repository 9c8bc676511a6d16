"""The alerts table, its only writer: one open alert per rule and subject at a time.

A rule is registered in code by the module that raises it (:func:`register`), so a new rule
needs no migration; raising one that nobody registered is a programming error. Other modules
raise and clear their own alerts here; the sweep opens and clears its rules in bulk
(:func:`open_many`, :func:`clear_ids`); a person resolves one with a note (:func:`resolve`).
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

OPEN, RESOLVED, CLEARED = "open", "resolved", "cleared"

#: Every rule, in the order registered: rule -> closed by a person elsewhere than on the alerts page.
_RULES: dict[str, bool] = {}


def register(rule: str, *, closed_elsewhere: bool = False) -> str:
    """Declare an alert rule (at import, by the module that raises it); returns the rule."""
    if _RULES.get(rule, closed_elsewhere) != closed_elsewhere:
        raise ValueError(f"alert rule {rule!r} registered twice, differently")
    _RULES[rule] = closed_elsewhere
    return rule


def rules() -> tuple[str, ...]:
    """Every registered rule, in the order registered."""
    return tuple(_RULES)


def closed_elsewhere(rule: str) -> bool:
    """Whether a person closes this rule's alerts elsewhere (a critical finding: by the ward's
    acknowledgement), not on the alerts page."""
    return _RULES.get(rule, False)


def _registered(rule: str) -> str:
    if rule not in _RULES:
        raise ValueError(f"alert rule {rule!r} is not registered")
    return rule


def raise_alert(conn: sqlite3.Connection, rule: str, subject: str, at: str, detail: dict[str, Any], *,
                exam_ref: int | None = None, study_ref: int | None = None, refresh: bool = False) -> bool:
    """Open the alert unless one is live for the subject (open, or resolved by a person: it is
    not raised again); ``refresh`` updates the detail of an open one. True if it was opened."""
    opened = conn.execute("INSERT OR IGNORE INTO alerts (rule, subject, exam_ref, study_ref, state, detail, opened_at)"
                          " VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (_registered(rule), subject, exam_ref, study_ref, OPEN, json.dumps(detail), at)).rowcount == 1
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


def open_many(conn: sqlite3.Connection, found: Iterable[tuple[str, str, int | None, int | None, dict[str, Any]]],
              at: str) -> None:
    """Open an alert for each (rule, subject, exam_ref, study_ref, detail) that has no live one
    (the caller, the sweep, has checked)."""
    conn.executemany("INSERT INTO alerts (rule, subject, exam_ref, study_ref, state, detail, opened_at)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(_registered(rule), subject, exam_ref, study_ref, OPEN, json.dumps(detail), at)
                      for rule, subject, exam_ref, study_ref, detail in found])


def clear_ids(conn: sqlite3.Connection, alert_ids: Iterable[int], at: str, by: str) -> None:
    """Their conditions have gone: these open alerts clear themselves."""
    conn.executemany("UPDATE alerts SET state = ?, closed_at = ?, closed_by = ? WHERE id = ?",
                     [(CLEARED, at, by, alert_id) for alert_id in alert_ids])


def resolve(conn: sqlite3.Connection, alert_id: int, by: str, note: str, at: str) -> None:
    """A person dealt with the alert (the caller checked it is open and audits it)."""
    conn.execute("UPDATE alerts SET state = ?, closed_at = ?, closed_by = ?, resolution = ? WHERE id = ?",
                 (RESOLVED, at, by, note, alert_id))


def forget_study(conn: sqlite3.Connection, study_id: int) -> None:
    """A rejected study's rows are purged: its alerts go with them."""
    conn.execute("DELETE FROM alerts WHERE study_ref = ?", (study_id,))
