"""The registration desk: patients, exams, request forms, receipts."""
from __future__ import annotations

from datetime import date
from typing import Any

from flask import (Blueprint, Response, abort, current_app, flash, redirect, render_template, request,
                   send_file, session, url_for)
from flask_babel import gettext
from flask_login import current_user

from ..core import clock, config, datetext, storage
from ..ris import (aes, booking, documents, exams, idcard, mpps, orders, patients, procedures, queue, receipts, reports,
                  transmission, users)
from ..pacs import index, merging, pickup, printing, routing
from .database import get_db
from ..core.validation import Conflict, ValidationError
from . import access, limits
from .htmx import is_htmx
from .forms import errors_of, found_or_404, message

bp = Blueprint("registration", __name__)

REGISTRAR = ("registrar",)


def _exam_or_404(accession: str) -> Any:
    return found_or_404(patients.get_exam, get_db(), accession)


def _patient_or_404(patient_id: str) -> Any:
    return found_or_404(patients.get_patient, get_db(), patient_id)


@bp.route("/")
@access.allow(*access.STAFF)
def home() -> Any:
    """Where each starts: a radiologist on the reading list, everybody else on the exam list."""
    if "radiologist" in current_user.roles:
        return redirect(url_for("reports.reading"))
    return redirect(url_for("registration.exam_list"))


# ---------------------------------------------------------------- patients

@bp.route("/patients")
@access.allow(*access.STAFF)
def patient_search() -> Any:
    query = request.args.get("q", "")
    results = patients.search_patients(get_db(), query)
    template = "patients/_results.html" if is_htmx() else "patients/search.html"
    return render_template(template, query=query, results=results)


@bp.route("/patients/new", methods=["GET", "POST"])
@access.allow(*REGISTRAR)
def patient_new() -> Any:
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            patient = patients.create_patient(get_db(), access.actor(), request.form)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            flash(gettext("Patient %(id)s saved.", id=patient["patient_id"]), "success")
            return redirect(url_for("registration.patient_view", patient_id=patient["patient_id"]))
    return render_template("patients/form.html", values=request.form, errors=errors, editing=None), \
        (400 if errors else 200)


@bp.route("/patients/<patient_id>")
@access.allow(*access.STAFF)
def patient_view(patient_id: str) -> Any:
    patient = _patient_or_404(patient_id)
    return render_template("patients/view.html", patient=patient,
                           exams=patients.exams_of_patient(get_db(), patient_id),
                           merged_into=patients.resolve_patient(get_db(), patient_id) if patient["merged_into"] else None,
                           merges=merging.merges_of(get_db(), patient["id"]))


@bp.route("/patients/<patient_id>/edit", methods=["GET", "POST"])
@access.allow(*REGISTRAR)
def patient_edit(patient_id: str) -> Any:
    patient = _patient_or_404(patient_id)
    errors: dict[str, str] = {}
    values: Any = dict(patient)
    if request.method == "POST":
        values = request.form
        try:
            patients.update_patient(get_db(), access.actor(), patient_id, request.form)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            flash(gettext("Patient %(id)s saved.", id=patient_id), "success")
            return redirect(url_for("registration.patient_view", patient_id=patient_id))
    return render_template("patients/form.html", values=values, errors=errors, editing=patient), \
        (400 if errors else 200)


# ---------------------------------------------------------------- exams

@bp.route("/exams")
@access.allow(*access.STAFF)
def exam_list() -> Any:
    settings = current_app.config
    filters = {k: request.args.get(k, "") for k in ("day", "modality", "source", "status", "q")}
    try:
        day = date.fromisoformat(filters["day"]) if filters["day"] else clock.local_today(settings["TIMEZONE"])
    except ValueError:
        day = clock.local_today(settings["TIMEZONE"])
    filters["day"] = day.isoformat()
    filters["department"] = _department_filter()
    found = patients.list_exams(get_db(), settings, day=day, modality=filters["modality"],
                                source=filters["source"], status=filters["status"], query=filters["q"],
                                department="" if filters["department"] == ALL_DEPARTMENTS else filters["department"])
    template = "exams/_table.html" if is_htmx() else "exams/list.html"
    return render_template(template, exams=found, filters=filters, states=exams.STATES,
                           all_departments=ALL_DEPARTMENTS)


