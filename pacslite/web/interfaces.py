"""The HL7 interface for the admin: messages that failed (with the reason, the message as it
arrived, and *process again*) and what waits to go to the HIS."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core.validation import Conflict
from ..ris import messages, outbox
from . import access
from .database import get_db
from .forms import found_or_404, message
from .htmx import is_htmx

bp = Blueprint("interfaces", __name__, url_prefix="/admin/hl7")

ADMIN = ("admin",)


@bp.route("")
@access.allow(*ADMIN)
def overview() -> Any:
    """Failed inbound messages, newest first (``before``: the next page), and the outbound queue."""
    failed = messages.failed(get_db(), request.args.get("before", type=int))
    state = request.args.get("state", "")
    queue = outbox.recent(get_db(), state if state in (outbox.QUEUED, outbox.SENT, outbox.FAILED) else "")
    template = "interfaces/_failed.html" if is_htmx() else "interfaces/overview.html"
    return render_template(template, failed=failed, more=len(failed) == messages.PAGE, queue=queue,
                           waiting=outbox.waiting(get_db()), configured=outbox.configured(current_app.config),
                           listening=current_app.config["HL7_PORT"] >= 0, state=state)


@bp.route("/messages/<int:message_id>")
@access.allow(*ADMIN)
def message_view(message_id: int) -> Any:
    """One message as it arrived (decoded as it was), its outcome and its acknowledgement."""
    row = found_or_404(messages.get, get_db(), message_id)
    text = bytes(row["raw"]).decode(row["charset"] or "utf-8", errors="replace")
    return render_template("interfaces/message.html", row=row, segments=text.replace("\n", "\r").split("\r"),
                           ack=bytes(row["ack"]).decode(row["charset"] or "utf-8", errors="replace").split("\r"))


@bp.route("/messages/<int:message_id>/process-again", methods=["POST"])
@access.allow(*ADMIN)
def process_again(message_id: int) -> Any:
    """Apply a failed message again, as it arrived; audited. Only the server process can."""
    found_or_404(messages.get, get_db(), message_id)
    again = current_app.extensions.get("hl7_process_again")
    if again is None:
        flash(gettext("Only the running server can process a message."), "error")
        return redirect(url_for("interfaces.message_view", message_id=message_id))
    try:
        code = again(get_db(), current_app.config, access.actor(), message_id)
    except Conflict as exc:
        flash(message(exc), "error")
    else:
        if code == messages.ACCEPTED:
            flash(gettext("The message was processed and accepted."), "success")
        else:
            flash(gettext("The message failed again (%(code)s): see the reason below.", code=code), "error")
    return redirect(url_for("interfaces.message_view", message_id=message_id))
