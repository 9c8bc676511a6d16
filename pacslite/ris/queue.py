"""Check-in and queue calling (签到、排队叫号).

A patient checked in for an exam (at the desk, or by scanning the receipt at a kiosk) gets the
next number of the queue of the exam's room for the day: ``CT01-012``, the room being the
exam's station (else its modality). Checking in twice the same day gives the same number; an
exam the HIS ordered is checked in as :func:`orders.arrived` does (the worklist offers it).

The room's queue is called in order of rank, then position: emergencies (source emergency or
STAT) first, then the elderly (``QUEUE_ELDERLY_AGE``) and the disabled (ticked at check-in),
then everyone else in the order they came. The technologist *calls next* (the first waiting),
*calls again*, *skips* (the patient is *missed* and goes back behind ``QUEUE_SKIP_BACK`` others;
called again in turn) or *starts* the exam (it becomes in progress, as an MPPS would make it).
Every step is audited.

Waiting-room screens and check-in kiosks use no account: the administrator makes a key for
each (shown once, only its hash kept) and can revoke it. A screen shows the rooms it names:
who is called, the next three, who was missed; names masked (王*英), nothing else of the patient.
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import date
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict, NotFound, ValidationError, text
from . import exams, orders, receipts

WAITING, CALLED, MISSED, STARTED = "waiting", "called", "missed", "started"
IN_LINE = (WAITING, MISSED, CALLED)
EMERGENCY, PRIORITY, OTHERS = 0, 1, 2
SCREEN, KIOSK = "screen", "kiosk"
#: What a screen shows of a room's line, and what the technologist's page lists.
NEXT_SHOWN = 3
LIST_LIMIT = 300


def mask_name(name: str) -> str:
    """A name as a public screen may show it: 王*英, 王*, 欧**明; Latin names keep each
    part's first letter (Z*** S**)."""
    name = (name or "").strip()
    if " " in name or "^" in name:
        return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.replace("^", " ").split())
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def room_of(exam: Mapping[str, Any]) -> str:
    return exam["station_ae"] or exam["modality"]


def ticket(entry: Mapping[str, Any]) -> str:
    return f"{entry['room']}-{entry['number']:03d}"


def _rank(exam: Mapping[str, Any], settings: Mapping[str, Any], disabled: bool) -> tuple[int, str]:
    if exam["source"] == "emergency" or exam["priority"] == "stat":
        return EMERGENCY, "emergency"
    age = receipts.age_of(exam, settings)
    if age is not None and age.unit == "years" and age.value >= int(settings.get("QUEUE_ELDERLY_AGE") or 70):
        return PRIORITY, "elderly"
    if disabled:
        return PRIORITY, "disabled"
    return OTHERS, ""


def today(settings: Mapping[str, Any]) -> date:
    return clock.local_today(settings["TIMEZONE"])


def entry_of(conn: sqlite3.Connection, exam_id: int, day: date) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM queue_entries WHERE exam_ref = ? AND day = ?",
                        (exam_id, day.isoformat())).fetchone()


def get_entry(conn: sqlite3.Connection, entry_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM queue_entries WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise NotFound(f"queue entry {entry_id}")
    return row


def can_check_in(exam: Mapping[str, Any]) -> bool:
    """Whether the exam is still to be done (ordered or scheduled): something to queue for."""
    return exam["status"] in exams.NOT_STARTED


def check_in(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], exam: Mapping[str, Any], *,
             disabled: bool = False) -> sqlite3.Row:
    """The patient is here for ``exam``: its number in its room's queue today (the same one if
    already checked in today). Conflict for an exam already started, done or cancelled."""
    day = today(settings)
    with transaction(conn):
        state = exams.current_state(conn, exam["id"])
        found = entry_of(conn, exam["id"], day)
        if found is not None:
            return found
        if state not in exams.NOT_STARTED:
            raise Conflict(N_("Exam %(accession)s is %(status)s: nothing to queue for."),
                           accession=exam["accession_number"], status=state)
        if state == exams.ORDERED:
            orders.arrived(conn, actor, exam)
        room = room_of(exam)
        number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM queue_entries WHERE room = ? AND day = ?",
                              (room, day.isoformat())).fetchone()[0]
        rank, reason = _rank(exam, settings, disabled)
        entry_id = conn.execute(
            "INSERT INTO queue_entries (exam_ref, room, day, number, rank, position, state, reason, checked_in_at,"
            " checked_in_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (exam["id"], room, day.isoformat(), number, rank, float(number), WAITING, reason,
             clock.to_db(clock.now()), actor.name)).lastrowid
        entry = get_entry(conn, entry_id)
        audit.record(conn, actor, "queue.check_in", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"ticket": ticket(entry), "rank": reason or "in turn"})
        return entry


