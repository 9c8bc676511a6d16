"""Reporting: the radiologist's work list, the report editor and its lock, printing, the
technologists' "images missing" list."""
from __future__ import annotations

from datetime import date
from typing import Any, Callable

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..core import clock, config
from ..ris import critical, exams, patients, qc, reports, users
from ..pacs import index, key_images
from .database import get_db
from ..core.validation import Conflict, ValidationError
from . import access, images, keys, quality_pages, report_templates
from .htmx import is_htmx
from .forms import errors_of, found_or_404, message

bp = Blueprint("reports", __name__)
RADIOLOGIST = ("radiologist",)
TECHNOLOGIST = ("technologist",)
PRINT_FORMATS = ("a4", "a5")


def _exam_or_404(accession: str) -> Any:
    return found_or_404(patients.get_exam, get_db(), accession)


def _is_radiologist() -> bool:
    return current_user.has_any(list(RADIOLOGIST))


# ---------------------------------------------------------------- work list

@bp.route("/reading")
@access.allow(*RADIOLOGIST)
def reading() -> Any:
    filters = {k: request.args.get(k, "") for k in ("modality", "source", "priority", "day", "q", "review")}
    try:
        day = date.fromisoformat(filters["day"]) if filters["day"] else None
    except ValueError:
        day, filters["day"] = None, ""
    review_by = current_user.username if filters["review"] and current_user.can_review else ""
    items = reports.reading_list(get_db(), current_app.config, modality=filters["modality"],
                                 source=filters["source"], priority=filters["priority"], day=day, query=filters["q"],
                                 review_by=review_by)
    template = "reports/_reading_table.html" if is_htmx() else "reports/reading.html"
    return render_template(template, items=items, filters=filters, sources=patients.SOURCES,
                           priorities=patients.PRIORITIES,
                           names=users.display_names(get_db(), [i.exam["taken_by"] for i in items]))


#: The take form's buttons: each carries the exam's accession number as its value.
TAKE_ACTIONS = ("take", "release", "force")


@bp.route("/reading/take", methods=["POST"])
@access.allow(*RADIOLOGIST)
def exam_take() -> Any:
    """Take an exam to report it (``force``: from another radiologist), or release it: the
    pressed button's name says which and its value names the exam (one form serves the whole
    reading list). Back to where the button was (``next``)."""
    action = next((a for a in TAKE_ACTIONS if request.form.get(a)), None)
    if action is None:
        abort(400)
    accession = request.form[action]
    exam = _exam_or_404(accession)
    back = access.safe_next(request.form.get("next")) or url_for("reports.reading")
    try:
        reports.take(get_db(), access.actor(), exam, action)
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(back), 303
    if action == "release":
        flash(gettext("Exam %(accession)s released.", accession=accession), "success")
    else:
        flash(gettext("Exam %(accession)s is yours to report.", accession=accession), "success")
    return redirect(back), 303


# ---------------------------------------------------------------- the report page

def _report_page(exam: Any, *, values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                 stale: Any = None, confirming: reports.Signing | None = None, status: int = 200) -> Any:
    """The exam's report: the editor (radiologist, images present), the lock (no images), or
    the signed versions to read. ``values`` keeps what a refused submission contained."""
    conn = get_db()
    current = reports.latest(conn, exam["id"])
    editing = _is_radiologist() and reports.can_edit(exam, current)
    every = reports.versions(conn, exam["id"])
    shown = every if _is_radiologist() else [v for v in every if v["status"] == reports.FINAL]
    criticals = critical.of_exam(conn, exam["id"])
    holder = reports.holder(current, current_user.username)
    people = [*(n for v in shown for n in (v["signed_by"], v["preliminary_by"])), exam["taken_by"],
              *(n for f in criticals for n in (f["reported_by"], f["acknowledged_by"])),
              holder[0] if holder else None, stale["updated_by"] if stale is not None else None]
    if editing and values is None:
        values = {"findings": current["findings"] if current else "",
                  "impression": current["impression"] if current else "",
                  "revision": current["revision"] if current else 0,
                  "result_class": (current["result_class"] or "") if current else ""}
    return render_template(
        "reports/report.html", exam=exam, current=current, editing=editing, values=values or {},
        errors=errors or {}, stale=stale, confirming=confirming, versions=shown, locked=reports.is_locked(exam),
        superseded={v["version"]: reports.superseded_by(every, v) for v in shown},
        review=config.review_required(current_app.config, exam["modality"]),
        criticals=criticals, now=clock.to_db(clock.now()), awaiting=exam["status"] in exams.AWAITING_FINAL,
        names=users.display_names(conn, people), holder=holder,
        warnings=index.quarantine_warnings(conn, exam, current_app.config),
        **(report_templates.panel_context(exam) if editing else {}),
        key_list=key_images.of_exam(conn, exam["id"]), **quality_pages.grade_context(exam),
        qc_reviews=qc.of_exam(conn, exam["id"]) if _is_radiologist() else [],
        final=reports.latest_final(conn, exam["id"]), priors=reports.priors(conn, exam),
        series=index.series_of_exam(conn, exam["id"]) if _sees_images() else []), status


