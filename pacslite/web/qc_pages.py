"""Report quality control pages: the QC reviewer's month (sample, the list) and the checklist."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..core import clock
from ..core.validation import Conflict, ValidationError
from ..ris import qc
from . import access
from .database import get_db
from .forms import errors_of, found_or_404, message

bp = Blueprint("qc_pages", __name__)
RADIOLOGIST = ("radiologist",)


def _month() -> str:
    asked = request.values.get("month", "")
    return asked if len(asked) == 7 else clock.local_today(current_app.config["TIMEZONE"]).isoformat()[:7]


def _not_a_reviewer() -> Any:
    """The page for a radiologist who is not a QC reviewer (a permission within the role, as
    reviewing is: 409 with why, not a refused role)."""
    if current_user.can_qc:
        return None
    return render_template("error.html", code=409, message=gettext(
        "Only a QC reviewer samples and scores reports: an administrator gives the permission.")), 409


@bp.route("/qc")
@access.allow(*RADIOLOGIST)
def month_view() -> Any:
    refused = _not_a_reviewer()
    if refused:
        return refused
    month = _month()
    return render_template("qc/month.html", month=month, rows=qc.of_month(get_db(), month), errors={})


@bp.route("/qc", methods=["POST"])
@access.allow(*RADIOLOGIST)
def sample() -> Any:
    refused = _not_a_reviewer()
    if refused:
        return refused
    month = _month()
    try:
        counts = qc.sample(get_db(), access.actor(), current_app.config, month, request.form.get("per_radiologist", ""))
    except ValidationError as exc:
        return render_template("qc/month.html", month=month, rows=qc.of_month(get_db(), month),
                               errors=errors_of(exc)), 400
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("qc_pages.month_view", month=month))
    flash(gettext("Sampled %(sample)d reports and %(critical)d critical ones.", **counts), "success")
    return redirect(url_for("qc_pages.month_view", month=month))


@bp.route("/qc/<int:qc_id>", methods=["GET", "POST"])
@access.allow(*RADIOLOGIST)
def review(qc_id: int) -> Any:
    refused = _not_a_reviewer()
    if refused:
        return refused
    row = found_or_404(qc.get, get_db(), qc_id)
    errors: dict[str, str] = {}
    values: Any = dict(row)
    if request.method == "POST":
        values = request.form
        try:
            qc.score(get_db(), access.actor(), qc_id, request.form)
        except ValidationError as exc:
            errors = errors_of(exc)
        except Conflict as exc:
            errors = {"comment": message(exc)}
        else:
            flash(gettext("Scored."), "success")
            return redirect(url_for("qc_pages.month_view", month=row["month"]))
    return render_template("qc/review.html", row=row, values=values, errors=errors), (400 if errors else 200)
