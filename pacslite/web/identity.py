"""Patient identity for the admin: likely duplicates, side by side, merged; a patient ID changed;
a merge undone. The same domain calls as HL7 ADT^A40/A47 (:mod:`pacslite.pacs.merging`)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core.validation import Conflict, NotFound, ValidationError
from ..pacs import merging
from ..ris import patients
from . import access
from .database import get_db
from .forms import errors_of, found_or_404, message

bp = Blueprint("identity", __name__, url_prefix="/admin/patients")

ADMIN = ("admin",)


@bp.route("/duplicates")
@access.allow(*ADMIN)
def duplicates() -> Any:
    """Pairs of records that are likely one person (the same ID card number, or name and birth date)."""
    return render_template("identity/duplicates.html", pairs=patients.likely_duplicates(get_db()))


@bp.route("/compare")
@access.allow(*ADMIN)
def compare(errors: dict[str, str] | None = None, status: int = 200) -> Any:
    """Two records side by side, their exams below, with a merge either way."""
    ids = (request.values.get("a", "").strip()[:64], request.values.get("b", "").strip()[:64])
    records = [found_or_404(patients.get_patient, get_db(), patient_id) for patient_id in ids]
    return render_template("identity/compare.html", records=records, errors=errors or {},
                           exams=[patients.exams_of_patient(get_db(), r["patient_id"]) for r in records],
                           fields=("name", "sex", "birth_date", "phone", "national_id")), status


@bp.route("/merge", methods=["POST"])
@access.allow(*ADMIN)
def merge() -> Any:
    prior, survivor = request.form.get("prior", "").strip()[:64], request.form.get("survivor", "").strip()[:64]
    try:
        merging.merge_patients(get_db(), access.actor(), prior, survivor, request.form)
    except ValidationError as exc:
        return compare(errors=errors_of(exc), status=400)
    except (Conflict, NotFound) as exc:
        return compare(errors={"reason": message(exc) if isinstance(exc, Conflict) else str(exc)}, status=409)
    flash(gettext("Patient %(prior)s was merged into %(survivor)s.", prior=prior, survivor=survivor), "success")
    return redirect(url_for("registration.patient_view", patient_id=survivor))


@bp.route("/<patient_id>/change-id", methods=["POST"])
@access.allow(*ADMIN)
def change_id(patient_id: str) -> Any:
    found_or_404(patients.get_patient, get_db(), patient_id)
    try:
        merging.change_patient_id(get_db(), access.actor(), patient_id, request.form)
    except ValidationError as exc:
        flash(" ".join(errors_of(exc).values()), "error")
        return redirect(url_for("registration.patient_view", patient_id=patient_id))
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("registration.patient_view", patient_id=patient_id))
    new_id = request.form["new_patient_id"].strip()
    flash(gettext("Patient ID %(old)s was changed to %(new)s.", old=patient_id, new=new_id), "success")
    return redirect(url_for("registration.patient_view", patient_id=new_id))


@bp.route("/merges/<int:merge_id>/undo", methods=["POST"])
@access.allow(*ADMIN)
def undo(merge_id: int) -> Any:
    merge = found_or_404(merging.get, get_db(), merge_id)
    prior = merge["prior_id"]
    try:
        merging.undo(get_db(), access.actor(), current_app.config, merge_id, request.form)
    except ValidationError as exc:
        flash(" ".join(errors_of(exc).values()), "error")
    except Conflict as exc:
        flash(message(exc), "error")
    else:
        flash(gettext("The merge was undone: %(prior)s stands on its own again.", prior=prior), "success")
    return redirect(url_for("registration.patient_view", patient_id=prior))