_LINE = ("SELECT q.*, e.accession_number, e.procedure, e.modality, p.patient_id, p.name AS patient_name"
         " FROM queue_entries q JOIN exams e ON e.id = q.exam_ref JOIN patients p ON p.id = e.patient_ref")


def line(conn: sqlite3.Connection, room: str, day: date, limit: int = LIST_LIMIT) -> list[sqlite3.Row]:
    """Who waits (or was missed) in the room today, in the order they will be called."""
    return conn.execute(f"{_LINE} WHERE q.room = ? AND q.day = ? AND q.state IN (?, ?)"
                        " ORDER BY q.rank, q.position, q.id LIMIT ?",
                        (room, day.isoformat(), WAITING, MISSED, limit)).fetchall()


def called(conn: sqlite3.Connection, room: str, day: date, limit: int = 20) -> list[sqlite3.Row]:
    """Called and not yet started, the latest first."""
    return conn.execute(f"{_LINE} WHERE q.room = ? AND q.day = ? AND q.state = ? ORDER BY q.called_at DESC, q.id DESC"
                        " LIMIT ?", (room, day.isoformat(), CALLED, limit)).fetchall()


@dataclass(frozen=True)
class Board:
    """What a waiting-room screen shows of one room."""

    room: str
    now: sqlite3.Row | None
    following: list[sqlite3.Row]
    missed: list[sqlite3.Row]


def board(conn: sqlite3.Connection, rooms: list[str], day: date) -> list[Board]:
    boards = []
    for room in rooms:
        waiting = line(conn, room, day, limit=50)
        latest = called(conn, room, day, limit=1)
        boards.append(Board(room, latest[0] if latest else None,
                            [r for r in waiting if r["state"] == WAITING][:NEXT_SHOWN],
                            [r for r in waiting if r["state"] == MISSED][:NEXT_SHOWN * 2]))
    return boards


def _call(conn: sqlite3.Connection, actor: audit.Actor, entry: Mapping[str, Any], action: str) -> None:
    conn.execute("UPDATE queue_entries SET state = ?, calls = calls + 1, called_at = ? WHERE id = ?",
                 (CALLED, clock.to_db(clock.now()), entry["id"]))
    audit.record(conn, actor, action, f"queue:{ticket(entry)}", patient_id=_patient_id(conn, entry),
                 detail={"calls": entry["calls"] + 1})


def _patient_id(conn: sqlite3.Connection, entry: Mapping[str, Any]) -> str:
    return conn.execute("SELECT p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref WHERE e.id = ?",
                        (entry["exam_ref"],)).fetchone()[0]


def call_next(conn: sqlite3.Connection, actor: audit.Actor, room: str, day: date) -> sqlite3.Row | None:
    """Call the first in line (None when nobody waits)."""
    with transaction(conn):
        first = conn.execute("SELECT * FROM queue_entries WHERE room = ? AND day = ? AND state IN (?, ?)"
                             " ORDER BY rank, position, id LIMIT 1", (room, day.isoformat(), WAITING, MISSED)).fetchone()
        if first is None:
            return None
        _call(conn, actor, first, "queue.call")
        return get_entry(conn, first["id"])


def call_again(conn: sqlite3.Connection, actor: audit.Actor, entry_id: int) -> None:
    with transaction(conn):
        entry = get_entry(conn, entry_id)
        if entry["state"] != CALLED:
            raise Conflict(N_("Only a called patient can be called again."))
        _call(conn, actor, entry, "queue.call_again")