#: The exam list's department filter value that shows every department.
ALL_DEPARTMENTS = "*"


def _department_filter() -> str:
    """The requesting department the exam list shows: as asked (``*``: all), else a
    clinician's own department (the ward starts on its own exams; all stay searchable)."""
    asked = request.args.get("department")
    if asked is not None:
        return asked.strip()[:64] or ALL_DEPARTMENTS
    if "clinician" in current_user.roles and current_user.department:
        return current_user.department
    return ALL_DEPARTMENTS


@bp.route("/patients/lookup")
@access.allow(*REGISTRAR)
def patient_lookup() -> Any:
    """The exam form's patient fields filled from the record of the patient ID typed or
    scanned (htmx); 204 (the form stays as typed) for an ID not on file."""
    found = patients.find_patient(get_db(), request.args.get("patient_id", "").strip()[:64])
    if found is None:
        return "", 204
    values = {k: found[k] or "" for k in ("name", "sex", "birth_date", "phone", "national_id")}
    return render_template("patients/_fields.html", values=values, errors={}, returning=found)


@bp.route("/patients/id-card")
@access.allow(*REGISTRAR)
def id_card() -> Any:
    """What the resident ID card number typed on the exam form encodes, offered for the birth
    date and sex (htmx); with ``apply``, the patient fields with them filled in."""
    values = {k: request.args.get(k, "") for k in ("name", "sex", "birth_date", "phone", "national_id")}
    card, problem = None, ""
    if values["national_id"].strip():
        try:
            card = idcard.read(values["national_id"])
        except ValidationError as exc:
            problem = message(exc)
    if request.args.get("apply") and card is not None:
        values["birth_date"], values["sex"] = card.birth_date.isoformat(), card.sex
        return render_template("patients/_fields.html", values=values, errors={})
    return render_template("patients/_id_card.html", values=values, card=card, problem=problem)


@bp.route("/exams/understood")
@access.allow(*REGISTRAR)
def understood() -> Any:
    """What a date or time box of the registration form was read as, shown beside it while the
    desk types (htmx): the date (with the age it gives for a birth date), or what is wrong."""
    field = request.args.get("field", "")
    if field not in ("birth_date", "scheduled_date", "scheduled_time"):
        abort(404)
    value, shown, problem = request.args.get(field, ""), "", ""
    today = clock.local_today(current_app.config["TIMEZONE"])
    try:
        if field == "scheduled_time":
            moment = datetext.read_time(value, field)
            shown = moment.isoformat("minutes") if moment else ""
        else:
            typed = datetext.read_date(value, field, today, ages=field == "birth_date")
            shown = _understood_date(typed) if typed else ""
    except ValidationError as exc:
        problem = message(exc)
    return render_template("exams/_understood.html", field=field, shown=shown, problem=problem)


def _understood_date(typed: datetext.TypedDate) -> str:
    """The date read; for an age, the birth date it gives, marked as estimated."""
    if typed.estimated:
        return f"{typed.value.isoformat()} ({gettext('estimated from the age')})"
    return typed.value.isoformat()


@bp.route("/exams/new", methods=["GET", "POST"])
@access.allow(*REGISTRAR)
def exam_new() -> Any:
    errors: dict[str, str] = {}
    confirm: patients.ConfirmationNeeded | None = None
    if request.method == "POST":
        form = request.form
        try:
            resolutions = {f: form[f"resolve_{f}"] for f in patients.DEMOGRAPHICS if form.get(f"resolve_{f}")}
            registration = patients.register_exam(get_db(), access.actor(), current_app.config, form, form,
                                                  resolutions=resolutions)
        except patients.ConfirmationNeeded as exc:
            confirm, errors = exc, errors_of(exc)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:  # back to an empty form, the receipt printing: the next patient is already waiting
            session["print_receipt"] = registration.accession_number
            return redirect(url_for("registration.exam_new", registered=registration.accession_number))
        values: Any = form
    else:
        values = _new_exam_defaults(request.args.get("patient_id", ""))
    return render_template("exams/form.html", values=values, errors=errors, confirm=confirm,
                           choices=_choices(values.get("modality", "")), registered=_just_registered(),
                           sources=patients.SOURCES, priorities=patients.PRIORITIES), (400 if errors else 200)


