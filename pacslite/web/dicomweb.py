"""DICOMweb over HTTP under ``/dicom-web`` (QIDO-RS, WADO-RS, STOW-RS) and WADO-URI at ``/wado``:
routes, media types and multipart bodies. What is found, sent and stored is
:mod:`pacslite.pacs.dicomweb`'s.

Used by browsers (OHIF, with the web session; STOW then needs the CSRF header) and by programs
(a bearer token). Those who see images read; technologists and admins store.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.wsgi import wrap_file
from pydicom.uid import ExplicitVRLittleEndian

from ..core import storage
from ..pacs import arrivals, dicomweb, imaging
from .database import get_db
from ..pacs.index import Source
from ..core.query import QueryError
from . import access, limits, multipart
from .extensions import csrf
from .images import VIEWERS, cache, metadata_cache

log = logging.getLogger(__name__)
bp = Blueprint("dicomweb", __name__)
ROOT = "/dicom-web"
STORERS = ("technologist",)
DICOM_JSON = "application/dicom+json"
STUDY = "/studies/<study>"
SERIES = STUDY + "/series/<series>"
INSTANCE = SERIES + "/instances/<instance>"


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _base_url() -> str:
    """Where DICOMweb is, for the URLs answers carry: PUBLIC_URL, else as the request reached us."""
    return (current_app.config["PUBLIC_URL"] or request.host_url).rstrip("/") + ROOT


def _json(body: Any, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.mimetype = DICOM_JSON
    return response


def _accepts(*offered: str) -> bool:
    """Whether the Accept header takes one of ``offered`` (or anything)."""
    for media_type, _ in multipart.media_ranges(request.headers.get("Accept", "")):
        kind = media_type.split("/")[0]
        if media_type in offered or media_type == "*/*" or f"{kind}/*" == media_type and \
                any(o.startswith(kind + "/") for o in offered):
            return True
    return False


def _audit_views(rows: Iterable[Any], what: str) -> None:
    """A view of each series, as the browser's viewer records it."""
    seen = set()
    for row in rows:
        if row["series_instance_uid"] not in seen:
            seen.add(row["series_instance_uid"])
            imaging.record_view(get_db(), access.actor(), row["patient_id"], row["study_instance_uid"],
                                row["series_instance_uid"], what)


def _images(study: str, series: str | None = None, instance: str | None = None) -> list[Any] | Response:
    try:
        return dicomweb.images(get_db(), study, series, instance)
    except dicomweb.NotFound as exc:
        return _error(404, str(exc))


def _online_images(study: str, series: str | None = None, instance: str | None = None) -> list[Any] | Response:
    """The images named, those released to an archive volume left out (a 404 if none is left)."""
    rows = _images(study, series, instance)
    if isinstance(rows, Response):
        return rows
    present, offline = dicomweb.online(rows)
    if not present:
        return _error(404, f"{offline} image(s) are offline: restore them from their archive volume first")
    g.offline_images = offline
    return present


def _with_offline_warning(response: Response) -> Response:
    offline = g.get("offline_images", 0)
    if offline:
        response.headers["Warning"] = f'299 pacslite "{offline} image(s) are offline and were left out"'
    return response


@bp.errorhandler(OSError)
def _unreadable(exc: OSError) -> Response:
    """A stored file that is gone or unreadable: said plainly (the scrub raises its alert)."""
    log.error("DICOMweb %s: %s", request.path, exc)
    return _error(500, f"a stored file cannot be read ({exc.strerror or exc}); the scrub reports missing files"
                       " on the alerts page")


# ---------------------------------------------------------------- QIDO-RS

def _search(level: str, study: str | None = None, series: str | None = None) -> Response:
    if not _accepts(DICOM_JSON, "application/json"):
        return _error(406, f"search results are given as {DICOM_JSON}")
    settings = current_app.config
    try:
        wanted = dicomweb.read_search(request.args.items(multi=True), level, int(settings["QR_MAX_ANSWERS"]),
                                      study, series)
        found = dicomweb.search(get_db(), settings, wanted, _base_url())
    except QueryError as exc:
        return _error(400, str(exc))
    response = _json(found.answers)
    if found.more:
        response.headers["Warning"] = (f'299 pacslite "There are more results: ask again with'
                                       f' offset={wanted.offset + wanted.limit}"')
    return response


