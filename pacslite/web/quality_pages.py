"""Image quality control on the report page: the reading radiologist's optional grade (htmx)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from ..core.validation import ValidationError
from ..ris import patients, quality
from . import access
from .database import get_db
from .forms import found_or_404, message

bp = Blueprint("quality_pages", __name__)
RADIOLOGIST = ("radiologist",)


def grade_context(exam: Any) -> dict[str, Any]:
    return {"grade": quality.of_exam(get_db(), exam["id"]), "grade_scale": quality.grades_for(exam["modality"])}


@bp.route("/exams/<accession>/image-grade", methods=["POST"])
@access.allow(*RADIOLOGIST)
def grade(accession: str) -> Any:
    exam = found_or_404(patients.get_exam, get_db(), accession)
    try:
        quality.grade(get_db(), access.actor(), exam, request.form.get("grade", ""), request.form.getlist("reasons"))
    except ValidationError as exc:
        return render_template("reports/_grade.html", exam=exam, **grade_context(exam), grade_error=message(exc)), 400
    return render_template("reports/_grade.html", exam=exam, **grade_context(exam))