def _just_registered() -> dict[str, Any] | None:
    """The exam registered a moment ago (``?registered=``), to name above the empty form; its
    receipt prints once, on the first view after registering, not on every reload."""
    accession = request.args.get("registered", "")
    if request.method != "GET" or not accession:
        return None
    exam = patients.find_exam(get_db(), accession=accession)
    if exam is None:
        return None
    return {"exam": exam, "print": session.pop("print_receipt", None) == accession}


@bp.route("/exams/choices")
@access.allow(*REGISTRAR)
def exam_choices() -> Any:
    """The procedure and station fields for the modality picked on the exam form (htmx)."""
    return render_template("exams/_choices.html", values=request.args, errors={},
                           choices=_choices(request.args.get("modality", "")))


def _choices(modality_code: str) -> dict[str, Any]:
    """What the exam form offers for a modality: its catalogue procedures and its stations."""
    entry = config.modality(current_app.config, modality_code)
    if entry is None:
        return {"modality": "", "catalogue": [], "stations": []}
    return {"modality": modality_code, "catalogue": procedures.catalogue_for(get_db(), modality_code),
            "stations": aes.stations(get_db(), entry["dicom"])}


def _new_exam_defaults(patient_id: str) -> dict[str, Any]:
    """An empty registration form, with the patient filled in when we came from a patient page."""
    now = clock.now().astimezone(clock.zone(current_app.config["TIMEZONE"]))
    values: dict[str, Any] = {"scheduled_date": now.date().isoformat(), "scheduled_time": now.strftime("%H:%M"),
                              "priority": "routine", "source": "outpatient"}
    patient = patients.find_patient(get_db(), patient_id) if patient_id else None
    if patient is not None:
        values.update({k: patient[k] or "" for k in ("patient_id", "name", "sex", "birth_date", "phone")})
    return values


@bp.route("/exams/<accession>")
@access.allow(*access.STAFF)
def exam_view(accession: str, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    exam = _exam_or_404(accession)
    sending = current_user.has_any(("technologist",))
    report = reports.for_the_ward(get_db(), exam["id"])
    return render_template("exams/view.html", exam=exam, forms=documents.of_exam(get_db(), exam["id"]),
                           report=report, names=users.display_names(
                               get_db(), [report["signed_by"], report["preliminary_by"]] if report else []),
                           series=index.series_of_exam(get_db(), exam["id"]),
                           can_cancel=exams.can_cancel(exam), errors=errors or {},
                           booked=booking.current(get_db(), exam["id"]), queued=_queued(exam),
                           can_mark_done=exams.can_mark_done(exam) and sending,
                           expected=transmission.expected_of(get_db(), exam),
                           steps=mpps.of_exam(get_db(), exam["id"]),
                           age=receipts.age_of(exam, current_app.config),
                           outbound=routing.queue_of_exam(get_db(), exam["id"]) if sending else [],
                           jobs=printing.of_exam(get_db(), exam["id"]) if sending else [],
                           pickup=pickup.of_exam(get_db(), exam["id"]),
                           destination_options=[(d, d) for d in routing.destinations(get_db())] if sending else []), \
        status


def _queued(exam: Any) -> str:
    entry = queue.entry_of(get_db(), exam["id"], queue.today(current_app.config))
    return queue.ticket(entry) if entry is not None else ""


@bp.route("/exams/<accession>/cancel", methods=["POST"])
@access.allow(*REGISTRAR)
def exam_cancel(accession: str) -> Any:
    _exam_or_404(accession)
    try:
        patients.cancel_exam(get_db(), access.actor(), accession, request.form)
    except ValidationError as exc:
        return exam_view(accession, errors={"reason": message(exc)}, status=400)
    except Conflict as exc:
        return exam_view(accession, errors={"reason": message(exc)}, status=409)
    flash(gettext("Exam %(accession)s cancelled.", accession=accession), "success")
    return redirect(url_for("registration.exam_view", accession=accession))


@bp.route("/check-in")
@access.allow(*REGISTRAR)
def check_in_desk() -> Any:
    """The desk's check-in (签到) of exams the HIS ordered: scan the patient's card or the order's
    barcode (``q``: patient ID, ID card number, order or accession number), confirm with one key
    (the only match's button has the focus), the receipt prints; below, today's orders waiting."""
    query = request.args.get("q", "").strip()[:64]
    found = orders.find_for_check_in(get_db(), query) if query else []
    if is_htmx():
        return render_template("exams/_check_in_found.html", query=query, found=found)
    return render_template("exams/check_in.html", query=query, found=found,
                           waiting=orders.ordered_today(get_db(), current_app.config),
                           checked_in=_just_registered())


@bp.route("/exams/<accession>/check-in", methods=["POST"])
@access.allow(*REGISTRAR)
def exam_check_in(accession: str) -> Any:
    _exam_or_404(accession)
    try:
        orders.check_in(get_db(), access.actor(), accession)
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("registration.check_in_desk"))
    session["print_receipt"] = accession
    return redirect(url_for("registration.check_in_desk", registered=accession))


