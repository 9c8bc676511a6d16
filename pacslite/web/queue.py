"""Check-in and queue calling: the desk's check-in with its slip, the technologist's queue of a
room, the waiting-room screen and the check-in kiosk (no login: a key the administrator makes),
and the administrator's list of screens and kiosks."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core import audit
from ..core.validation import Conflict, NotFound, ValidationError
from ..ris import aes, patients, queue
from . import access
from .database import get_db
from .forms import errors_of, found_or_404, message
from .htmx import is_htmx

bp = Blueprint("queue", __name__)
REGISTRAR = ("registrar",)
TECHNOLOGIST = ("technologist",)
#: How often a waiting-room screen asks for its board (seconds).
SCREEN_REFRESH = 3


def _room_names() -> dict[str, str]:
    return {row["ae_title"]: row["name"] or row["ae_title"] for row in aes.list_aes(get_db())}


def _entry_or_404(entry_id: int) -> Any:
    return found_or_404(queue.get_entry, get_db(), entry_id)


# ---------------------------------------------------------------- the desk

@bp.route("/exams/<accession>/queue", methods=["POST"])
@access.allow(*REGISTRAR)
def check_in(accession: str) -> Any:
    exam = found_or_404(patients.get_exam, get_db(), accession)
    try:
        queue.check_in(get_db(), access.actor(), current_app.config, exam, disabled=bool(request.form.get("disabled")))
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("registration.exam_view", accession=accession))
    return redirect(url_for("queue.slip", accession=accession, print=1))


@bp.route("/exams/<accession>/queue/slip")
@access.allow(*REGISTRAR)
def slip(accession: str) -> Any:
    return _slip(found_or_404(patients.get_exam, get_db(), accession))


def _slip(exam: Any) -> Any:
    entry = queue.entry_of(get_db(), exam["id"], queue.today(current_app.config))
    if entry is None:
        abort(404)
    ahead = [r for r in queue.line(get_db(), entry["room"], queue.today(current_app.config))
             if (r["rank"], r["position"], r["id"]) < (entry["rank"], entry["position"], entry["id"])]
    return render_template("queue/slip.html", exam=exam, entry=entry, ticket=queue.ticket(entry), ahead=len(ahead),
                           room_name=_room_names().get(entry["room"], entry["room"]),
                           autoprint=request.args.get("print") == "1")


# ---------------------------------------------------------------- the technologist

@bp.route("/queue")
@access.allow(*TECHNOLOGIST)
def rooms() -> Any:
    return render_template("queue/rooms.html", rooms=_room_names())


@bp.route("/queue/<room>")
@access.allow(*TECHNOLOGIST)
def room_view(room: str) -> Any:
    day = queue.today(current_app.config)
    context = {"room": room, "room_name": _room_names().get(room, room), "line": queue.line(get_db(), room, day),
               "called": queue.called(get_db(), room, day), "limit": queue.LIST_LIMIT}
    if is_htmx():
        return render_template("queue/_room.html", **context)
    return render_template("queue/room.html", **context)


@bp.route("/queue/<room>/call-next", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def call_next(room: str) -> Any:
    if queue.call_next(get_db(), access.actor(), room, queue.today(current_app.config)) is None:
        flash(gettext("Nobody is waiting."), "info")
    return redirect(url_for("queue.room_view", room=room))


def _step(entry_id: int, step: Any) -> Any:
    entry = _entry_or_404(entry_id)
    try:
        step(entry)
    except Conflict as exc:
        flash(message(exc), "error")
    return redirect(url_for("queue.room_view", room=entry["room"]))


@bp.route("/queue/entries/<int:entry_id>/call-again", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def call_again(entry_id: int) -> Any:
    return _step(entry_id, lambda entry: queue.call_again(get_db(), access.actor(), entry["id"]))


@bp.route("/queue/entries/<int:entry_id>/skip", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def skip(entry_id: int) -> Any:
    return _step(entry_id, lambda entry: queue.skip(get_db(), access.actor(), current_app.config, entry["id"]))


@bp.route("/queue/entries/<int:entry_id>/start", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def start(entry_id: int) -> Any:
    return _step(entry_id, lambda entry: queue.start(get_db(), access.actor(), entry["id"]))


# ---------------------------------------------------------------- the waiting room and the kiosk

def _device_or_404(kind: str, key: str) -> Any:
    found = queue.device(get_db(), kind, key)
    if found is None:
        abort(404)
    return found


@bp.route("/screen/<key>")
@access.public
def screen(key: str) -> Any:
    device = _device_or_404(queue.SCREEN, key)
    return render_template("queue/screen.html", device=device, key=key, refresh=SCREEN_REFRESH, **_board(device))


@bp.route("/screen/<key>/board")
@access.public
def screen_board(key: str) -> Any:
    return render_template("queue/_board.html", **_board(_device_or_404(queue.SCREEN, key)))


def _board(device: Any) -> dict[str, Any]:
    rooms = [r for r in device["rooms"].split(",") if r]
    return {"boards": queue.board(get_db(), rooms, queue.today(current_app.config)), "room_names": _room_names(),
            "mask": queue.mask_name, "ticket": queue.ticket}


@bp.route("/kiosk/<key>", methods=["GET", "POST"])
@access.public
def kiosk(key: str) -> Any:
    """The patient scans the receipt's barcode (the accession number): before the exam, checked
    in (the slip); after it, on to printing the report (:func:`pickup.kiosk_report`)."""
    device = _device_or_404(queue.KIOSK, key)
    if request.method == "GET":
        return render_template("queue/kiosk.html", device=device, key=key, error="")
    scanned = request.form.get("accession", "").strip()[:32]
    exam = patients.find_exam(get_db(), accession=scanned) if scanned else None
    if exam is None:
        return render_template("queue/kiosk.html", device=device, key=key,
                               error=gettext("This receipt is not known here; please ask at the desk.")), 404
    if not queue.can_check_in(exam):  # after the exam: the receipt collects the report
        return redirect(url_for("pickup.kiosk_report", key=key, accession=exam["accession_number"]))
    try:
        queue.check_in(get_db(), audit.Actor(f"kiosk:{device['name']}", request.remote_addr or ""),
                       current_app.config, exam)
    except Conflict:
        return render_template("queue/kiosk.html", device=device, key=key,
                               error=gettext("This exam cannot be checked in here; please ask at the desk.")), 409
    entry = queue.entry_of(get_db(), exam["id"], queue.today(current_app.config))
    return render_template("queue/kiosk.html", device=device, key=key, error="", ticket=queue.ticket(entry),
                           room_name=_room_names().get(entry["room"], entry["room"]))


# ---------------------------------------------------------------- the administrator

@bp.route("/admin/screens", methods=["GET", "POST"])
@access.allow("admin")
def devices() -> Any:
    made, errors, values = None, {}, {}
    if request.method == "POST":
        kind = request.form.get("kind", "")
        values = {"name": request.form.get("name", ""), "rooms": request.form.get("rooms", ""), "kind": kind}
        if kind not in (queue.SCREEN, queue.KIOSK):
            abort(400)
        try:
            key = queue.create_device(get_db(), access.actor(), kind, values)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            endpoint = "queue.screen" if kind == queue.SCREEN else "queue.kiosk"
            made = {"kind": kind, "url": url_for(endpoint, key=key, _external=True)}
            values = {}
    return render_template("queue/devices.html", devices=queue.devices(get_db()), made=made, errors=errors,
                           values=values), (400 if errors else 200)


@bp.route("/admin/screens/<int:device_id>/revoke", methods=["POST"])
@access.allow("admin")
def revoke(device_id: int) -> Any:
    try:
        queue.revoke(get_db(), access.actor(), device_id)
    except NotFound:
        abort(404)
    return redirect(url_for("queue.devices"))