@bp.route(ROOT + "/studies")
@access.session_or_token(*VIEWERS)
def search_studies() -> Response:
    return _search(dicomweb.STUDY)


@bp.route(ROOT + "/series")
@access.session_or_token(*VIEWERS)
def search_series() -> Response:
    return _search(dicomweb.SERIES)


@bp.route(ROOT + "/instances")
@access.session_or_token(*VIEWERS)
def search_instances() -> Response:
    return _search(dicomweb.INSTANCE)


@bp.route(ROOT + STUDY + "/series")
@access.session_or_token(*VIEWERS)
def search_study_series(study: str) -> Response:
    return _search(dicomweb.SERIES, study)


@bp.route(ROOT + STUDY + "/instances")
@access.session_or_token(*VIEWERS)
def search_study_instances(study: str) -> Response:
    return _search(dicomweb.INSTANCE, study)


@bp.route(ROOT + SERIES + "/instances")
@access.session_or_token(*VIEWERS)
def search_series_instances(study: str, series: str) -> Response:
    return _search(dicomweb.INSTANCE, study, series)


# ---------------------------------------------------------------- WADO-RS: instances

def _dicom_syntaxes() -> list[str] | None:
    """The transfer syntaxes the client takes DICOM instances in, best first ("*": any), or None
    when it takes no DICOM at all. Without a transfer-syntax the default is Explicit VR LE."""
    syntaxes = []
    for media_type, params in multipart.media_ranges(request.headers.get("Accept", "")):
        if media_type == "multipart/related" and params.get("type", "application/dicom") in (
                "application/dicom", "application/*", "*/*") or media_type in ("application/dicom", "*/*"):
            syntaxes.append(params.get("transfer-syntax", ExplicitVRLittleEndian))
    return syntaxes or None


def _multipart(parts: Iterable[tuple[str, Path | bytes]], part_type: str) -> Response:
    """A multipart/related response of parts known now (stored files, bytes): one seekable body
    the HTTP server sends itself, its length given."""
    boundary = multipart.new_boundary()
    body = multipart.Concatenation(multipart.pieces(parts, boundary))
    response = Response(wrap_file(request.environ, body, multipart.CHUNK), direct_passthrough=True,
                        content_type=f'multipart/related; type="{part_type}"; boundary={boundary}')
    response.content_length = body.size
    return _with_offline_warning(response)


def _streamed_multipart(parts: Iterable[tuple[str, Path | bytes]], part_type: str) -> Response:
    """A multipart/related response whose parts are made as it goes (decompressed images)."""
    boundary = multipart.new_boundary()
    response = Response(multipart.write(parts, boundary),  # needs no request context: it may outlive it
                        content_type=f'multipart/related; type="{part_type}"; boundary={boundary}')
    return _with_offline_warning(response)


def _retrieve(rows: list[Any] | Response) -> Response:
    if isinstance(rows, Response):
        return rows
    syntaxes = _dicom_syntaxes()
    if syntaxes is None:
        return _error(406, 'instances are given as multipart/related; type="application/dicom"')
    store = current_app.config["STORAGE_DIR"]
    if all(dicomweb.goes_as_stored(row, syntaxes) for row in rows):
        _audit_views(rows, "dicomweb")
        return _multipart(((f"application/dicom; transfer-syntax={row['transfer_syntax_uid']}",
                            storage.resolve(store, row["storage_path"])) for row in rows), "application/dicom")
    try:  # the first conversion is made before the first byte goes, so a refusal is a clean 406
        first = dicomweb.instance_bytes(store, rows[0], syntaxes)
    except dicomweb.NotAcceptable as exc:
        return _error(406, str(exc))
    _audit_views(rows, "dicomweb")

    def parts() -> Iterable[tuple[str, Path | bytes]]:
        for position, row in enumerate(rows):
            try:
                body, syntax = first if position == 0 else dicomweb.instance_bytes(store, row, syntaxes)
            except dicomweb.NotAcceptable as exc:  # the status is sent: end the body short, say why in the log
                log.warning("WADO-RS stopped at %s: %s", row["sop_instance_uid"], exc)
                return
            yield f"application/dicom; transfer-syntax={syntax}", body
    return _streamed_multipart(parts(), "application/dicom")


