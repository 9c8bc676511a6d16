"""The OHIF Viewer under ``/ohif/``: its files (installed by :mod:`pacslite.ohif`), the
configuration pointing it at pacslite's DICOMweb, and a Content-Security-Policy of its own.
OHIF calls DICOMweb with the browser's session cookie, so what it shows is what the user
may see, and every series it opens is audited like the light viewer's."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, redirect, render_template, send_from_directory, url_for
from werkzeug.security import safe_join
from pydicom.uid import ExplicitVRLittleEndian

from ..ris import patients
from ..pacs import index
from .. import ohif
from .database import get_db
from . import access
from .images import VIEWERS

bp = Blueprint("ohif", __name__)
#: Hashed bundles never change under their name: the browser may keep them.
ASSET_MAX_AGE = 30 * 24 * 3600


def folder() -> Path:
    return Path(current_app.config["OHIF_DIR"] or ohif.DEFAULT_TARGET)


def available() -> bool:
    """Whether the viewer is installed (the pages offer it only then)."""
    return ohif.installed(folder())


def study_url(study_uids: list[str]) -> str:
    """The OHIF address that opens these studies together."""
    return url_for("ohif.app", path="viewer") + "?StudyInstanceUIDs=" + ",".join(study_uids)


@lru_cache(maxsize=4)
def _policy(index: Path, modified: float) -> str:
    """OHIF's CSP: its inline scripts by hash, WebAssembly and workers for the decoders,
    inline styles (its components set them), and nothing from anywhere else."""
    scripts = " ".join(ohif.inline_script_hashes(index.read_text(encoding="utf-8")))
    return (f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {scripts}; worker-src 'self' blob:;"
            " style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:;"
            " connect-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; frame-ancestors 'self';"
            " base-uri 'self'; form-action 'self'")


def _with_policy(response: Response) -> Response:
    index = folder() / "index.html"
    response.headers["Content-Security-Policy"] = _policy(index, index.stat().st_mtime)
    return response


def _unavailable() -> Any:
    return render_template("images/ohif_unavailable.html"), 503


@bp.route("/ohif/app-config.js")
@access.allow(*VIEWERS)
def app_config() -> Any:
    if not available():
        return _unavailable()
    body = "window.config = " + json.dumps(_configuration(), indent=1) + ";\n" + _ROOTS
    response = Response(body, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-store"
    return _with_policy(response)


#: The data source's addresses are this page's origin: absolute, as OHIF wants them.
_ROOTS = """(function () {
  var origin = window.location.origin;
  window.config.dataSources.forEach(function (source) {
    var c = source.configuration;
    c.qidoRoot = origin + c.qidoRoot; c.wadoRoot = origin + c.wadoRoot; c.wadoUriRoot = origin + c.wadoUriRoot;
  });
})();
"""


def _configuration() -> dict[str, Any]:
    return {
        "routerBasename": ohif.MOUNT.rstrip("/"),
        "extensions": [], "modes": [], "customizationService": {},
        "showStudyList": True, "maxNumberOfWebWorkers": 2, "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True, "showLoadingIndicator": True, "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 4, "prefetch": 10},
        "defaultDataSourceName": "pacslite",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "pacslite",
            "configuration": {
                "friendlyName": current_app.config["HOSPITAL_NAME"], "name": "pacslite",
                "qidoRoot": "/dicom-web", "wadoRoot": "/dicom-web", "wadoUriRoot": "/wado",
                "qidoSupportsIncludeField": True, "supportsReject": False, "supportsStow": False,
                "imageRendering": "wadors", "thumbnailRendering": "wadors", "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": True, "supportsWildcard": True, "omitQuotationForMultipartRequest": True,
                # frames uncompressed (pacslite decompresses on the server): OHIF's JPEG 2000 and
                # JPEG-LS decoders evaluate strings as code, which the policy forbids (black viewports)
                "requestTransferSyntaxUID": ExplicitVRLittleEndian,
                "bulkDataURI": {"enabled": True},
            },
        }],
    }


@bp.route("/exams/<accession>/ohif")
@access.allow(*VIEWERS)
def exam(accession: str) -> Any:
    """"Open in OHIF": the exam's filed studies in the viewer."""
    if not available():
        return _unavailable()
    conn = get_db()
    found = patients.find_exam(conn, accession=accession)
    if found is None:
        abort(404)
    studies = index.filed_study_uids(conn, found["id"])
    if not studies:
        abort(404)
    return redirect(study_url(studies))


@bp.route("/ohif/", defaults={"path": ""})
@bp.route("/ohif/<path:path>")
@access.allow(*VIEWERS)
def app(path: str) -> Any:
    """A file of the viewer, or its page for any of its own routes (``/ohif/viewer?…``)."""
    if not available():
        return _unavailable()
    root = folder()
    target = safe_join(str(root), path) if path else None
    if target and Path(target).is_file() and not Path(target).name.startswith("."):
        response = send_from_directory(root, path, max_age=ASSET_MAX_AGE)
    elif "." in path.rsplit("/", 1)[-1]:
        abort(404)
    else:
        response = send_from_directory(root, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-store"
    return _with_policy(response)
