"""Pick-up (取片 / 自助打印): the desk's list of reports and films ready and not collected, and
handing them out; the kiosk printing a patient's final report."""
from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core import audit
from ..core.validation import Conflict
from ..pacs import pickup
from ..ris import patients, queue, users
from . import access, keys
from .database import get_db
from .forms import found_or_404, message
from .htmx import is_htmx

bp = Blueprint("pickup", __name__)
REGISTRAR = ("registrar",)


@bp.route("/pickup")
@access.allow(*REGISTRAR)
def waiting_list() -> Any:
    """What is ready and not yet collected, most recently ready first."""
    source = request.args.get("source", "")
    source = source if source in patients.SOURCES else ""
    page = request.args.get("page", "1")
    page_number = max(int(page), 1) if page.isdigit() else 1
    rows = pickup.waiting(get_db(), current_app.config, source=source, offset=(page_number - 1) * pickup.PAGE)
    states = {row["id"]: pickup.of_exam(get_db(), row["id"]) for row in rows}
    context = {"rows": rows, "states": states, "source": source, "page": page_number,
               "more": len(rows) == pickup.PAGE, "days": current_app.config["PICKUP_DAYS"]}
    return render_template("pickup/_list.html" if is_htmx() else "pickup/list.html", **context)


@bp.route("/exams/<accession>/handout", methods=["POST"])
@access.allow(*REGISTRAR)
def hand_out(accession: str) -> Any:
    exam = found_or_404(patients.get_exam, get_db(), accession)
    item = request.form.get("item", "")
    if item not in pickup.ITEMS:
        abort(400)
    try:
        pickup.hand_out(get_db(), access.actor(), exam, item, pickup.DESK)
    except Conflict as exc:
        flash(message(exc), "error")
    else:
        flash(gettext("Handed out: %(what)s of %(accession)s.", what=_item_word(item), accession=accession), "success")
    back = access.safe_next(request.form.get("next")) or url_for("registration.exam_view", accession=accession)
    return redirect(back)


def _item_word(item: str) -> str:
    return gettext("the report") if item == pickup.REPORT else gettext("the films")


# ---------------------------------------------------------------- the kiosk

@bp.route("/kiosk/<key>/report", methods=["GET", "POST"])
@access.public
def kiosk_report(key: str) -> Any:
    """After the receipt was scanned (``accession``): the patient proves who they are (the last
    four of the phone or ID card number); the final report prints, or they are told when to
    come back."""
    device = queue.device(get_db(), queue.KIOSK, key)
    if device is None:
        abort(404)
    exam = patients.find_exam(get_db(), accession=request.values.get("accession", "").strip()[:32])
    if exam is None:
        abort(404)
    if request.method == "GET":
        return render_template("pickup/kiosk.html", key=key, exam=exam, error="")
    actor = audit.Actor(f"kiosk:{device['name']}", request.remote_addr or "")
    try:
        version = pickup.report_for_kiosk(get_db(), actor, current_app.config, exam, request.form.get("answer", ""))
    except pickup.NotYet as exc:
        return render_template("pickup/kiosk.html", key=key, exam=exam, error=message(exc), not_yet=True), 409
    except Conflict as exc:
        return render_template("pickup/kiosk.html", key=key, exam=exam, error=message(exc)), 403
    people = [version["signed_by"], version["preliminary_by"]]
    return render_template("reports/print.html", exam=exam, version=version, fmt=current_app.config["KIOSK_REPORT_PAPER"],
                           superseded=None, names=users.display_names(get_db(), people),
                           signed_images=users.with_signature(get_db(), people),
                           signature_srcs=_inline_signatures(people), kiosk_key=key,
                           key_pictures=keys.printed(exam, inline=True))


def _inline_signatures(usernames: list[str]) -> dict[str, str]:
    """Signature images as data URIs: the kiosk has no login to fetch them with."""
    found = {}
    for username in filter(None, usernames):
        signature = users.signature_of(get_db(), username)
        if signature is not None:
            found[username] = "data:image/png;base64," + base64.b64encode(signature["png"]).decode()
    return found
