"""Key images on the pages: marked from the viewer beside the report, listed beside the report
(rendered in the window they were marked in), removed; the printed report lays them out."""
from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask_babel import gettext

from ..core import storage
from ..core.validation import Conflict, ValidationError
from ..pacs import imaging, key_images
from ..ris import patients
from . import access, images
from .database import get_db
from .forms import found_or_404, message

bp = Blueprint("keys", __name__)
RADIOLOGIST = ("radiologist",)
#: The side of a key image on the printed report (pixels; printed at about 60 mm).
PRINTED_SIZE = 360


@bp.route("/instances/<int:instance_id>/key", methods=["POST"])
@access.allow(*RADIOLOGIST)
def mark(instance_id: int) -> Any:
    """Mark the image (``frame``, ``center``, ``width``, ``note``) as a key image; a short text
    for the viewer's status line."""
    try:
        key_images.mark(get_db(), access.actor(), instance_id, request.form)
    except (Conflict, ValidationError) as exc:
        return Response(message(exc), status=409, mimetype="text/plain")
    return Response(gettext("Marked as a key image."), mimetype="text/plain")


@bp.route("/exams/<accession>/key-images")
@access.allow(*images.VIEWERS)
def key_list(accession: str) -> Any:
    """The exam's key images (htmx, beside the report)."""
    exam = found_or_404(patients.get_exam, get_db(), accession)
    return render_template("reports/_key_images.html", exam=exam, keys=key_images.of_exam(get_db(), exam["id"]))


@bp.route("/exams/<accession>/key-images/<int:key_id>/remove", methods=["POST"])
@access.allow(*RADIOLOGIST)
def remove(accession: str, key_id: int) -> Any:
    exam = found_or_404(patients.get_exam, get_db(), accession)
    try:
        key_images.unmark(get_db(), access.actor(), key_id)
    except Conflict:
        pass  # already gone: the list shows what is there
    return render_template("reports/_key_images.html", exam=exam, keys=key_images.of_exam(get_db(), exam["id"]))


def printed(exam: Any, inline: bool = False) -> list[dict[str, Any]]:
    """The key images of the printed report: each with its note and a picture source (the
    render URL, or for a kiosk without a login a data URI)."""
    found = []
    for key in key_images.of_exam(get_db(), exam["id"]):
        if inline:
            instance = imaging.get_instance(get_db(), key["instance_ref"])
            rendered = imaging.render_file(storage.resolve(current_app.config["STORAGE_DIR"], instance["storage_path"]),
                                           imaging.View(frame=key["frame"], center=key["center"], width=key["width"],
                                                        max_size=PRINTED_SIZE))
            source = "data:image/png;base64," + base64.b64encode(rendered.data).decode()
        else:
            source = url_for("images.instance_render", instance_id=key["instance_ref"], frame=key["frame"],
                             wc=key["center"], ww=key["width"], size=PRINTED_SIZE)
        found.append({"note": key["note"], "src": source})
    return found
