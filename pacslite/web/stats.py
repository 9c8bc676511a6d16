"""The department's filing statistics, as a page and as CSV."""
from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, flash, render_template, request
from flask_babel import gettext
from flask_login import current_user

from .. import statistics, users
from ..db import get_db
from . import access, csvout

bp = Blueprint("stats", __name__)
#: Who sees each person's workload, and how many (day, modality) rows its table shows (the latest).
WORKLOAD_ROLES = ("admin", "radiologist")
DAY_ROWS = 300


def _period() -> tuple[date, date, bool]:
    """(start, end, valid): the period asked for, or the last 30 days when none is asked for
    (valid) or when the dates are not a valid range (not valid)."""
    start, end = statistics.default_period(current_app.config)
    if "start" not in request.args and "end" not in request.args:
        return start, end, True
    try:
        asked = (date.fromisoformat(request.args.get("start", "")), date.fromisoformat(request.args.get("end", "")))
    except ValueError:
        return start, end, False
    return (asked[0], asked[1], True) if asked[0] <= asked[1] else (start, end, False)


@bp.route("/statistics")
@access.allow(*access.STAFF)
def statistics_page() -> Any:
    start, end, valid = _period()
    if not valid:
        flash(gettext("That is not a valid period; here are the last 30 days."), "error")
    result = statistics.report(get_db(), current_app.config, start, end)
    work = names = None
    if current_user.has_any(WORKLOAD_ROLES):  # who did how much: for the department's heads
        work = statistics.workload(get_db(), current_app.config, start, end)
        names = users.display_names(get_db(), [p.name for p in (*work.technologists, *work.radiologists)])
    return render_template("statistics/page.html", result=result, dimensions=statistics.DIMENSIONS, work=work,
                           names=names, day_limit=DAY_ROWS)


@bp.route("/statistics.csv")
@access.allow(*access.STAFF)
def statistics_csv() -> Any:
    start, end, valid = _period()
    if not valid:
        return Response(gettext("That is not a valid period."), status=400, mimetype="text/plain")
    rows = statistics.csv_rows(statistics.report(get_db(), current_app.config, start, end))
    return csvout.response(rows, f"pacslite-statistics-{start}-{end}.csv")