def skip(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], entry_id: int) -> None:
    """The called patient did not come: missed, back in line behind ``QUEUE_SKIP_BACK`` others."""
    with transaction(conn):
        entry = get_entry(conn, entry_id)
        if entry["state"] != CALLED:
            raise Conflict(N_("Only a called patient can be skipped."))
        others = [r for r in line(conn, entry["room"], date.fromisoformat(entry["day"])) if r["id"] != entry["id"]]
        back = int(settings.get("QUEUE_SKIP_BACK") or 3)
        if len(others) > back:  # between the back-th and the next
            before, after = others[back - 1], others[back]
            rank = before["rank"]
            position = (before["position"] + after["position"]) / 2 if after["rank"] == rank else before["position"] + 1
        elif others:
            rank, position = others[-1]["rank"], others[-1]["position"] + 1
        else:
            rank, position = entry["rank"], entry["position"]
        conn.execute("UPDATE queue_entries SET state = ?, rank = ?, position = ? WHERE id = ?",
                     (MISSED, rank, position, entry["id"]))
        audit.record(conn, actor, "queue.skip", f"queue:{ticket(entry)}", patient_id=_patient_id(conn, entry),
                     detail={"back_behind": min(back, len(others))})


def start(conn: sqlite3.Connection, actor: audit.Actor, entry_id: int) -> None:
    """The patient is in the room: the exam is in progress (as the modality's MPPS would make it)."""
    with transaction(conn):
        entry = get_entry(conn, entry_id)
        if entry["state"] not in IN_LINE:
            raise Conflict(N_("This patient's exam has already started."))
        exam = conn.execute("SELECT e.*, p.patient_id FROM exams e JOIN patients p ON p.id = e.patient_ref"
                            " WHERE e.id = ?", (entry["exam_ref"],)).fetchone()
        conn.execute("UPDATE queue_entries SET state = ? WHERE id = ?", (STARTED, entry["id"]))
        exams.advance(conn, actor, exam, exams.IN_PROGRESS, "started from the queue")
        audit.record(conn, actor, "queue.start", f"queue:{ticket(entry)}", patient_id=exam["patient_id"],
                     detail={"exam": exam["accession_number"]})


# ---------------------------------------------------------------- screens and kiosks

def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def clean_rooms(data: Mapping[str, Any]) -> list[str]:
    rooms = [r.strip().upper() for r in text(data, "rooms", required=True, max_length=200).split(",") if r.strip()]
    if not rooms or len(rooms) > 8:
        raise ValidationError("rooms", N_("Name one to eight rooms, separated by commas (CT01, CT02)."))
    return rooms


def create_device(conn: sqlite3.Connection, actor: audit.Actor, kind: str, data: Mapping[str, Any]) -> str:
    """A new screen or kiosk; its key, shown once."""
    if kind not in (SCREEN, KIOSK):
        raise ValueError(kind)
    name = text(data, "name", required=True, max_length=64)
    rooms = clean_rooms(data) if kind == SCREEN else []
    key = secrets.token_urlsafe(24)
    with transaction(conn):
        conn.execute("INSERT INTO queue_screens (kind, name, rooms, key_hash, created_at, created_by)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (kind, name, ",".join(rooms), _hash(key),
                                                   clock.to_db(clock.now()), actor.name))
        audit.record(conn, actor, f"queue.{kind}_add", f"{kind}:{name}", detail={"rooms": rooms})
    return key


def device(conn: sqlite3.Connection, kind: str, key: str) -> sqlite3.Row | None:
    """The active screen or kiosk this key opens, or None."""
    if not key or len(key) > 100:
        return None
    return conn.execute("SELECT * FROM queue_screens WHERE key_hash = ? AND kind = ? AND active = 1",
                        (_hash(key), kind)).fetchone()


def devices(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM queue_screens ORDER BY active DESC, kind, name LIMIT 200").fetchall()


def revoke(conn: sqlite3.Connection, actor: audit.Actor, device_id: int) -> None:
    with transaction(conn):
        row = conn.execute("SELECT * FROM queue_screens WHERE id = ?", (device_id,)).fetchone()
        if row is None:
            raise NotFound(f"screen {device_id}")
        conn.execute("UPDATE queue_screens SET active = 0 WHERE id = ?", (device_id,))
        audit.record(conn, actor, f"queue.{row['kind']}_revoke", f"{row['kind']}:{row['name']}")
