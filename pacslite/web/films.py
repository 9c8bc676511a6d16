"""Film printing (胶片打印) from an exam: the technologist chooses series and images, a layout,
film size, orientation and a window per series or image, sees the films, and sends them to a
printer; the exam's print jobs and how they went."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core.validation import ValidationError
from ..pacs import index, printing
from ..ris import patients
from . import access
from .database import get_db
from .forms import errors_of, found_or_404
from .htmx import is_htmx

bp = Blueprint("films", __name__)
TECHNOLOGIST = ("technologist",)
#: The side of an image in the films' preview (pixels).
PREVIEW_SIZE = 160


def _exam_or_404(accession: str) -> Any:
    return found_or_404(patients.get_exam, get_db(), accession)


def _films(exam: Any) -> tuple[list[list[dict[str, Any]]], dict[str, str]]:
    """The films the form asks for (each a list of picks), or the form's errors."""
    try:
        picks = printing.picks_from(get_db(), exam, request.values.getlist("series"), request.values)
    except ValidationError as exc:
        return [], errors_of(exc)
    columns, rows = printing.LAYOUTS.get(request.values.get("layout", ""), printing.LAYOUTS["2x2"])
    per_film = columns * rows
    return [picks[i:i + per_film] for i in range(0, len(picks), per_film)], {}


@bp.route("/exams/<accession>/films")
@access.allow(*TECHNOLOGIST)
def film_form(accession: str, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """The films page; for htmx, only the preview of the films the form now makes."""
    exam = _exam_or_404(accession)
    films, preview_errors = _films(exam) if request.values.getlist("series") else ([], {})
    values = request.values if request.values.get("layout") else {
        "layout": "2x2", "film_size": "14INX17IN", "orientation": "PORTRAIT"}
    context = {"exam": exam, "films": films, "errors": {**preview_errors, **(errors or {})}, "values": values,
               "columns": printing.LAYOUTS.get(values.get("layout", ""), (2, 2))[0],
               "preview_size": PREVIEW_SIZE}
    if is_htmx():
        return render_template("films/_preview.html", **context)
    return render_template("films/print.html", **context, series=index.series_of_exam(get_db(), exam["id"]),
                           printers=printing.printers(get_db()), jobs=printing.of_exam(get_db(), exam["id"]),
                           printer_choices=[(row["ae_title"], row["ae_title"]) for row in printing.printers(get_db())],
                           layout_choices=[(code, code.replace("x", " × ")) for code in printing.LAYOUTS],
                           chosen=set(request.values.getlist("series"))), status


@bp.route("/exams/<accession>/films", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def film_print(accession: str) -> Any:
    exam = _exam_or_404(accession)
    try:
        picks = printing.picks_from(get_db(), exam, request.form.getlist("series"), request.form)
        job_id = printing.request(get_db(), access.actor(), exam, request.form, picks)
    except ValidationError as exc:
        return film_form(accession, errors=errors_of(exc), status=400)
    job = printing.get_job(get_db(), job_id)
    flash(gettext("%(films)d films sent to %(printer)s; the exam page shows when they are printed.",
                  films=job["films"], printer=job["printer_ae"]), "success")
    return redirect(url_for("registration.exam_view", accession=accession) + "#films")
