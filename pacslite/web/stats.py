"""The department's filing statistics, as a page and as CSV."""
from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from .. import statistics
from ..db import get_db
from . import access

bp = Blueprint("stats", __name__)


def _period() -> tuple[date, date]:
    """The period asked for; the last 30 days when it is missing or not a valid range."""
    start, end = statistics.default_period(current_app.config)
    try:
        asked = (date.fromisoformat(request.args["start"]), date.fromisoformat(request.args["end"]))
    except (KeyError, ValueError):
        return start, end
    return asked if asked[0] <= asked[1] else (start, end)


@bp.route("/statistics")
@access.allow(*access.STAFF)
def statistics_page() -> Any:
    start, end = _period()
    result = statistics.report(get_db(), current_app.config, start, end)
    return render_template("statistics/page.html", result=result, dimensions=statistics.DIMENSIONS)


@bp.route("/statistics.csv")
@access.allow(*access.STAFF)
def statistics_csv() -> Any:
    start, end = _period()
    out = io.StringIO()
    csv.writer(out).writerows(statistics.csv_rows(statistics.report(get_db(), current_app.config, start, end)))
    return Response("\ufeff" + out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=pacslite-statistics-{start}-{end}.csv"})