@bp.route(ROOT + STUDY)
@access.session_or_token(*VIEWERS)
def retrieve_study(study: str) -> Response:
    return _retrieve(_online_images(study))


@bp.route(ROOT + SERIES)
@access.session_or_token(*VIEWERS)
def retrieve_series(study: str, series: str) -> Response:
    return _retrieve(_online_images(study, series))


@bp.route(ROOT + INSTANCE)
@access.session_or_token(*VIEWERS)
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    return _retrieve(_online_images(study, series, instance))


# ---------------------------------------------------------------- WADO-RS: metadata, bulk data

def _instance_url(row: Any) -> str:
    return (f"{_base_url()}/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"
            f"/instances/{row['sop_instance_uid']}")


def _metadata(rows: list[Any] | Response) -> Response:
    if isinstance(rows, Response):
        return rows
    if not _accepts(DICOM_JSON, "application/json"):
        return _error(406, f"metadata is given as {DICOM_JSON}")
    store = current_app.config["STORAGE_DIR"]
    _audit_views(rows, "dicomweb metadata")
    cache = metadata_cache()
    return _with_offline_warning(_json([dicomweb.metadata(store, row, _instance_url(row), cache) for row in rows]))


@bp.route(ROOT + STUDY + "/metadata")
@access.session_or_token(*VIEWERS)
def study_metadata(study: str) -> Response:
    return _metadata(_online_images(study))


@bp.route(ROOT + SERIES + "/metadata")
@access.session_or_token(*VIEWERS)
def series_metadata(study: str, series: str) -> Response:
    return _metadata(_online_images(study, series))


@bp.route(ROOT + INSTANCE + "/metadata")
@access.session_or_token(*VIEWERS)
def instance_metadata(study: str, series: str, instance: str) -> Response:
    return _metadata(_online_images(study, series, instance))


def _octet_syntaxes() -> list[str] | None:
    """The transfer syntaxes the client takes pixel data in ("*": any; "" for plain
    application/octet-stream, i.e. uncompressed), or None when it takes no bytes at all."""
    syntaxes = []
    for media_type, params in multipart.media_ranges(request.headers.get("Accept", "")):
        part_type = params.get("type", "application/octet-stream") if media_type == "multipart/related" else media_type
        if part_type in ("application/octet-stream", "*/*", "application/*"):
            syntaxes.append(params.get("transfer-syntax", ""))
        elif part_type.startswith("image/") and "transfer-syntax" in params:
            syntaxes.append(params["transfer-syntax"])
    return syntaxes or None


def _frames_response(row: Any, numbers: Sequence[int] | None) -> Response:
    syntaxes = _octet_syntaxes()
    if syntaxes is None:
        return _error(406, 'frames are given as multipart/related; type="application/octet-stream"')
    try:
        found = dicomweb.frames(current_app.config["STORAGE_DIR"], row, numbers, syntaxes)
    except dicomweb.NotFound as exc:
        return _error(404, str(exc))
    except dicomweb.NotAcceptable as exc:
        return _error(406, str(exc))
    _audit_views([row], "dicomweb frames")
    content_type = f"application/octet-stream; transfer-syntax={found.transfer_syntax}"
    return _multipart(((content_type, data) for data in found.data), "application/octet-stream")


@bp.route(ROOT + INSTANCE + "/frames/<frames>")
@access.session_or_token(*VIEWERS)
def instance_frames(study: str, series: str, instance: str, frames: str) -> Response:
    rows = _online_images(study, series, instance)
    if isinstance(rows, Response):
        return rows
    try:
        numbers = dicomweb.frame_numbers(frames)
    except QueryError as exc:
        return _error(400, str(exc))
    return _frames_response(rows[0], numbers)


