"""Critical findings (危急值): the ward's page and count, acknowledging, the radiologist's
"critical finding" button while reading."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..core import clock
from ..ris import critical, patients, users
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .forms import found_or_404, message

bp = Blueprint("critical", __name__)
#: Who sees critical findings: the clinicians (their department's), radiologists and admins (all).
READERS = ("clinician", *critical.OVERSEERS)


def _viewer() -> critical.Viewer:
    return critical.Viewer.of(current_user)


@bp.route("/critical")
@access.allow(*READERS)
def finding_list(errors: dict[int, str] | None = None, status: int = 200) -> Any:
    conn = get_db()
    viewer = _viewer()
    before = request.args.get("before", type=int)
    waiting = critical.open_findings(conn, viewer)
    done = critical.acknowledged_findings(conn, viewer, before)
    people = [n for f in (*waiting, *done) for n in (f["reported_by"], f["acknowledged_by"])]
    return render_template("critical/list.html", open=waiting, done=done, names=users.display_names(conn, people),
                           viewer=viewer, now=clock.to_db(clock.now()), errors=errors or {},
                           more=done[-1]["id"] if len(done) == critical.PAGE else None), status


@bp.route("/critical/count")
@access.allow(*READERS)
def finding_count() -> Any:
    """The navigation bar's count; htmx asks for it every 30 seconds."""
    return render_template("critical/_count.html", count=critical.count_for(get_db(), _viewer()))


@bp.route("/critical/<int:finding_id>/acknowledge", methods=["POST"])
@access.allow(*READERS)
def finding_acknowledge(finding_id: int) -> Any:
    try:
        critical.acknowledge(get_db(), access.actor(), current_user, finding_id, request.form)
    except NotFound:
        return finding_list(status=404)
    except ValidationError as exc:
        return finding_list(errors={finding_id: message(exc)}, status=400)
    except Conflict as exc:
        return finding_list(errors={finding_id: message(exc)}, status=409)
    flash(gettext("Critical finding acknowledged."), "success")
    return redirect(url_for("critical.finding_list"))


@bp.route("/exams/<accession>/critical", methods=["POST"])
@access.allow("radiologist")
def finding_report(accession: str) -> Any:
    """"Critical finding" while reading: the ward is told before the report is signed."""
    exam = found_or_404(patients.get_exam, get_db(), accession)
    try:
        critical.report_while_reading(get_db(), access.actor(), exam, request.form,
                                      current_app.config["CRITICAL_ACK_MINUTES"])
    except (ValidationError, Conflict) as exc:  # nothing sent: said above the report
        flash(message(exc), "error")
        return redirect(url_for("reports.report_view", accession=accession))
    flash(gettext("Critical finding sent to %(department)s.",
                  department=exam["requesting_department"] or gettext("(no requesting department)")), "success")
    return redirect(url_for("reports.report_view", accession=accession))


@bp.app_context_processor
def _critical_count() -> dict[str, Any]:
    def count() -> int:
        if current_user.is_authenticated and current_user.has_any(READERS):
            return critical.count_for(get_db(), _viewer())
        return 0
    return {"critical_count": count}
