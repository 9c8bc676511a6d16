"""JSON API for the hospital information system. Bearer tokens only; same rules as the pages."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask_login import current_user

from ..ris import critical, patients, reports
from ..pacs import refiling
from .. import sweep
from .database import get_db
from ..core.validation import ValidationError
from . import access

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _error(status: int, error: str, field: str | None = None) -> Any:
    return jsonify(error=error, field=field), status


PATIENT_FIELDS = ("patient_id", "name", "sex", "birth_date", "phone")


def _no_such_exam() -> Any:
    return _error(404, "no exam with this accession number", "accession_number")


def _invalid(exc: ValidationError) -> Any:
    """400 naming the field as the request named it: ``patient.name``, ``modality``."""
    field = f"patient.{exc.field}" if exc.field in PATIENT_FIELDS else exc.field
    return _error(400, exc.message % exc.params if exc.params else exc.message, field)


@bp.route("/exams", methods=["POST"])
@access.api("registrar")
def exam_create() -> Any:
    """Register an exam; the patient is created, or its changed demographics updated (audited)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", None)
    patient = body.get("patient")
    if not isinstance(patient, dict):
        return _error(400, "patient must be an object", "patient")
    try:
        registration = patients.register_exam(get_db(), access.actor(), current_app.config, patient, body,
                                              confirm_demographics=True)
    except ValidationError as exc:
        return _invalid(exc)
    exam = patients.get_exam(get_db(), registration.accession_number)
    return jsonify({**patients.api_view(exam), "patient_created": registration.patient_created}), 201


@bp.route("/exams/<accession>")
@access.api(*access.STAFF)
def exam_get(accession: str) -> Any:
    exam = patients.find_exam(get_db(), accession=accession)
    if exam is None:
        return _no_such_exam()
    return jsonify(patients.api_view(exam))


@bp.route("/exams/<accession>/report")
@access.api(*access.STAFF)
def exam_report(accession: str) -> Any:
    """The final report (the newest final version; an amendment counts once it is signed)."""
    exam = patients.find_exam(get_db(), accession=accession)
    if exam is None:
        return _no_such_exam()
    version = reports.latest_final(get_db(), exam["id"])
    if version is None:
        return _error(404, "this exam has no final report yet", None)
    return jsonify(reports.api_view(exam, version))




#: Quarantine items one API answer gives (each study's candidates are ranked for it).
QUARANTINE_PAGE = 5


@bp.route("/quarantine")
@access.api(*access.IMAGE_CONTROL)
def quarantine_list() -> Any:
    """Quarantined studies and kept-aside duplicates, newest first, each with a reason code;
    studies with their ranked candidate exams. Five an answer (ranking reads a week of exams:
    about 25 ms a study at the paper's scale); ``next_offset`` (when not null) asks for more."""
    offset = request.args.get("offset", 0, type=int)
    if offset < 0:
        return _error(400, "offset must be 0 or more", "offset")
    found = refiling.quarantine_with_candidates(get_db(), current_app.config["TIMEZONE"], QUARANTINE_PAGE + 1, offset)
    items = [{
        "kind": item["kind"], "reason": item["reason"], "detail": item["detail"],
        "study_instance_uid": item["study_instance_uid"], "sop_instance_uid": item["sop_instance_uid"] or None,
        "accession_number": item["accession_number"], "patient_id": item["patient_id"],
        "patient": {"name": item["patient_name"], "sex": item["patient_sex"], "birth_date": item["patient_birth_date"]},
        "calling_ae": item["calling_ae"], "address": item["address"], "series": item["series_count"],
        "instances": item["instance_count"], "first_received_at": item["first_received_at"],
        "last_received_at": item["last_received_at"],
        "candidates": [{"accession_number": c.exam["accession_number"], "score": c.score, "reasons": list(c.reasons),
                        "against": list(c.against)} for c in item["candidates"]],
        "clear": refiling.is_clear(item["candidates"]),
    } for item in found[:QUARANTINE_PAGE]]
    return jsonify({"items": items, "count": len(items),
                    "next_offset": offset + QUARANTINE_PAGE if len(found) > QUARANTINE_PAGE else None})


@bp.route("/alerts")
@access.api(*access.STAFF)
def alert_list() -> Any:
    """The sweep's alerts, open ones unless ``?state=resolved|cleared|all``, newest first, 100 a
    page; ``before`` in the answer (when not null) asks for the next page."""
    state = request.args.get("state", sweep.OPEN)
    if state not in (sweep.OPEN, sweep.RESOLVED, sweep.CLEARED, "all"):
        return _error(400, "state must be open, resolved, cleared or all", "state")
    alerts = sweep.list_alerts(get_db(), state="" if state == "all" else state,
                               before_id=request.args.get("before", type=int))
    more = len(alerts) == sweep.ALERTS_PAGE
    return jsonify({"items": [sweep.api_view(a) for a in alerts], "count": len(alerts),
                    "before": alerts[-1]["id"] if more else None})


@bp.route("/critical-findings")
@access.api(*access.STAFF)
def critical_findings() -> Any:
    """Critical findings (危急值) not yet acknowledged, most pressing first, for the HIS to show
    on the ward; ``?department=`` narrows them to one. A clinician's token sees the own
    department's only (:meth:`critical.Viewer.for_api`). ``?state=acknowledged`` gives the
    acknowledged ones, newest first, 100 a page (``before`` in the answer asks for the next)."""
    state = request.args.get("state", "open")
    if state not in ("open", "acknowledged"):
        return _error(400, "state must be open or acknowledged", "state")
    viewer = critical.Viewer.for_api(current_user, request.args.get("department", "").strip()[:64])
    if viewer is None:
        return _error(403, "a clinician sees the own department's findings only", "department")
    if state == "open":
        found = critical.open_findings(get_db(), viewer)
        before = None
    else:
        found = critical.acknowledged_findings(get_db(), viewer, request.args.get("before", type=int))
        before = found[-1]["id"] if len(found) == critical.PAGE else None
    return jsonify({"items": [critical.api_view(f) for f in found], "count": len(found), "before": before})