def _sees_images() -> bool:
    return current_user.has_any(list(images.VIEWERS))


@bp.route("/exams/<accession>/report")
@access.allow(*access.STAFF)
def report_view(accession: str) -> Any:
    return _report_page(_exam_or_404(accession))


@bp.route("/exams/<accession>/report/prior")
@access.allow(*access.STAFF)
def report_prior(accession: str) -> Any:
    """A prior exam's issued report and its series, opened beside the report being written
    (htmx); the full report page otherwise."""
    exam = _exam_or_404(accession)
    if not is_htmx():
        return redirect(url_for("reports.report_view", accession=accession))
    conn = get_db()
    final = reports.latest_final(conn, exam["id"])
    if final is None:
        abort(404)
    return render_template("reports/_prior.html", exam=exam, version=final,
                           names=users.display_names(conn, [final["signed_by"], final["preliminary_by"]]),
                           series=index.series_of_exam(conn, exam["id"]) if _sees_images() else [])


@bp.route("/exams/<accession>/report/lock")
@access.allow(*RADIOLOGIST)
def report_lock(accession: str) -> Any:
    """Polled by the lock: once images are filed, the page reloads into the editor."""
    exam = _exam_or_404(accession)
    if not reports.is_locked(exam):
        return "", 200, {"HX-Refresh": "true"}
    return render_template("reports/_lock.html", exam=exam)


@bp.route("/exams/<accession>/report/save", methods=["POST"])
@access.allow(*RADIOLOGIST)
def report_save(accession: str) -> Any:
    """The autosave (htmx): answers the save status, and the new revision out of band."""
    exam = _exam_or_404(accession)
    try:
        saved = reports.save(get_db(), access.actor(), exam, request.form)
    except reports.StaleReport as exc:
        return render_template("reports/_save_status.html", stale=exc.current,
                               names=users.display_names(get_db(), [exc.current["updated_by"]])), 409
    except ValidationError as exc:
        return render_template("reports/_save_status.html", error=message(exc)), 400
    except Conflict as exc:
        return render_template("reports/_save_status.html", error=message(exc)), 409
    return render_template("reports/_save_status.html", saved=saved)


@bp.route("/exams/<accession>/report/sign", methods=["POST"])
@access.allow(*RADIOLOGIST)
def report_sign(accession: str) -> Any:
    """Sign in two steps: the first shows what will be signed (level, impression, result class)
    for confirmation; only the confirmed form (``confirm=1``) signs."""
    exam = _exam_or_404(accession)
    values = {k: request.form.get(k, "") for k in ("findings", "impression", "revision", "result_class")}
    try:
        if request.form.get("confirm") != "1":
            asked = reports.signing(request.form)
            reports.check_signer(get_db(), current_user.username)
            return _report_page(exam, values=values, confirming=asked)
        signed = reports.sign(get_db(), access.actor(), exam, request.form, current_app.config,
                              current_user.can_review)
    except reports.StaleReport as exc:
        return _report_page(exam, values=values, stale=exc.current, status=409)
    except reports.ReportLocked as exc:
        return _report_page(exam, values=values, errors={"sign": message(exc)}, status=409)
    except ValidationError as exc:
        return _report_page(exam, values=values, errors=errors_of(exc), status=400)
    except Conflict as exc:
        return _report_page(exam, values=values, errors={"sign": message(exc)}, status=409)
    if signed["status"] == reports.FINAL:
        flash(gettext("Report signed as final."), "success")
    else:
        flash(gettext("Report signed as preliminary."), "success")
    return redirect(url_for("reports.report_view", accession=accession))


