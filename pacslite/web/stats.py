"""The department's filing statistics, as a page and as CSV."""
from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, flash, render_template, request
from flask_babel import gettext
from flask_login import current_user

from ..core import clock
from ..ris import qc, quality, users
from .. import statistics
from .database import get_db
from . import access, csvout
from .htmx import is_htmx

bp = Blueprint("stats", __name__)
#: Who sees each person's workload.
WORKLOAD_ROLES = ("admin", "radiologist")


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
    return render_template("statistics/page.html", result=result, dimensions=statistics.DIMENSIONS,
                           refile_reasons=statistics.REFILE_REASONS,
                           show_workload=current_user.has_any(WORKLOAD_ROLES))


@bp.route("/statistics/workload")
@access.allow(*WORKLOAD_ROLES)
def workload() -> Any:
    """Who did how much in the period: for the department's heads. Loaded by the statistics page
    after itself (htmx), so that each answer stays within its second over two years of exams."""
    start, end, valid = _period()
    if not valid:
        return Response(gettext("That is not a valid period."), status=400, mimetype="text/plain")
    work = statistics.workload(get_db(), current_app.config, start, end)
    since, _ = clock.local_day_bounds(start, current_app.config["TIMEZONE"])
    _, until = clock.local_day_bounds(end, current_app.config["TIMEZONE"])
    grades = quality.distribution(get_db(), since, until, statistics.day_modifier(current_app.config, start))
    names = users.display_names(get_db(), [p.name for p in (*work.technologists, *work.radiologists)]
                                + [name for name, _scale in grades["technologist"]])
    template = "statistics/_workload.html" if is_htmx() else "statistics/workload.html"
    return render_template(template, work=work, names=names, day_count=statistics.DAYS, start=start, end=end,
                           grades=grades, scales={"xray": quality.XRAY_GRADES, "score": quality.SCORE_GRADES},
                           qc_scores=qc.scores_by_radiologist(get_db(), start.isoformat()[:7], end.isoformat()[:7]))


@bp.route("/statistics/quality.csv")
@access.allow(*WORKLOAD_ROLES)
def quality_csv() -> Any:
    """The period's quality figures as CSV: image grades per technologist, station and month;
    each radiologist's final reports, the share within the target and the QC score."""
    start, end, valid = _period()
    if not valid:
        return Response(gettext("That is not a valid period."), status=400, mimetype="text/plain")
    since, _ = clock.local_day_bounds(start, current_app.config["TIMEZONE"])
    _, until = clock.local_day_bounds(end, current_app.config["TIMEZONE"])
    grades = quality.distribution(get_db(), since, until, statistics.day_modifier(current_app.config, start))
    rows: list[list[Any]] = [["section", "name", "scale", "grade", "count"]]
    for kind, groups in grades.items():
        for (name, scale), counts in groups.items():
            rows.extend([f"grades_by_{kind}", name, scale, grade, counts.get(grade, 0)]
                        for grade in (quality.XRAY_GRADES if scale == "xray" else quality.SCORE_GRADES))
    work = statistics.workload(get_db(), current_app.config, start, end)
    scores = qc.scores_by_radiologist(get_db(), start.isoformat()[:7], end.isoformat()[:7])
    rows.append(["section", "radiologist", "final_reports", "within_target_rate", "qc_scored", "qc_score_rate"])
    for person in work.radiologists:
        score = scores.get(person.name, {})
        rate = person.within_target_rate
        rows.append(["radiologists", person.name, person.reports, "" if rate is None else round(rate, 4),
                     score.get("scored", 0), "" if score.get("share") is None else round(score["share"], 4)])
    return csvout.response(rows, f"pacslite-quality-{start}-{end}.csv")


@bp.route("/statistics.csv")
@access.allow(*access.STAFF)
def statistics_csv() -> Any:
    start, end, valid = _period()
    if not valid:
        return Response(gettext("That is not a valid period."), status=400, mimetype="text/plain")
    rows = statistics.csv_rows(statistics.report(get_db(), current_app.config, start, end))
    return csvout.response(rows, f"pacslite-statistics-{start}-{end}.csv")