@bp.route(ROOT + INSTANCE + "/bulkdata/<tag>")
@access.session_or_token(*VIEWERS)
def instance_bulkdata(study: str, series: str, instance: str, tag: str) -> Response:
    rows = _online_images(study, series, instance)
    if isinstance(rows, Response):
        return rows
    try:
        number = int(tag, 16)
    except ValueError:
        return _error(404, "bulk data is named by its tag, as the metadata gives it")
    if number == dicomweb.PIXEL_DATA:
        return _frames_response(rows[0], None)
    if _octet_syntaxes() is None:
        return _error(406, 'bulk data is given as multipart/related; type="application/octet-stream"')
    try:
        data = dicomweb.bulk_value(current_app.config["STORAGE_DIR"], rows[0], number)
    except dicomweb.NotFound as exc:
        return _error(404, str(exc))
    _audit_views(rows, "dicomweb bulkdata")
    return _multipart([("application/octet-stream", data)], "application/octet-stream")


# ---------------------------------------------------------------- rendered and thumbnails

def _image_type() -> str | None:
    """image/jpeg (the default) or image/png, as the client accepts; None for neither."""
    for media_type, _ in multipart.media_ranges(request.headers.get("Accept", "")):
        if media_type in ("image/jpeg", "image/png"):
            return media_type
        if media_type in ("image/*", "*/*"):
            return "image/jpeg"
    return None


def _picture(row: Any, view: imaging.View, image_type: str | None) -> Response:
    if image_type is None:
        return _error(406, "rendered images are given as image/jpeg or image/png")
    data = dicomweb.rendered(cache(), current_app.config["STORAGE_DIR"], row, view, image_type)
    _audit_views([row], "dicomweb rendered")
    response = Response(data, mimetype=image_type)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _rendering(frame: int, thumbnail: bool) -> imaging.View | Response:
    """The view the query asks for: ``window=center,width[,function]``, ``viewport=w,h``."""
    center = width = None
    window = request.args.get("window")
    if window:
        try:
            center, width = (float(v) for v in window.split(",")[:2])
        except ValueError:
            return _error(400, "window is center,width[,function]")
    size = imaging.THUMBNAIL if thumbnail else 0
    viewport = request.args.get("viewport")
    if viewport:
        try:
            size = max(int(v) for v in viewport.split(",")[:2])
        except ValueError:
            return _error(400, "viewport is width,height")
        if not 0 < size <= imaging.MAX_RENDERED:
            return _error(400, f"viewport is at most {imaging.MAX_RENDERED} pixels")
    return imaging.View(frame=frame, center=center, width=width, max_size=size)


