"""The archive: the online store's capacity and forecast, offline volumes (plan, build,
verify, label, release, restore) and the long jobs doing the work."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from ..core import jobs
from ..pacs import archive, capacity, integrity, offsite
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .htmx import is_htmx
from .forms import found_or_404, message

bp = Blueprint("archive", __name__, url_prefix="/archive")
#: The background jobs' last words (stored in English) in the user's language.
JOB_MESSAGES = {"DICOMDIR written": _l("DICOMDIR written"), "built": _l("built"), "verified": _l("verified"),
                "up to date": _l("up to date")}


@bp.app_template_filter("job_message")
def job_message(text: str | None) -> str:
    differ = re.fullmatch(r"(\d+) files differ", text or "")
    if differ:
        return gettext("%(n)d files differ", n=int(differ.group(1)))
    return str(JOB_MESSAGES.get(text or "", text or ""))
ADMIN = ("admin",)


@bp.route("/")
@access.allow(*ADMIN)
def overview() -> Any:
    settings = current_app.config
    conn = get_db()
    return render_template("archive/overview.html", forecast=capacity.forecast(conn, settings),
                           high_water=settings["STORAGE_HIGH_WATER_PERCENT"], warn=settings["STORAGE_WARN_PERCENT"],
                           volumes=archive.list_volumes(conn), jobs=jobs.recent(conn),
                           age_days=settings["ARCHIVE_AGE_DAYS"], offsite_dir=settings["OFFSITE_DIR"],
                           pending=offsite.pending(conn) if offsite.configured(settings) else None,
                           copied=offsite.copied(conn),
                           scrub=integrity.passes(conn), scrub_hours=settings["SCRUB_INTERVAL_HOURS"],
                           scrub_days=settings["SCRUB_FULL_DAYS"])


@bp.route("/offsite/copy", methods=["POST"])
@access.allow(*ADMIN)
def offsite_copy() -> Any:
    if offsite.ensure_job(get_db(), current_app.config, access.actor()) is None:
        flash(gettext("Nothing to copy, or no off-site location is configured."), "error")
    else:
        flash(gettext("The off-site copy is being brought up to date."), "success")
    return redirect(url_for("archive.overview"))


def _back(act: Any, done: str, target: str, **values: Any) -> Any:
    try:
        act()
    except NotFound:
        abort(404)
    except (ValidationError, Conflict) as exc:
        flash(message(exc), "error")
    else:
        flash(done, "success")
    return redirect(url_for(target, **values))


@bp.route("/volumes/plan", methods=["POST"])
@access.allow(*ADMIN)
def volume_plan() -> Any:
    return _back(lambda: archive.plan_volume(get_db(), access.actor(), current_app.config),
                 gettext("A volume was planned; it is being built."), "archive.overview")


@bp.route("/volumes/<int:volume_id>")
@access.allow(*ADMIN)
def volume_view(volume_id: int) -> Any:
    conn = get_db()
    volume = found_or_404(archive.get_volume, conn, volume_id)
    subject = f"volume:{volume_id}"
    job = jobs.active(conn, "build_volume", subject) or jobs.active(conn, "verify_volume", subject)
    return render_template("archive/volume.html", volume=volume, studies=archive.studies_of_volume(conn, volume_id),
                           job=job, folder=archive.volume_dir(current_app.config, volume["label"]),
                           iso=archive.iso_path(current_app.config, volume["label"]))


@bp.route("/volumes/<int:volume_id>/verify", methods=["POST"])
@access.allow(*ADMIN)
def volume_verify(volume_id: int) -> Any:
    return _back(lambda: archive.start_verify(get_db(), access.actor(), volume_id),
                 gettext("Verification started: every file is read back and compared."),
                 "archive.volume_view", volume_id=volume_id)


@bp.route("/volumes/<int:volume_id>/release", methods=["POST"])
@access.allow(*ADMIN)
def volume_release(volume_id: int) -> Any:
    found_or_404(archive.get_volume, get_db(), volume_id)
    return _back(lambda: archive.release_volume(get_db(), access.actor(), current_app.config, volume_id,
                                                request.form),
                 gettext("The online copies of this volume's images were released."),
                 "archive.volume_view", volume_id=volume_id)


@bp.route("/volumes/<int:volume_id>/restore", methods=["POST"])
@access.allow(*ADMIN)
def volume_restore(volume_id: int) -> Any:
    volume = found_or_404(archive.get_volume, get_db(), volume_id)
    study_uid = request.form.get("study_instance_uid", "")
    return _back(lambda: archive.restore_study(get_db(), access.actor(), current_app.config,
                                               archive.volume_dir(current_app.config, volume["label"]), study_uid),
                 gettext("The study was restored from the volume."), "archive.volume_view", volume_id=volume_id)


@bp.route("/volumes/<int:volume_id>/label")
@access.allow(*ADMIN)
def volume_label(volume_id: int) -> Any:
    conn = get_db()
    volume = found_or_404(archive.get_volume, conn, volume_id)
    return render_template("archive/label.html", volume=volume, studies=archive.studies_of_volume(conn, volume_id))


@bp.route("/jobs/<int:job_id>")
@access.allow(*ADMIN)
def job_view(job_id: int) -> Any:
    job = found_or_404(jobs.get, get_db(), job_id)
    template = "archive/_job.html" if is_htmx() else "archive/job.html"
    return render_template(template, job=job)


@bp.route("/jobs/<int:job_id>/pause", methods=["POST"])
@access.allow(*ADMIN)
def job_pause(job_id: int) -> Any:
    return _back(lambda: jobs.pause(get_db(), access.actor(), job_id), gettext("Job paused."),
                 "archive.job_view", job_id=job_id)


@bp.route("/jobs/<int:job_id>/resume", methods=["POST"])
@access.allow(*ADMIN)
def job_resume(job_id: int) -> Any:
    return _back(lambda: jobs.resume(get_db(), access.actor(), job_id), gettext("Job resumed."),
                 "archive.job_view", job_id=job_id)
