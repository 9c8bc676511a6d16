"""The quarantine and re-filing: images stored safely but not filed, their ranked candidate
exams, and the privileged corrections (re-file, undo, reject, restore)."""
from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..ris import patients
from ..pacs import archive, index, refiling
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .htmx import is_htmx
from .forms import found_or_404, message
from .images import VIEWERS

bp = Blueprint("quarantine", __name__)
#: Who may change where images are filed.
REFILING = ("admin",)


@bp.route("/quarantine/")
@access.allow(*access.IMAGE_CONTROL)
def quarantine_list() -> Any:
    """The quarantine; each study's likely exams arrive as their row is shown (htmx), since
    ranking them reads the exams of a week, which for 200 studies took seconds."""
    return render_template("quarantine/list.html", items=index.quarantine(get_db()))


@bp.route("/quarantine/studies/<int:study_id>/candidates")
@access.allow(*access.IMAGE_CONTROL)
def study_candidates(study_id: int) -> Any:
    """One study's ranked candidate exams: the partial for the quarantine list, or its page."""
    conn = get_db()
    study = found_or_404(refiling.get_study, conn, study_id)
    if not is_htmx():
        return redirect(url_for("quarantine.study_view", study_id=study_id))
    ranked = refiling.candidates(conn, study, current_app.config["TIMEZONE"])
    return render_template("quarantine/_candidates.html", candidates=ranked, clear=refiling.is_clear(ranked),
                           study_id=study_id, filed=study["exam_ref"] is not None, compare=True)


@bp.route("/quarantine/rejected")
@access.allow(*access.IMAGE_CONTROL)
def rejected_list() -> Any:
    return render_template("quarantine/rejected.html", studies=refiling.rejected_studies(get_db()),
                           keep_days=current_app.config["REJECT_RETENTION_DAYS"],
                           refile_days=current_app.config["REFILE_RETENTION_DAYS"])


@bp.route("/quarantine/purge", methods=["POST"])
@access.allow(*REFILING)
def purge() -> Any:
    """Remove what was kept past its retention period (superseded originals, rejected studies)."""
    done = refiling.purge(get_db(), access.actor(), current_app.config)
    flash(gettext("Purged %(files)d files and %(studies)d rejected studies past their retention period.",
                  files=done.files, studies=done.studies), "success")
    return redirect(url_for("quarantine.rejected_list"))


def _study_page(study_id: int, errors: dict[str, str] | None = None, status: int = 200) -> Any:
    conn = get_db()
    study = found_or_404(refiling.get_study, conn, study_id)
    exam = patients.find_exam(conn, exam_id=study["exam_ref"]) if study["exam_ref"] else None
    series = index.series_of_study(conn, study_id)
    ranked = refiling.candidates(conn, study, current_app.config["TIMEZONE"])
    clear = refiling.is_clear(ranked)
    compare = not clear and exam is None and current_user.has_any(list(VIEWERS))
    return render_template("quarantine/study.html", study=study, exam=exam, series=series,
                           candidates=ranked, clear=clear, history=refiling.refilings_of_study(conn, study_id),
                           priors=refiling.priors_for_comparison(conn, study, ranked) if compare else None,
                           originals=refiling.original_attributes(current_app.config["STORAGE_DIR"], study_id, conn),
                           where=archive.locations(conn, study_id),
                           errors=errors or {}, values=request.form), status


@bp.route("/studies/<int:study_id>")
@access.allow(*access.IMAGE_CONTROL)
def study_view(study_id: int) -> Any:
    return _study_page(study_id)


def _correct(study_id: int, act: Callable[[], object], field: str, done: str) -> Any:
    """Run a correction from the study page; back to it with the outcome. ``field`` is
    where the page shows a refusal (each form has its own reason field)."""
    try:
        act()
    except NotFound:
        abort(404)
    except ValidationError as exc:
        key = exc.field if exc.field != "reason" or field == "accession_number" else field
        return _study_page(study_id, {key: message(exc)}, 400)
    except Conflict as exc:
        return _study_page(study_id, {field: message(exc)}, 409)
    flash(done, "success")
    return redirect(url_for("quarantine.study_view", study_id=study_id))


@bp.route("/studies/<int:study_id>/refile", methods=["POST"])
@access.allow(*REFILING)
def study_refile(study_id: int) -> Any:
    found_or_404(refiling.get_study, get_db(), study_id)
    series = request.form.get("series_id", "")
    series_id = int(series) if series.isdigit() else None
    return _correct(study_id, lambda: refiling.refile(get_db(), access.actor(), current_app.config, study_id,
                                                      request.form, series_id),
                    "accession_number", gettext("The study was re-filed. The original files are kept."))


@bp.route("/studies/<int:study_id>/file", methods=["POST"])
@access.allow(*access.IMAGE_CONTROL)
def study_file(study_id: int) -> Any:
    """File a quarantined study to one of its likely exams (technologists too; moving a filed
    study, or to any other exam, stays the administrator's re-filing)."""
    found_or_404(refiling.get_study, get_db(), study_id)
    return _correct(study_id, lambda: refiling.file_to_candidate(get_db(), access.actor(), current_app.config,
                                                                 study_id, request.form),
                    "file_reason", gettext("The study was filed. The original files are kept."))


@bp.route("/studies/<int:study_id>/reject", methods=["POST"])
@access.allow(*REFILING)
def study_reject(study_id: int) -> Any:
    found_or_404(refiling.get_study, get_db(), study_id)
    return _correct(study_id, lambda: refiling.reject_study(get_db(), access.actor(), study_id, request.form),
                    "reject_reason", gettext("The study was rejected. It can be restored from the rejected list."))


@bp.route("/studies/<int:study_id>/restore", methods=["POST"])
@access.allow(*REFILING)
def study_restore(study_id: int) -> Any:
    found_or_404(refiling.get_study, get_db(), study_id)
    return _correct(study_id, lambda: refiling.restore_study(get_db(), access.actor(), study_id, request.form),
                    "restore_reason", gettext("The study was restored to the quarantine."))


@bp.route("/refilings/<int:refiling_id>/undo", methods=["POST"])
@access.allow(*REFILING)
def refiling_undo(refiling_id: int) -> Any:
    study_id = found_or_404(refiling.refiling_study, get_db(), refiling_id)
    return _correct(study_id, lambda: refiling.undo_refiling(get_db(), access.actor(), refiling_id,
                                                                     request.form),
                    "undo_reason", gettext("The re-filing was undone; the study points at its original files again."))