def _render(study: str, series: str, instance: str | None, frame: int, thumbnail: bool) -> Response:
    rows = _online_images(study, series, instance)
    if isinstance(rows, Response):
        return rows
    view = _rendering(frame, thumbnail)
    if isinstance(view, Response):
        return view
    return _picture(rows[len(rows) // 2], view, _image_type())


@bp.route(ROOT + INSTANCE + "/rendered")
@access.session_or_token(*VIEWERS)
def instance_rendered(study: str, series: str, instance: str) -> Response:
    return _render(study, series, instance, 0, thumbnail=False)


@bp.route(ROOT + INSTANCE + "/thumbnail")
@access.session_or_token(*VIEWERS)
def instance_thumbnail(study: str, series: str, instance: str) -> Response:
    return _render(study, series, instance, 0, thumbnail=True)


@bp.route(ROOT + SERIES + "/thumbnail")
@access.session_or_token(*VIEWERS)
def series_thumbnail(study: str, series: str) -> Response:
    return _render(study, series, None, 0, thumbnail=True)


@bp.route(ROOT + INSTANCE + "/frames/<frames>/rendered")
@access.session_or_token(*VIEWERS)
def frame_rendered(study: str, series: str, instance: str, frames: str) -> Response:
    try:
        number = dicomweb.frame_numbers(frames)[0]
    except QueryError as exc:
        return _error(400, str(exc))
    return _render(study, series, instance, number - 1, thumbnail=False)


# ---------------------------------------------------------------- STOW-RS

def _store(study: str | None) -> Response:
    if g.get("auth_via") != "token":
        csrf.protect()  # a browser's session: the request must come from pacslite's own pages
    media_type, params = multipart.media_type(request.headers.get("Content-Type", ""))
    if media_type != "multipart/related" or params.get("type", "application/dicom") != "application/dicom":
        return _error(415, 'store takes multipart/related; type="application/dicom"')
    settings = current_app.config
    results: list[dicomweb.StoreResult] = []
    directory = storage.tmp_dir(settings["STORAGE_DIR"])
    broken = ""
    with arrivals.delivery(get_db(), Source(f"stow:{access.actor().name}", request.remote_addr or "")) as source:
        try:
            for headers, path in multipart.read(request.stream, params.get("boundary", ""), directory,
                                                settings["STOW_MAX_PARTS"]):
                try:
                    part_type = multipart.media_type(headers.get("content-type", "application/dicom"))[0]
                    if part_type != "application/dicom":
                        results.append(dicomweb.unreadable_part(f"a part of type {part_type[:60]}"))
                    else:
                        results.append(dicomweb.store_part(get_db(), settings, path, source, study))
                finally:
                    path.unlink(missing_ok=True)
        except multipart.MultipartError as exc:
            if not results:
                return _error(400, str(exc))
            results.append(dicomweb.unreadable_part(str(exc)))
            broken = str(exc)
    if not results:
        return _error(400, "the body holds no part")
    status, body = dicomweb.store_response(results, _base_url())
    response = _json(body, status)
    quarantined = sum(1 for r in results if r.outcome == "quarantined")
    if broken:  # the parts before were taken; say why the rest was not
        response.headers.add("Warning", f'299 pacslite "the rest of the body was not read: {broken}"')
    if quarantined:
        response.headers.add("Warning", f'299 pacslite "{quarantined} instance(s) kept in the quarantine: no'
                                        f' registered exam matched; a technologist files them"')
    return response


@bp.route(ROOT + "/studies", methods=["POST"])
@access.session_or_token(*STORERS)
@limits.body("STOW_MAX_BYTES")
def store_instances() -> Response:
    return _store(None)


@bp.route(ROOT + STUDY, methods=["POST"])
@access.session_or_token(*STORERS)
@limits.body("STOW_MAX_BYTES")
def store_study_instances(study: str) -> Response:
    return _store(study)


# ---------------------------------------------------------------- WADO-URI

@bp.route("/wado")
@access.session_or_token(*VIEWERS)
def wado_uri() -> Response:
    """PS3.18 WADO-URI for older viewers: the file (``contentType=application/dicom``) or a
    rendered frame (image/jpeg by default, image/png)."""
    args = request.args
    if args.get("requestType") != "WADO":
        return _error(400, "requestType must be WADO")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not args.get(k)]
    if missing:
        return _error(400, f"{', '.join(missing)} missing")
    rows = _online_images(args["studyUID"], args["seriesUID"], args["objectUID"])
    if isinstance(rows, Response):
        return rows
    content_type = args.get("contentType", "image/jpeg").split(",")[0].strip()
    if content_type == "application/dicom":
        syntax = args.get("transferSyntax")
        try:
            body, _ = dicomweb.instance_bytes(current_app.config["STORAGE_DIR"], rows[0],
                                              [syntax] if syntax else ["*"])
        except dicomweb.NotAcceptable as exc:
            return _error(406, str(exc))
        _audit_views(rows, "wado")
        data = body.read_bytes() if isinstance(body, Path) else body
        return Response(data, mimetype="application/dicom")
    if content_type not in ("image/jpeg", "image/png"):
        return _error(406, "contentType is application/dicom, image/jpeg or image/png")
    frame = args.get("frameNumber", "1")
    if not frame.isdigit() or int(frame) < 1:
        return _error(400, "frameNumber starts at 1")
    center, width = args.get("windowCenter"), args.get("windowWidth")
    try:
        view = imaging.View(frame=int(frame) - 1, center=float(center) if center else None,
                            width=float(width) if width else None, max_size=_wado_size(args))
    except ValueError as exc:
        return _error(400, str(exc))
    return _picture(rows[0], view, content_type)


def _wado_size(args: Mapping[str, str]) -> int:
    """The larger of ``rows`` and ``columns`` (0: the image's own size); ValueError, said
    plainly, for a value that is not a whole number from 1 to the largest rendered size."""
    sizes = []
    for name in ("rows", "columns"):
        value = args.get(name, "")
        if value == "":
            continue
        if not value.isdigit() or not 0 < int(value) <= imaging.MAX_RENDERED:
            raise ValueError(f"{name} is a whole number from 1 to {imaging.MAX_RENDERED}")
        sizes.append(int(value))
    return max(sizes, default=0)