@bp.route("/exams/<accession>/done", methods=["POST"])
@access.allow("technologist")
def exam_done(accession: str) -> Any:
    """"Exam done" (检查完成), from the exam page or the missing-images page (``from``)."""
    exam = _exam_or_404(accession)
    try:
        exams.mark_done(get_db(), access.actor(), exam, request.form, current_app.config["MPPS_GRACE_MINUTES"])
    except ValidationError as exc:
        return exam_view(accession, errors={"images_acquired": message(exc)}, status=400)
    except Conflict as exc:
        return exam_view(accession, errors={"images_acquired": message(exc)}, status=409)
    flash(gettext("Exam %(accession)s marked done.", accession=accession), "success")
    if request.form.get("from") == "missing-images":
        return redirect(url_for("reports.missing_images"))
    return redirect(url_for("registration.exam_view", accession=accession))


@bp.route("/exams/<accession>/request-forms", methods=["POST"])
@access.allow(*REGISTRAR)
@limits.body("REQUEST_FORM_MAX_BYTES")
def request_form_upload(accession: str) -> Any:
    _exam_or_404(accession)
    upload = request.files.get("file")
    data = upload.read() if upload else b""
    try:
        documents.attach(get_db(), access.actor(), current_app.config, accession, data,
                         upload.filename or "" if upload else "")
    except ValidationError as exc:
        return exam_view(accession, errors={"file": message(exc)}, status=400)
    except storage.StorageError:
        return exam_view(accession, errors={"file": gettext("The file could not be stored. Tell the PACS administrator.")},
                         status=507)
    flash(gettext("Request form attached."), "success")
    return redirect(url_for("registration.exam_view", accession=accession))


@bp.route("/exams/<accession>/request-forms/<int:form_id>")
@access.allow(*access.STAFF)
def request_form_view(accession: str, form_id: int) -> Any:
    exam = _exam_or_404(accession)
    form = found_or_404(documents.get, get_db(), exam["id"], form_id)
    response = send_file(storage.resolve(current_app.config["STORAGE_DIR"], form["storage_path"]),
                         mimetype=form["media_type"], as_attachment=False, max_age=0)
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    return response


@bp.route("/exams/<accession>/receipt")
@access.allow(*REGISTRAR)
def exam_receipt(accession: str) -> Any:
    """The printable receipt. Opening it counts as a print and is audited."""
    exam = _exam_or_404(accession)
    fmt = request.args.get("format") or current_app.config["RECEIPT_FORMAT"]
    if fmt not in ("80mm", "a5"):
        fmt = "80mm"
    receipts.record_print(get_db(), access.actor(), exam, fmt)
    settings = current_app.config
    return render_template("exams/receipt.html", exam=exam, fmt=fmt, age=receipts.age_of(exam, settings),
                           ready_at=clock.to_db(receipts.report_ready_at(exam, settings)),
                           location=procedures.location_of(get_db(), settings, exam),
                           preparation=procedures.preparation_of(get_db(), exam),
                           autoprint=request.args.get("print") == "1")


@bp.route("/exams/<accession>/barcode.svg")
@access.allow(*REGISTRAR)
def exam_barcode(accession: str) -> Any:
    exam = _exam_or_404(accession)
    response = Response(receipts.code128_svg(exam["accession_number"]), mimetype="image/svg+xml")
    # The SVG colours its bars with style attributes; it carries no script.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
