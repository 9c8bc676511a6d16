"""Booking (预约): the desk's day view of a station's slots and booking an exam into one; the
administrator's weekly timetables and closed days."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext

from ..core import clock
from ..core.validation import Conflict, NotFound, ValidationError
from ..ris import aes, booking, patients, procedures
from . import access
from .database import get_db
from .forms import errors_of, found_or_404, message
from .htmx import is_htmx

bp = Blueprint("booking", __name__)
REGISTRAR = ("registrar",)
#: Empty rows of the timetable form beyond the periods a station has (at least two a day at first).
BLANK_ROWS, FIRST_ROWS = 4, 14
PERIOD_FIELDS = ("weekday", "starts", "ends", "slot_minutes", "capacity")


def _exam_or_404(accession: str) -> Any:
    return found_or_404(patients.get_exam, get_db(), accession)


def _day(value: str | None) -> date:
    try:
        return date.fromisoformat(value) if value else clock.local_today(current_app.config["TIMEZONE"])
    except ValueError:
        abort(400)


def _stations_of(exam: Any) -> list[str]:
    return procedures.station_titles(get_db(), current_app.config, exam["modality"])


# ---------------------------------------------------------------- the desk

@bp.route("/exams/<accession>/booking")
@access.allow(*REGISTRAR)
def day_view(accession: str, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """A station's slots on one day, free and full at a glance; each free one books with one
    click (an emergency may take a full one: overbooked). The current booking and its history."""
    exam = _exam_or_404(accession)
    stations = _stations_of(exam)
    station = request.args.get("station") or exam["station_ae"] or (stations[0] if stations else "")
    if station and station not in stations:
        abort(404)
    day = _day(request.args.get("day"))
    slots = booking.day_view(get_db(), current_app.config, station, day) if station else []
    context = {"exam": exam, "stations": stations, "station": station, "day": day, "slots": slots,
               "now": clock.now(), "may_overbook": booking.may_overbook(exam),
               "previous_day": day - timedelta(days=1), "next_day": day + timedelta(days=1),
               "came_from": "desk" if request.values.get("from") == "desk" else ""}
    if is_htmx():
        return render_template("booking/_day.html", **context)
    return render_template("booking/day.html", **context, errors=errors or {},
                           current=booking.current(get_db(), exam["id"]),
                           history=booking.history(get_db(), exam["id"]),
                           first_free=booking.first_free(get_db(), current_app.config, station) if station else None), \
        status


@bp.route("/exams/<accession>/booking", methods=["POST"])
@access.allow(*REGISTRAR)
def book(accession: str) -> Any:
    exam = _exam_or_404(accession)
    station = request.form.get("station", "")
    try:
        starts = clock.from_db(request.form.get("slot", ""))
        if starts is None or starts.tzinfo is None:
            raise ValueError
    except ValueError:
        return day_view(accession, errors={"slot": gettext("Choose a slot from the day view.")}, status=400)
    try:
        made = booking.book(get_db(), access.actor(), current_app.config, exam, station, starts)
    except ValidationError as exc:
        return day_view(accession, errors={"slot": message(exc)}, status=400)
    except Conflict as exc:
        return day_view(accession, errors={"slot": message(exc)}, status=409)
    if made["overbooked"]:
        flash(gettext("Exam %(accession)s booked beyond the slot's capacity (emergency).", accession=accession), "warning")
    else:
        flash(gettext("Exam %(accession)s booked.", accession=accession), "success")
    if request.form.get("from") == "desk":  # booked right after registering: the receipt prints again, with the slot
        session["print_receipt"] = accession
        return redirect(url_for("registration.exam_new", registered=accession))
    return redirect(url_for("registration.exam_view", accession=accession))


@bp.route("/exams/<accession>/booking/cancel", methods=["POST"])
@access.allow(*REGISTRAR)
def cancel(accession: str) -> Any:
    exam = _exam_or_404(accession)
    try:
        booking.cancel(get_db(), access.actor(), exam, request.form.get("reason", ""))
    except ValidationError as exc:
        return day_view(accession, errors={"reason": message(exc)}, status=400)
    except NotFound:
        return day_view(accession, errors={"reason": gettext("This exam has no booking.")}, status=409)
    flash(gettext("The booking of exam %(accession)s was cancelled.", accession=accession), "success")
    return redirect(url_for("booking.day_view", accession=accession))


# ---------------------------------------------------------------- the administrator

def _all_stations() -> list[Any]:
    codes = {entry["dicom"] for entry in current_app.config["MODALITIES"]}
    return [row for row in aes.list_aes(get_db()) if row["modality"] in codes]


@bp.route("/admin/booking")
@access.allow("admin")
def timetables() -> Any:
    today = clock.local_today(current_app.config["TIMEZONE"])
    return render_template("booking/timetables.html", stations=_all_stations(),
                           weeks={s["ae_title"]: booking.week(get_db(), s["ae_title"]) for s in _all_stations()},
                           closed=booking.closed_days(get_db(), today), today=today, errors={}, values={})


@bp.route("/admin/booking/<station>", methods=["GET", "POST"])
@access.allow("admin")
def timetable(station: str) -> Any:
    if station not in {s["ae_title"] for s in _all_stations()}:
        abort(404)
    if request.method == "GET":
        rows = [{f: getattr(p, f) for f in PERIOD_FIELDS} for p in booking.week(get_db(), station)]
        return _timetable_page(station, rows + [{}] * max(BLANK_ROWS, FIRST_ROWS - len(rows)), {})
    rows = [dict(zip(PERIOD_FIELDS, values)) for values in zip(*(request.form.getlist(f) for f in PERIOD_FIELDS))]
    try:
        periods = booking.clean_periods(rows)
    except ValidationError as exc:
        return _timetable_page(station, rows, errors_of(exc))
    booking.set_week(get_db(), access.actor(), station, periods)
    flash(gettext("The timetable of %(station)s was saved.", station=station), "success")
    return redirect(url_for("booking.timetables"))


def _timetable_page(station: str, rows: list[dict[str, Any]], errors: dict[str, str]) -> Any:
    return render_template("booking/timetable.html", station=station, rows=rows, errors=errors), \
        (400 if errors else 200)


@bp.route("/admin/booking/closed", methods=["POST"])
@access.allow("admin")
def close_day() -> Any:
    station = request.form.get("station", "")
    if station and station not in {s["ae_title"] for s in _all_stations()}:
        abort(404)
    try:
        day = date.fromisoformat(request.form.get("day", ""))
    except ValueError:
        flash(gettext("Give the day as YYYY-MM-DD."), "error")
        return redirect(url_for("booking.timetables"))
    booking.close_day(get_db(), access.actor(), station, day, request.form.get("reason", "").strip()[:200])
    flash(gettext("%(day)s is closed for booking.", day=day.isoformat()), "success")
    return redirect(url_for("booking.timetables"))


@bp.route("/admin/booking/reopen", methods=["POST"])
@access.allow("admin")
def reopen_day() -> Any:
    try:
        day = date.fromisoformat(request.form.get("day", ""))
    except ValueError:
        abort(400)
    booking.reopen_day(get_db(), access.actor(), request.form.get("station", ""), day)
    return redirect(url_for("booking.timetables"))


def slot_value(starts: datetime) -> str:
    """A slot as the booking form sends it back."""
    return clock.to_db(starts)


bp.add_app_template_filter(slot_value, "slot_value")
