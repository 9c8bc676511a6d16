"""The import page: scans, non-conformant DICOM, folders, ZIPs and patient CDs, with a
progress bar and the report of what was filed, quarantined, fixed or refused."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from markupsafe import Markup, escape

from ..core import jobs
from ..pacs import importing
from .database import get_db
from ..core.validation import Conflict
from . import access, limits
from .htmx import is_htmx
from .forms import found_or_404, message
from .labels import LABELS, label

bp = Blueprint("imports", __name__, url_prefix="/import")
IMPORTERS = ("technologist",)


@bp.app_template_filter("import_note")
def import_note(text: Any) -> Markup:
    """A report line's fix or refusal in the user's language: a note translated (its values
    escaped; a system's own error message, in its words, set apart as a machine value), a
    quarantine reason's code as its words, an unexpected error's own message as it is."""
    if isinstance(text, list):
        msgid, params = text
        values = {k: _machine(v) if k == "error" else escape(v) for k, v in params.items()}
        return Markup(gettext(msgid, **values) if values else gettext(msgid))
    return _machine(text) if text and text not in LABELS["quarantine"] else escape(label("quarantine", text))


def _machine(text: Any) -> Markup:
    return Markup('<span class="mono" translate="no">%s</span>') % text


@bp.route("/", methods=["GET", "POST"])
@access.allow(*IMPORTERS)
@limits.body("IMPORT_MAX_BYTES")
def import_new() -> Any:
    if request.method == "GET":
        return render_template("imports/new.html", values={})
    uploads = [(f.filename or "", f.save) for f in request.files.getlist("files") if f.filename]
    if not uploads:
        return render_template("imports/new.html", values=request.form,
                               error=gettext("Choose files, a folder or a ZIP.")), 400
    folder, refused = importing.stage(current_app.config, uploads)
    import_id = importing.create(get_db(), access.actor(), folder, refused)
    if (folder / "DICOMDIR").is_file():  # a patient CD: the patients are mapped first
        return redirect(url_for("imports.import_reconcile", import_id=import_id,
                                accession=request.form.get("accession", "")))
    return _start(import_id, request.form.get("accession", ""), {})


def _start(import_id: int, accession: str, mapping: dict[str, str]) -> Any:
    try:
        importing.start(get_db(), access.actor(), import_id, accession.strip(), mapping)
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("imports.import_view", import_id=import_id))
    return redirect(url_for("imports.import_view", import_id=import_id))


@bp.route("/<int:import_id>/reconcile", methods=["GET", "POST"])
@access.allow(*IMPORTERS)
def import_reconcile(import_id: int) -> Any:
    """A CD from another hospital: its patients, each mapped to a local patient ID."""
    row = found_or_404(importing.get_import, get_db(), import_id)
    cd_error = None
    try:
        found = importing.read_cd(Path(row["folder"]))
    except ValueError as exc:
        cd_error, found = importing.why(exc), []
    if request.method == "POST":
        mapping = {p["patient_id"]: request.form.get(f"local-{n}", "").strip() for n, p in enumerate(found)}
        return _start(import_id, request.form.get("accession", ""), {k: v for k, v in mapping.items() if v})
    return render_template("imports/reconcile.html", row=row, patients=found, cd_error=cd_error,
                           accession=request.args.get("accession", ""))


@bp.route("/<int:import_id>")
@access.allow(*IMPORTERS)
def import_view(import_id: int) -> Any:
    conn = get_db()
    row = found_or_404(importing.get_import, conn, import_id)
    job = jobs.latest(conn, "import", f"import:{import_id}")
    template = "imports/_report.html" if is_htmx() else "imports/view.html"
    lines = importing.lines_of(row)
    return render_template(template, row=row, job=job, lines=lines, counts=importing.Report(lines).counts(),
                           running=job is not None and job["state"] in (jobs.QUEUED, jobs.RUNNING))
