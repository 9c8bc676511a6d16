"""The quarantine: images stored safely but not filed, with the reason for each study."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from .. import index
from ..db import get_db
from . import access

bp = Blueprint("quarantine", __name__, url_prefix="/quarantine")


@bp.route("/")
@access.allow(*access.IMAGE_CONTROL)
def quarantine_list() -> Any:
    return render_template("quarantine/list.html", items=index.quarantine(get_db()))
