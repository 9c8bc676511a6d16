"""Booking (预约): each station's weekly timetable of slots, its closed days, and each exam's
booking with its history.

A station (a modality AE) has periods per weekday (``08:00–12:00``, slots of 15 minutes, 2
patients a slot), in the department's time zone; a closed day is one station's or, with no
station, every station's (a public holiday). An exam not yet started is booked into a slot: its
``scheduled_at`` and ``station_ae`` become the slot's (through :func:`exams.change_order`, so the
worklist, the receipt and the sweep's alerts count from the booked time). A full slot refuses a
routine booking; an emergency or STAT exam is never refused, its booking is marked
*overbooked*. Rebooking ends the current booking as ``moved``, cancelling as ``cancelled``; after
the day's end (``BOOKING_NO_SHOW_AFTER``) the sweep ends it as ``kept`` if the exam was started,
else as ``no_show`` (audited; the exam can be booked again). Each row stays, so an exam's
bookings are its history. Written only here; every change audited in its transaction.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Mapping

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict, FormErrors, NotFound, ValidationError, text
from . import exams, procedures

BOOKED, MOVED, CANCELLED, KEPT, NO_SHOW = "booked", "moved", "cancelled", "kept", "no_show"
WEEKDAYS = range(7)  # Monday 0, as date.weekday()
#: A weekday holds at most this many periods; a day view at most this many slots.
MAX_PERIODS_A_DAY = 8
MAX_SLOTS_A_DAY = 500
#: How far ahead the first free slot is looked for.
SEARCH_DAYS = 60
_CLOCK = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


@dataclass(frozen=True)
class Period:
    """Part of a weekday when a station takes bookings: ``starts``–``ends`` (HH:MM), slots of
    ``slot_minutes``, ``capacity`` patients each."""

    weekday: int
    starts: str
    ends: str
    slot_minutes: int
    capacity: int


@dataclass(frozen=True)
class Slot:
    starts: datetime  # aware, UTC
    capacity: int  # 0: a booking kept from before the timetable changed, outside any period now
    booked: int

    @property
    def free(self) -> int:
        return max(self.capacity - self.booked, 0)


# ---------------------------------------------------------------- the timetable

def clean_periods(rows: list[Mapping[str, Any]]) -> list[Period]:
    """A week of periods from form rows (weekday, starts, ends, slot_minutes, capacity; a row
    with no start is skipped), every bad row reported under ``period-N``; periods of one day
    must not overlap."""
    periods, problems = [], {}
    for number, row in enumerate(rows):
        if not str(row.get("starts") or "").strip():
            continue
        try:
            periods.append(_period(row))
        except ValidationError as exc:
            problems[f"period-{number}"] = (exc.message, exc.params)
    for weekday in WEEKDAYS:
        day = sorted((p for p in periods if p.weekday == weekday), key=lambda p: p.starts)
        if len(day) > MAX_PERIODS_A_DAY:
            problems[f"weekday-{weekday}"] = (N_("At most %(count)d periods a day."), {"count": MAX_PERIODS_A_DAY})
        for before, after in zip(day, day[1:]):
            if after.starts < before.ends:
                problems[f"weekday-{weekday}"] = (N_("Periods of one day must not overlap (%(first)s and %(second)s)."),
                                                  {"first": f"{before.starts}–{before.ends}",
                                                   "second": f"{after.starts}–{after.ends}"})
    if problems:
        raise FormErrors(problems)
    return periods


def _period(row: Mapping[str, Any]) -> Period:
    starts, ends = (text(row, key, required=True, max_length=5) for key in ("starts", "ends"))
    if not (_CLOCK.fullmatch(starts) and _CLOCK.fullmatch(ends)):
        raise ValidationError("starts", N_("Use the form HH:MM."))
    if ends <= starts:
        raise ValidationError("ends", N_("A period ends after it starts."))
    try:
        weekday, minutes, capacity = (int(str(row.get(key) or "").strip()) for key in ("weekday", "slot_minutes", "capacity"))
    except ValueError:
        raise ValidationError("slot_minutes", N_("The weekday, slot length and capacity are whole numbers.")) from None
    if weekday not in WEEKDAYS:
        raise ValidationError("weekday", N_("Choose a day of the week."))
    if not 5 <= minutes <= 240:
        raise ValidationError("slot_minutes", N_("A slot is 5 to 240 minutes long."))
    if not 1 <= capacity <= 50:
        raise ValidationError("capacity", N_("A slot takes 1 to 50 patients."))
    return Period(weekday, starts, ends, minutes, capacity)


def week(conn: sqlite3.Connection, station: str) -> list[Period]:
    return [Period(r["weekday"], r["starts"], r["ends"], r["slot_minutes"], r["capacity"]) for r in conn.execute(
        "SELECT weekday, starts, ends, slot_minutes, capacity FROM booking_hours WHERE station_ae = ?"
        " ORDER BY weekday, starts", (station,))]


def set_week(conn: sqlite3.Connection, actor: audit.Actor, station: str, periods: list[Period]) -> None:
    """Replace the station's weekly timetable (bookings already made stay where they are)."""
    with transaction(conn):
        before = week(conn, station)
        conn.execute("DELETE FROM booking_hours WHERE station_ae = ?", (station,))
        now = clock.to_db(clock.now())
        for p in periods:
            conn.execute("INSERT INTO booking_hours (station_ae, weekday, starts, ends, slot_minutes, capacity,"
                         " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (station, p.weekday, p.starts, p.ends, p.slot_minutes, p.capacity, now))
        audit.record(conn, actor, "booking.hours", f"station:{station}",
                     detail={"before": [_describe(p) for p in before], "after": [_describe(p) for p in periods]})


def _describe(p: Period) -> str:
    return f"{p.weekday} {p.starts}-{p.ends}/{p.slot_minutes}min×{p.capacity}"


def close_day(conn: sqlite3.Connection, actor: audit.Actor, station: str, day: date, reason: str) -> None:
    """No bookings on ``day`` at ``station`` ('': at any station). Bookings already made stay
    (the desk sees them on the day view and rebooks them)."""
    with transaction(conn):
        if is_closed(conn, station, day):
            return
        conn.execute("INSERT INTO booking_closed (station_ae, day, reason, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                     (station, day.isoformat(), reason, clock.to_db(clock.now()), actor.name))
        audit.record(conn, actor, "booking.close_day", f"station:{station or '*'}",
                     detail={"day": day.isoformat(), "reason": reason})


def reopen_day(conn: sqlite3.Connection, actor: audit.Actor, station: str, day: date) -> None:
    with transaction(conn):
        if conn.execute("DELETE FROM booking_closed WHERE station_ae = ? AND day = ?",
                        (station, day.isoformat())).rowcount:
            audit.record(conn, actor, "booking.reopen_day", f"station:{station or '*'}", detail={"day": day.isoformat()})


def closed_days(conn: sqlite3.Connection, since: date, limit: int = 200) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM booking_closed WHERE day >= ? ORDER BY day, station_ae LIMIT ?",
                        (since.isoformat(), limit)).fetchall()


def is_closed(conn: sqlite3.Connection, station: str, day: date) -> bool:
    return conn.execute("SELECT 1 FROM booking_closed WHERE day = ? AND station_ae IN ('', ?)",
                        (day.isoformat(), station)).fetchone() is not None


# ---------------------------------------------------------------- slots

def day_view(conn: sqlite3.Connection, settings: Mapping[str, Any], station: str, day: date) -> list[Slot]:
    """The station's slots on ``day`` with how many are booked in each (none on a closed day,
    except bookings made before it closed). One index range for the bookings."""
    tz = clock.zone(settings["TIMEZONE"])
    capacity: dict[datetime, int] = {}
    if not is_closed(conn, station, day):
        for p in week(conn, station):
            if p.weekday != day.weekday():
                continue
            start = datetime.combine(day, time.fromisoformat(p.starts), tz)
            end = datetime.combine(day, time.fromisoformat(p.ends), tz)
            while start + timedelta(minutes=p.slot_minutes) <= end and len(capacity) < MAX_SLOTS_A_DAY:
                capacity[clock.from_db(clock.to_db(start))] = p.capacity
                start += timedelta(minutes=p.slot_minutes)
    low, high = clock.local_day_bounds(day, settings["TIMEZONE"])
    booked = {clock.from_db(r[0]): r[1] for r in conn.execute(
        "SELECT slot_at, COUNT(*) FROM bookings WHERE station_ae = ? AND status = ? AND slot_at >= ? AND slot_at < ?"
        " GROUP BY slot_at", (station, BOOKED, low, high))}
    return [Slot(at, capacity.get(at, 0), booked.get(at, 0)) for at in sorted({*capacity, *booked})]


def first_free(conn: sqlite3.Connection, settings: Mapping[str, Any], station: str,
               after: datetime | None = None) -> Slot | None:
    """The first slot with room that starts after ``after`` (default now), within
    :data:`SEARCH_DAYS`; None if there is none."""
    after = after or clock.now()
    first_day = clock.local_today(settings["TIMEZONE"], after)
    for offset in range(SEARCH_DAYS):
        for slot in day_view(conn, settings, station, first_day + timedelta(days=offset)):
            if slot.starts > after and slot.free:
                return slot
    return None


# ---------------------------------------------------------------- bookings

def current(conn: sqlite3.Connection, exam_id: int) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM bookings WHERE exam_ref = ? AND status = ?", (exam_id, BOOKED)).fetchone()


def history(conn: sqlite3.Connection, exam_id: int, limit: int = 50) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM bookings WHERE exam_ref = ? ORDER BY id DESC LIMIT ?", (exam_id, limit)).fetchall()


def may_overbook(exam: Mapping[str, Any]) -> bool:
    """Emergencies are never refused a slot."""
    return exam["source"] == "emergency" or exam["priority"] == "stat"


def book(conn: sqlite3.Connection, actor: audit.Actor, settings: Mapping[str, Any], exam: Mapping[str, Any],
         station: str, starts: datetime) -> sqlite3.Row:
    """Book the exam (not yet started) into the station's slot starting at ``starts``; a
    booking it had is ended as moved. ValidationError for a slot the timetable does not have;
    Conflict for a full slot (unless :func:`may_overbook`) or an exam already started."""
    with transaction(conn):
        if exams.current_state(conn, exam["id"]) not in exams.NOT_STARTED:
            raise Conflict(N_("An exam in state %(status)s cannot be booked any more."),
                           status=exams.current_state(conn, exam["id"]))
        procedures.check_station(conn, settings, exam["modality"], station)
        day = clock.local_today(settings["TIMEZONE"], starts)
        slot = next((s for s in day_view(conn, settings, station, day) if s.starts == starts and s.capacity), None)
        if slot is None:
            raise ValidationError("slot", N_("%(station)s has no slot at that time; choose one from the day view."),
                                  station=station)
        overbooked = not slot.free
        if overbooked and not may_overbook(exam):
            raise Conflict(N_("That slot is full; choose another (only emergencies may overbook)."))
        before = current(conn, exam["id"])
        if before is not None:
            _end(conn, actor, before, MOVED, "rebooked")
        at = clock.to_db(starts)
        booking_id = conn.execute(
            "INSERT INTO bookings (exam_ref, station_ae, slot_at, status, overbooked, booked_at, booked_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (exam["id"], station, at, BOOKED, int(overbooked), clock.to_db(clock.now()), actor.name)).lastrowid
        exams.change_order(conn, actor, exam, {"scheduled_at": at, "station_ae": station}, "booked")
        audit.record(conn, actor, "booking.book", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"station": station, "slot": at, "overbooked": overbooked,
                             "before": None if before is None else {"station": before["station_ae"],
                                                                   "slot": before["slot_at"]}})
        return conn.execute("SELECT * FROM bookings WHERE id = ?", (booking_id,)).fetchone()


def cancel(conn: sqlite3.Connection, actor: audit.Actor, exam: Mapping[str, Any], reason: str) -> None:
    """Give the exam's slot back (the exam itself stays; cancelling it is :func:`exams.cancel`)."""
    if not reason.strip():
        raise ValidationError("reason", N_("Give a reason."))
    with transaction(conn):
        booking = current(conn, exam["id"])
        if booking is None:
            raise NotFound(f"no booking for exam {exam['accession_number']}")
        _end(conn, actor, booking, CANCELLED, reason.strip()[:200])
        audit.record(conn, actor, "booking.cancel", f"exam:{exam['accession_number']}", patient_id=exam["patient_id"],
                     detail={"station": booking["station_ae"], "slot": booking["slot_at"], "reason": reason.strip()[:200]})


def _end(conn: sqlite3.Connection, actor: audit.Actor, booking: Mapping[str, Any], status: str, reason: str) -> None:
    conn.execute("UPDATE bookings SET status = ?, ended_at = ?, ended_by = ?, end_reason = ? WHERE id = ?",
                 (status, clock.to_db(clock.now()), actor.name, reason, booking["id"]))


def no_show_cutoff(settings: Mapping[str, Any], now: datetime) -> datetime:
    """Bookings before this and still not started are no-shows: today's ``BOOKING_NO_SHOW_AFTER``
    (HH:MM, the department's time) once it has passed, else the start of today."""
    tz = clock.zone(settings["TIMEZONE"])
    local = now.astimezone(tz)
    after = time.fromisoformat(str(settings.get("BOOKING_NO_SHOW_AFTER") or "20:00"))
    day_end = datetime.combine(local.date(), after, tz)
    return day_end if local >= day_end else datetime.combine(local.date(), time(0, 0), tz)


def mark_no_shows(conn: sqlite3.Connection, settings: Mapping[str, Any], now: datetime, limit: int = 500) -> int:
    """The sweep: bookings whose slot passed before :func:`no_show_cutoff` end, ``kept`` when
    their exam was started, else ``no_show`` (audited; the exam can be booked again). Returns
    how many no-shows. Bounded: ``limit`` bookings a call, oldest first (bookings_open)."""
    cutoff = clock.to_db(no_show_cutoff(settings, now))
    rows = conn.execute(
        "SELECT b.id, b.exam_ref, b.station_ae, b.slot_at, e.accession_number, p.patient_id FROM bookings b"
        " JOIN exams e ON e.id = b.exam_ref JOIN patients p ON p.id = e.patient_ref"
        " WHERE b.status = ? AND b.slot_at < ? ORDER BY b.slot_at LIMIT ?", (BOOKED, cutoff, limit)).fetchall()
    marked = 0
    for row in rows:
        with transaction(conn):
            if current(conn, row["exam_ref"]) is None:
                continue  # rebooked or cancelled meanwhile
            state = exams.current_state(conn, row["exam_ref"])
            if state not in exams.NOT_STARTED:  # it came, or the exam was cancelled
                _end(conn, audit.SYSTEM, row, CANCELLED if state == exams.CANCELLED else KEPT,
                     "exam cancelled" if state == exams.CANCELLED else "")
                continue
            _end(conn, audit.SYSTEM, row, NO_SHOW, "did not come")
            audit.record(conn, audit.SYSTEM, "booking.no_show", f"exam:{row['accession_number']}",
                         patient_id=row["patient_id"], detail={"station": row["station_ae"], "slot": row["slot_at"]})
            marked += 1
    return marked
