"""The modality's side of the workflow: procedure steps (MPPS) that named no exam, linked by a
technologist; storage commitments, for the admin."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from ..ris import mpps
from ..pacs import commitment
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .forms import errors_of, message

bp = Blueprint("workflow", __name__)
TECHNOLOGIST = ("technologist",)


def _steps_page(errors: dict[int, dict[str, str]] | None = None, status: int = 200) -> Any:
    return render_template("workflow/steps.html", steps=mpps.unlinked(get_db()), errors=errors or {}), status


@bp.route("/procedure-steps")
@access.allow(*TECHNOLOGIST)
def procedure_steps() -> Any:
    """Procedure steps the modalities reported for no exam pacslite knows."""
    return _steps_page()


@bp.route("/procedure-steps/<int:step_id>/link", methods=["POST"])
@access.allow(*TECHNOLOGIST)
def procedure_step_link(step_id: int) -> Any:
    try:
        step = mpps.link(get_db(), current_app.config, access.actor(), step_id, request.form)
    except NotFound:
        abort(404)
    except ValidationError as exc:
        return _steps_page({step_id: errors_of(exc)}, 400)
    except Conflict as exc:
        flash(message(exc), "error")
        return _steps_page(status=409)
    flash(gettext("Procedure step linked to exam %(accession)s.", accession=request.form.get("accession_number", "")),
          "success")
    return redirect(url_for("registration.exam_view", accession=request.form.get("accession_number", "").strip())
                    if step["exam_ref"] else url_for("workflow.procedure_steps"))


@bp.route("/admin/commitments")
@access.allow("admin")
def commitments() -> Any:
    """Storage commitment requests and whether their reports reached the modality (admin)."""
    return render_template("workflow/commitments.html", rows=commitment.recent(get_db(), limit=200))


@bp.app_context_processor
def _unlinked_count() -> dict[str, Any]:
    """The count of unlinked procedure steps in the technologists' navigation bar."""
    def count() -> int:
        if current_user.is_authenticated and current_user.has_any(list(TECHNOLOGIST)):
            return mpps.count_unlinked(get_db())
        return 0
    return {"unlinked_steps_count": count}
