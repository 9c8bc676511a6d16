"""Routing pages: "Send to…" on the exam page, the forward rules and the outbound queue."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..ris import patients
from ..pacs import routing
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .htmx import is_htmx
from .forms import errors_of, found_or_404, message

bp = Blueprint("routing", __name__)
SENDERS = ("technologist",)


@bp.route("/exams/<accession>/send", methods=["POST"])
@access.allow(*SENDERS)
def exam_send(accession: str) -> Any:
    """Queue the exam's studies for a destination."""
    found_or_404(patients.get_exam, get_db(), accession)
    destination = request.form.get("destination_ae", "")
    try:
        queued = routing.send_exam(get_db(), access.actor(), accession, destination)
    except (ValidationError, Conflict) as exc:
        flash(message(exc), "error")
        return redirect(url_for("registration.exam_view", accession=accession)), 303
    flash(gettext("%(n)d studies queued for %(ae)s.", n=queued, ae=destination) if queued else
          gettext("Already queued for %(ae)s.", ae=destination), "success")
    return redirect(url_for("registration.exam_view", accession=accession))


@bp.route("/admin/forwarding")
@access.allow("admin")
def forwarding() -> Any:
    conn = get_db()
    state = request.args.get("state", "")
    state = state if state in (routing.QUEUED, routing.SENDING, routing.SENT, routing.FAILED) else ""
    rows = routing.queue(conn, state, before_id=request.args.get("before", type=int))
    if is_htmx():
        return render_template("routing/_queue.html", rows=rows, state=state)
    return _page(conn, rows, state, {}, {})


def _page(conn: Any, rows: Any, state: str, values: Any, errors: dict[str, str]) -> Any:
    return render_template("routing/forwarding.html", rules=routing.list_rules(conn), rows=rows, state=state,
                           destination_options=[(d, d) for d in routing.destinations(conn)], values=values,
                           errors=errors)


@bp.route("/admin/forwarding/rules", methods=["POST"])
@access.allow("admin")
def rule_add() -> Any:
    conn = get_db()
    try:
        routing.add_rule(conn, access.actor(), request.form)
    except ValidationError as exc:
        return _page(conn, routing.queue(conn), "", request.form, errors_of(exc)), 400
    flash(gettext("Forward rule added."), "success")
    return redirect(url_for("routing.forwarding"))


@bp.route("/admin/forwarding/rules/<int:rule_id>/remove", methods=["POST"])
@access.allow("admin")
def rule_remove(rule_id: int) -> Any:
    try:
        routing.remove_rule(get_db(), access.actor(), rule_id)
    except NotFound:
        return render_template("error.html", code=404, message=gettext("This page does not exist.")), 404
    flash(gettext("Forward rule removed."), "success")
    return redirect(url_for("routing.forwarding"))
