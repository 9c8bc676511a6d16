"""Booking (预约, issue 31): timetables, slots, booking with its history, no-shows."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from pacslite.core import audit, clock
from pacslite.core.validation import Conflict, FormErrors, ValidationError
from pacslite.ris import aes, booking, patients
from pacslite import sweep
from tests.conftest import EXAM_FORM, post, register

MONDAY = date(2030, 1, 7)  # a Monday, never the day the tests run
ROWS = [{"weekday": "0", "starts": "08:00", "ends": "09:00", "slot_minutes": "20", "capacity": "2"},
        {"weekday": "0", "starts": "14:00", "ends": "14:30", "slot_minutes": "15", "capacity": "1"}]


def at(day: date, hhmm: str) -> datetime:
    """A local (Asia/Shanghai) time as pacslite stores it."""
    local = datetime.fromisoformat(f"{day.isoformat()}T{hhmm}:00+08:00")
    return clock.from_db(clock.to_db(local))


@pytest.fixture
def timetable(conn):
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT", "name": "CT room 1"})
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "DR01", "modality": "DX"})
    booking.set_week(conn, audit.Actor("admin"), "CT01", booking.clean_periods(ROWS))


def audited(conn, action: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = ?", (action,)).fetchone()[0]


def exam(app, conn, **changes):
    data = {**EXAM_FORM, **changes}
    reg = patients.register_exam(conn, audit.SYSTEM, app.config, data, data, confirm_demographics=True)
    return patients.get_exam(conn, reg.accession_number)


def test_a_timetable_gives_the_days_slots_and_bad_rows_are_all_refused(app, conn, timetable) -> None:
    slots = booking.day_view(conn, app.config, "CT01", MONDAY)
    assert [s.starts for s in slots] == [at(MONDAY, t) for t in ("08:00", "08:20", "08:40", "14:00", "14:15")]
    assert [s.capacity for s in slots] == [2, 2, 2, 1, 1] and all(s.booked == 0 for s in slots)
    assert booking.day_view(conn, app.config, "CT01", MONDAY + timedelta(days=1)) == []  # no Tuesday periods

    bad = [{"weekday": "0", "starts": "8:00", "ends": "09:00", "slot_minutes": "20", "capacity": "2"},
           {"weekday": "1", "starts": "10:00", "ends": "09:00", "slot_minutes": "20", "capacity": "2"},
           {"weekday": "2", "starts": "10:00", "ends": "11:00", "slot_minutes": "2", "capacity": "2"},
           {"weekday": "3", "starts": "10:00", "ends": "11:00", "slot_minutes": "20", "capacity": "0"},
           {"weekday": "4", "starts": "10:00", "ends": "12:00", "slot_minutes": "20", "capacity": "1"},
           {"weekday": "4", "starts": "11:00", "ends": "13:00", "slot_minutes": "20", "capacity": "1"}]
    with pytest.raises(FormErrors) as refused:
        booking.clean_periods(bad)
    assert set(refused.value.problems) == {"period-0", "period-1", "period-2", "period-3", "weekday-4"}
    assert booking.week(conn, "CT01") == booking.clean_periods(ROWS)  # unchanged
    assert audited(conn, "booking.hours") == 1


def test_booking_fills_slots_moves_the_exam_and_keeps_the_history(app, conn, timetable) -> None:
    routine = [exam(app, conn, patient_id=f"P{n:04d}") for n in range(3)]
    booked = booking.book(conn, audit.Actor("desk"), app.config, routine[0], "CT01", at(MONDAY, "14:00"))
    assert booked["status"] == booking.BOOKED and not booked["overbooked"]
    moved = patients.get_exam(conn, routine[0]["accession_number"])
    assert clock.from_db(moved["scheduled_at"]) == at(MONDAY, "14:00") and moved["station_ae"] == "CT01"

    # the 14:00 slot takes one: a routine exam is refused, an emergency is overbooked, never refused
    with pytest.raises(Conflict):
        booking.book(conn, audit.Actor("desk"), app.config, routine[1], "CT01", at(MONDAY, "14:00"))
    assert booking.current(conn, routine[1]["id"]) is None
    emergency = exam(app, conn, patient_id="E0001", source="emergency")
    over = booking.book(conn, audit.Actor("desk"), app.config, emergency, "CT01", at(MONDAY, "14:00"))
    assert over["overbooked"] == 1
    assert [s.booked for s in booking.day_view(conn, app.config, "CT01", MONDAY) if s.starts == at(MONDAY, "14:00")] == [2]

    # a time that is no slot, and a station of another modality, are refused
    with pytest.raises(ValidationError):
        booking.book(conn, audit.Actor("desk"), app.config, routine[1], "CT01", at(MONDAY, "14:05"))
    with pytest.raises(ValidationError):
        booking.book(conn, audit.Actor("desk"), app.config, routine[1], "DR01", at(MONDAY, "08:00"))

    # rebooking ends the old booking as moved; cancelling keeps the row; history newest first
    booking.book(conn, audit.Actor("desk"), app.config, routine[0], "CT01", at(MONDAY, "08:20"))
    booking.cancel(conn, audit.Actor("desk"), routine[0], "patient asked")
    assert [(h["status"], h["end_reason"]) for h in booking.history(conn, routine[0]["id"])] == [
        ("cancelled", "patient asked"), ("moved", "rebooked")]
    assert [s.booked for s in booking.day_view(conn, app.config, "CT01", MONDAY)] == [0, 0, 0, 1, 0]
    assert audited(conn, "booking.book") == 3 and audited(conn, "booking.cancel") == 1


def test_the_first_free_slot_skips_full_and_closed_days(app, conn, timetable) -> None:
    sunday_night = at(MONDAY - timedelta(days=1), "23:00")
    first = booking.first_free(conn, app.config, "CT01", sunday_night)
    assert first.starts == at(MONDAY, "08:00")
    booking.close_day(conn, audit.Actor("admin"), "", MONDAY, "holiday")  # every station
    assert booking.day_view(conn, app.config, "CT01", MONDAY) == []
    assert booking.first_free(conn, app.config, "CT01", sunday_night).starts == at(MONDAY + timedelta(days=7), "08:00")
    with pytest.raises(ValidationError):
        booking.book(conn, audit.Actor("desk"), app.config, exam(app, conn), "CT01", at(MONDAY, "08:00"))
    booking.reopen_day(conn, audit.Actor("admin"), "", MONDAY)
    assert booking.first_free(conn, app.config, "CT01", sunday_night).starts == at(MONDAY, "08:00")


def test_the_sweep_marks_who_did_not_come_and_a_no_show_can_be_booked_again(app, conn, timetable) -> None:
    stayed_away, came = exam(app, conn, patient_id="P0100"), exam(app, conn, patient_id="P0101")
    for e, hhmm in ((stayed_away, "08:00"), (came, "08:20")):
        booking.book(conn, audit.Actor("desk"), app.config, e, "CT01", at(MONDAY, hhmm))
    conn.execute("UPDATE exams SET status = 'in_progress' WHERE id = ?", (came["id"],))  # as an image would
    sweep.run(conn, app.config, at(MONDAY, "19:00"))  # before the day's end: nothing yet
    assert booking.current(conn, stayed_away["id"]) is not None
    sweep.run(conn, app.config, at(MONDAY, "20:30"))
    assert booking.history(conn, stayed_away["id"])[0]["status"] == booking.NO_SHOW
    assert booking.history(conn, came["id"])[0]["status"] == booking.KEPT
    assert audited(conn, "booking.no_show") == 1
    sweep.run(conn, app.config, at(MONDAY, "21:00"))
    assert audited(conn, "booking.no_show") == 1  # once
    again = booking.book(conn, audit.Actor("desk"), app.config, stayed_away, "CT01", at(MONDAY + timedelta(days=7), "08:00"))
    assert again["status"] == booking.BOOKED


def test_the_admin_sets_a_timetable_and_the_desk_books_rebooks_and_cancels_on_the_pages(app, conn, client_as) -> None:
    aes.add_ae(conn, audit.SYSTEM, {"ae_title": "CT01", "modality": "CT", "name": "CT room 1"})
    admin = client_as("admin")
    page = admin.get("/admin/booking/CT01").get_data(as_text=True)
    assert 'id="timetable-form"' in page
    bad = post(admin, "/admin/booking/CT01", {"weekday": ["0", "0"], "starts": ["08:00", "08:30"],
                                              "ends": ["09:00", "10:00"], "slot_minutes": ["15", "15"],
                                              "capacity": ["1", "1"]})
    assert bad.status_code == 400 and "must not overlap" in bad.get_data(as_text=True)
    assert booking.week(conn, "CT01") == []
    every_day = {"weekday": [str(d) for d in range(7)], "starts": ["00:00"] * 7, "ends": ["23:45"] * 7,
                 "slot_minutes": ["15"] * 7, "capacity": ["1"] * 7}
    assert post(admin, "/admin/booking/CT01", every_day).status_code == 302
    assert len(booking.week(conn, "CT01")) == 7
    assert "CT01" in admin.get("/admin/booking").get_data(as_text=True)

    desk = client_as("registrar")
    accession = register(desk, station_ae="CT01")
    assert 'id="book-exam"' in desk.get(f"/exams/{accession}").get_data(as_text=True)
    page = desk.get(f"/exams/{accession}/booking").get_data(as_text=True)
    assert 'id="book-first-free"' in page and 'id="day-view"' in page
    first = booking.first_free(conn, app.config, "CT01")
    booked = post(desk, f"/exams/{accession}/booking", {"station": "CT01", "slot": clock.to_db(first.starts)})
    assert booked.status_code == 302
    exam_row = patients.get_exam(conn, accession)
    assert clock.from_db(exam_row["scheduled_at"]) == first.starts
    assert "Booked for" in desk.get(f"/exams/{accession}").get_data(as_text=True)

    # from the registration form's banner: booked, back on the empty form, the receipt printing with the slot
    at_desk = register(desk, patient_id="P0003", station_ae="CT01")
    banner = desk.get(f"/exams/new?registered={at_desk}").get_data(as_text=True)
    assert f'/exams/{at_desk}/booking?from=desk' in banner and 'data-shortcut="b"' in banner
    slot = booking.first_free(conn, app.config, "CT01")
    back = post(desk, f"/exams/{at_desk}/booking", {"station": "CT01", "slot": clock.to_db(slot.starts), "from": "desk"})
    assert back.status_code == 302 and back.location == f"/exams/new?registered={at_desk}"
    form = desk.get(back.location).get_data(as_text=True)
    assert f"/exams/{at_desk}/receipt?print=1" in form.split('id="receipt-frame"')[1].split(">")[0]

    # the same slot for a routine exam: refused with the reason, nothing booked
    other = register(desk, patient_id="P0002", station_ae="CT01")
    full = post(desk, f"/exams/{other}/booking", {"station": "CT01", "slot": clock.to_db(first.starts)})
    assert full.status_code == 409 and "That slot is full" in full.get_data(as_text=True)
    assert booking.current(conn, patients.get_exam(conn, other)["id"]) is None
    # a slot that is no time at all, or another station's: a clear error, nothing booked
    assert post(desk, f"/exams/{other}/booking", {"station": "CT01", "slot": "tomorrow"}).status_code == 400
    # the day view as htmx asks for it: only the partial
    partial = desk.get(f"/exams/{other}/booking?station=CT01&day={first.starts.date().isoformat()}",
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert partial.lstrip().startswith('<div id="day-view"') and "<html" not in partial

    # cancel without a reason is refused; with one the slot is free again and the history shows both
    assert post(desk, f"/exams/{accession}/booking/cancel", {"reason": " "}).status_code == 400
    assert post(desk, f"/exams/{accession}/booking/cancel", {"reason": "patient asked"}).status_code == 302
    history = desk.get(f"/exams/{accession}/booking").get_data(as_text=True)
    assert "patient asked" in history and 'id="booking-history"' in history
    assert booking.first_free(conn, app.config, "CT01").starts == first.starts



def test_the_worklist_offers_a_booked_exam_on_its_day(app, conn, timetable) -> None:
    from pydicom.dataset import Dataset
    from pacslite.ris import worklist
    booked = exam(app, conn, patient_id="P0200")  # registered for now, today
    today = clock.local_today(app.config["TIMEZONE"])
    booking.book(conn, audit.Actor("desk"), app.config, booked, "CT01", at(MONDAY, "14:15"))

    def offered_on(day: date) -> list[str]:
        identifier, sps = Dataset(), Dataset()
        sps.ScheduledProcedureStepStartDate = day.strftime("%Y%m%d")
        sps.ScheduledStationAETitle = "CT01"
        identifier.ScheduledProcedureStepSequence = [sps]
        return [row["accession_number"] for row in worklist.find(conn, app.config, identifier)]
    assert booked["accession_number"] in offered_on(MONDAY)
    assert booked["accession_number"] not in offered_on(today)  # moved to its booked day
