"""Images in the browser: series thumbnails, the viewer, rendered frames, the header view."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_login import current_user

from ..core import storage
from ..ris import patients
from ..pacs import imaging, index
from .database import get_db
from . import access
from .htmx import is_htmx

bp = Blueprint("images", __name__)
#: Who sees images: those who report, read or take them (registrars do not).
VIEWERS = ("clinician", "radiologist", "technologist")


def _disk_cache(name: str, setting: str, suffix: str) -> imaging.Cache:
    """The app's one cache of that name, under ``<instance>/cache/<name>``, sized by ``setting`` (MB)."""
    key = f"{name}_cache"
    if key not in current_app.extensions:
        current_app.extensions[key] = imaging.Cache(Path(current_app.instance_path) / "cache" / name,
                                                    current_app.config[setting] * 1024 * 1024, suffix)
    return current_app.extensions[key]


def cache() -> imaging.Cache:
    """Rendered frames (PNG), for the viewer and DICOMweb's rendered and thumbnails."""
    return _disk_cache("render", "RENDER_CACHE_MB", ".png")


def metadata_cache() -> imaging.Cache:
    """DICOMweb metadata read from the files (JSON)."""
    return _disk_cache("metadata", "METADATA_CACHE_MB", ".json")


def _visible(row: Any) -> Any:
    """The series or instance, if this user may see it: quarantined images only for those
    who deal with the quarantine."""
    if row is None:
        abort(404)
    if row["exam_ref"] is None and not current_user.has_any(list(access.IMAGE_CONTROL)):
        abort(404)
    return row


def _audit(row: Any, what: str) -> None:
    exam = patients.find_exam(get_db(), exam_id=row["exam_ref"]) if row["exam_ref"] else None
    imaging.record_view(get_db(), access.actor(), exam["patient_id"] if exam else row["study_patient_id"],
                        row["study_instance_uid"], row["series_instance_uid"], what)


def _png(rendered: imaging.Rendered) -> Response:
    response = Response(rendered.data, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"
    if rendered.placeholder:
        response.headers["X-Pacslite-Placeholder"] = "1"
    return response


def _number(name: str) -> float | None:
    try:
        return float(request.args[name])
    except (KeyError, ValueError):
        return None


@bp.route("/series/<int:series_id>/thumbnail.png")
@access.allow(*VIEWERS)
def series_thumbnail(series_id: int) -> Any:
    series = _visible(imaging.get_series(get_db(), series_id))
    images = imaging.series_images(get_db(), series_id)
    if not images:
        abort(404)
    middle = images[len(images) // 2]
    _audit(series, "thumbnail")
    path = storage.resolve(current_app.config["STORAGE_DIR"], middle["storage_path"])
    return _png(cache().get_or_render(middle["sha256"], path, imaging.View(max_size=imaging.THUMBNAIL)))


@bp.route("/instances/<int:instance_id>/render.png")
@access.allow(*VIEWERS)
def instance_render(instance_id: int) -> Any:
    instance = _visible(imaging.get_instance(get_db(), instance_id))
    series = imaging.get_series(get_db(), instance["series_id"])
    _audit(series, "image")
    frame = request.args.get("frame", "0")
    size = request.args.get("size", "")
    view = imaging.View(frame=int(frame) if frame.isdigit() else 0, center=_number("wc"), width=_number("ww"),
                        invert=request.args.get("invert") == "1",
                        max_size=min(int(size), imaging.MAX_RENDERED) if size.isdigit() else 0)
    path = storage.resolve(current_app.config["STORAGE_DIR"], instance["storage_path"])
    return _png(cache().get_or_render(instance["sha256"], path, view))


@bp.route("/instances/<int:instance_id>/values")
@access.allow(*VIEWERS)
def instance_values(instance_id: int) -> Any:
    """The frame's modality values (CT numbers), fetched once per image by the viewer to show
    the value under the cursor; 404 for a colour image or an unreadable file."""
    instance = _visible(imaging.get_instance(get_db(), instance_id))
    _audit(imaging.get_series(get_db(), instance["series_id"]), "values")
    frame = request.args.get("frame", "0")
    try:
        values = imaging.modality_values(storage.resolve(current_app.config["STORAGE_DIR"], instance["storage_path"]),
                                         int(frame) if frame.isdigit() else 0)
    except Exception:  # an unreadable file or frame: the viewer shows no value
        values = None
    if values is None:
        abort(404)
    response = Response(values.data, mimetype="application/octet-stream")
    response.headers.update({"X-Rows": str(values.rows), "X-Columns": str(values.columns), "X-Type": values.dtype,
                             "X-Unit": values.unit, "Cache-Control": "private, max-age=3600"})
    return response


@bp.route("/instances/<int:instance_id>/header")
@access.allow(*VIEWERS)
def instance_header(instance_id: int) -> Any:
    instance = _visible(imaging.get_instance(get_db(), instance_id))
    _audit(imaging.get_series(get_db(), instance["series_id"]), "header")
    try:
        rows = imaging.header_elements(storage.resolve(current_app.config["STORAGE_DIR"], instance["storage_path"]))
    except Exception:  # an unreadable file: say so in the panel
        rows = []
    template = "images/_header.html" if is_htmx() else "images/header.html"
    return render_template(template, rows=rows, instance=instance)


@bp.route("/series/<int:series_id>/viewer")
@access.allow(*VIEWERS)
def series_viewer(series_id: int) -> Any:
    conn = get_db()
    series = _visible(imaging.get_series(conn, series_id))
    images = imaging.series_images(conn, series_id)
    exam = patients.find_exam(conn, exam_id=series["exam_ref"]) if series["exam_ref"] else None
    store = current_app.config["STORAGE_DIR"]
    stack, window = imaging.stack_of(store, images)
    _audit(series, "viewer")
    template = "images/_viewer.html" if is_htmx() else "images/viewer.html"
    return render_template(template, series=series, exam=exam, siblings=index.sibling_series(conn, series_id),
                           stack=json.dumps(stack), window=window,
                           presets=imaging.PRESETS.get(series["modality"], []))