def _act_on_report(accession: str, act: Callable[[Any], object], field: str, done: str) -> Any:
    """Run a report action from a form; back to the report page with the outcome."""
    exam = _exam_or_404(accession)
    try:
        act(exam)
    except ValidationError as exc:
        return _report_page(exam, errors=errors_of(exc), status=400)
    except Conflict as exc:
        return _report_page(exam, errors={field: message(exc)}, status=409)
    flash(done, "success")
    return redirect(url_for("reports.report_view", accession=accession))


@bp.route("/exams/<accession>/report/amend", methods=["POST"])
@access.allow(*RADIOLOGIST)
def report_amend(accession: str) -> Any:
    return _act_on_report(accession, lambda exam: reports.amend(get_db(), access.actor(), exam, request.form),
                          "reason", gettext("Amendment started. Sign it to issue it."))


@bp.route("/exams/<accession>/report/notify", methods=["POST"])
@access.allow(*RADIOLOGIST)
def report_notify(accession: str) -> Any:
    """"Notify technologist": flag the exam as *images missing*."""
    return _act_on_report(accession, lambda exam: reports.flag_missing_images(get_db(), access.actor(), exam),
                          "notify", gettext("The technologists have been told that the images are missing."))


@bp.route("/exams/<accession>/report/print")
@access.allow(*access.STAFF)
def report_print(accession: str) -> Any:
    """The printable report of one signed version (clinicians and others: final versions
    only). Opening it counts as a print and is audited."""
    exam = _exam_or_404(accession)
    conn = get_db()
    raw = request.args.get("version", "")
    version = reports.get_version(conn, exam["id"], int(raw)) if raw.isdigit() else reports.latest_final(conn,
                                                                                                           exam["id"])
    allowed = (reports.SIGN_LEVELS if _is_radiologist() else (reports.FINAL,))
    if version is None or version["status"] not in allowed:
        abort(404)
    fmt = request.args.get("format", "a4")
    fmt = fmt if fmt in PRINT_FORMATS else "a4"
    reports.record_print(conn, access.actor(), exam, version, fmt)
    people = [version["signed_by"], version["preliminary_by"]]
    return render_template("reports/print.html", exam=exam, version=version, fmt=fmt, key_pictures=keys.printed(exam),
                           superseded=reports.superseded_by(reports.versions(conn, exam["id"]), version),
                           names=users.display_names(conn, people), signed_images=users.with_signature(conn, people))


@bp.route("/signatures/<username>.png")
@access.allow(*access.STAFF)
def signature_image(username: str) -> Any:
    """A radiologist's signature image, for the printed report."""
    found = users.signature_of(get_db(), username)
    if found is None:
        abort(404)
    response = current_app.response_class(found["png"], mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=300"
    response.headers["ETag"] = found["sha256"]
    return response


# ---------------------------------------------------------------- technologists

@bp.route("/missing-images")
@access.allow(*TECHNOLOGIST)
def missing_images() -> Any:
    return render_template("reports/missing.html", exams=patients.flagged_missing_images(get_db()),
                           done_states=exams.DONE_FROM)


@bp.app_context_processor
def _missing_images_count() -> dict[str, Any]:
    """The count in the navigation bar, for those who see the list."""
    def count() -> int:
        if current_user.is_authenticated and current_user.has_any(list(TECHNOLOGIST)):
            return patients.count_flagged_missing_images(get_db())
        return 0
    return {"missing_images_count": count}

