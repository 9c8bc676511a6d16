"""Report templates on the pages: the report page's tree and search and *Save as my template*
(radiologists), and the administrator's department and section templates with export and
import. Inserting a template into the texts happens in the browser (pacslite.js), so that the
radiologist's Ctrl+Z takes it back and the draft saves itself as after typing."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..core.validation import N_, Conflict, NotFound, ValidationError
from ..ris import patients
from ..ris import report_templates as templates
from . import access, csvout, limits
from .database import get_db
from .forms import errors_of, found_or_404, message
from .labels import options

bp = Blueprint("templates", __name__)
RADIOLOGIST = ("radiologist",)
ADMIN = ("admin",)
#: The administrator's list is paged by this many templates.
PAGE = 200


# ---------------------------------------------------------------- the report page

def panel_context(exam: Any, query: str = "") -> dict[str, Any]:
    """What the report page's templates panel shows for this exam and radiologist."""
    rows = templates.visible(get_db(), current_user.username, modality=exam["modality"],
                             body_part=exam["body_part"] or "")
    found = templates.search(rows, query)
    return {"template_tree": templates.tree(found), "template_query": query,
            "normal_template": templates.normal_for(get_db(), current_user.username, exam)}


@bp.route("/exams/<accession>/report/templates")
@access.allow(*RADIOLOGIST)
def panel(accession: str) -> Any:
    """The templates panel (htmx): the tree, filtered by ``q`` (name or pinyin initials)."""
    exam = found_or_404(patients.get_exam, get_db(), accession)
    return render_template("reports/_templates.html", exam=exam, **panel_context(exam, request.args.get("q", "")[:64]))


@bp.route("/exams/<accession>/report/templates", methods=["POST"])
@access.allow(*RADIOLOGIST)
def save_mine(accession: str) -> Any:
    """*Save as my template*: the texts being written, under a name (and folder) of one's own,
    for the exam's modality and body part."""
    exam = found_or_404(patients.get_exam, get_db(), accession)
    data = {"level": templates.PERSONAL, "modality": exam["modality"], "body_part": exam["body_part"] or "",
            **{field: request.form.get(field, "") for field in ("name", "folder", "findings", "impression")}}
    status, note = 200, ""
    try:
        templates.save(get_db(), access.actor(), current_app.config, data)
        note = gettext("Saved as your template “%(name)s”.", name=data["name"].strip())
    except ValidationError as exc:
        status, note = 400, " ".join(errors_of(exc).values())
    except Conflict as exc:
        status, note = 403, message(exc)
    return render_template("reports/_templates.html", exam=exam, **panel_context(exam), template_note=note,
                           template_note_failed=status != 200), status


# ---------------------------------------------------------------- the administrator

@bp.route("/admin/templates")
@access.allow(*ADMIN)
def template_list() -> Any:
    modality = request.args.get("modality", "")
    page_text = request.args.get("page", "1")
    page = max(int(page_text), 1) if page_text.isdigit() else 1
    rows = templates.department_list(get_db(), modality=modality, limit=PAGE + 1, offset=(page - 1) * PAGE)
    return render_template("admin/templates.html", rows=rows[:PAGE], more=len(rows) > PAGE, page=page,
                           modality=modality)


@bp.route("/admin/templates/new", methods=["GET", "POST"])
@bp.route("/admin/templates/<int:template_id>", methods=["GET", "POST"])
@access.allow(*ADMIN)
def template_edit(template_id: int | None = None) -> Any:
    template = None
    if template_id is not None:
        template = found_or_404(templates.get, get_db(), template_id)
        if template["level"] == templates.PERSONAL:
            abort(404)  # a radiologist's own is theirs
    values: Any = dict(template) if template is not None else {"level": templates.DEPARTMENT}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = request.form
        try:
            templates.save(get_db(), access.actor(), current_app.config, request.form, template_id)
        except ValidationError as exc:
            errors = errors_of(exc)
        except Conflict as exc:
            errors = {"level": message(exc)}
        else:
            flash(gettext("Template saved."), "success")
            return redirect(url_for("templates.template_list"))
    return render_template("admin/template_form.html", template=template, values=values, errors=errors,
                           level_choices=[(code, text) for code, text in options("template_level")
                                          if code != templates.PERSONAL]), (400 if errors else 200)


@bp.route("/admin/templates/<int:template_id>/remove", methods=["POST"])
@access.allow(*ADMIN)
def template_remove(template_id: int) -> Any:
    try:
        templates.remove(get_db(), access.actor(), template_id)
    except NotFound:
        abort(404)
    except Conflict as exc:
        flash(message(exc), "error")
        return redirect(url_for("templates.template_list"))
    flash(gettext("Template removed."), "success")
    return redirect(url_for("templates.template_list"))


@bp.route("/admin/templates/export.json")
@access.allow(*ADMIN)
def export_json() -> Any:
    response = Response(templates.export_json(get_db()), mimetype="application/json")
    response.headers["Content-Disposition"] = "attachment; filename=pacslite-report-templates.json"
    return response


@bp.route("/admin/templates/export.csv")
@access.allow(*ADMIN)
def export_csv() -> Any:
    return csvout.response(templates.export_csv_rows(get_db()), "pacslite-report-templates.csv")


@bp.route("/admin/templates/import", methods=["POST"])
@access.allow(*ADMIN)
@limits.body("TEMPLATE_IMPORT_MAX_BYTES")
def import_file() -> Any:
    upload = request.files.get("file")
    try:
        if upload is None or not upload.filename:
            raise ValidationError("file", N_("Choose a file."))
        most = current_app.config["TEMPLATE_IMPORT_MAX_BYTES"]
        rows = templates.parse(upload.read(most + 1), upload.filename, most)
        counts = templates.import_rows(get_db(), access.actor(), current_app.config, rows)
    except ValidationError as exc:
        flash(" ".join(errors_of(exc).values()), "error")
        return redirect(url_for("templates.template_list")), 303
    flash(gettext("Imported: %(added)d added, %(replaced)d replaced.", **counts), "success")
    return redirect(url_for("templates.template_list")), 303
