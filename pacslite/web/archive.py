"""The archive: the online store's capacity and forecast; offline volumes, the off-site copy,
the scrub and their jobs come with it."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template

from .. import capacity
from ..db import get_db
from . import access

bp = Blueprint("archive", __name__, url_prefix="/archive")
ADMIN = ("admin",)


@bp.route("/")
@access.allow(*ADMIN)
def overview() -> Any:
    settings = current_app.config
    return render_template("archive/overview.html", forecast=capacity.forecast(get_db(), settings),
                           high_water=settings["STORAGE_HIGH_WATER_PERCENT"], warn=settings["STORAGE_WARN_PERCENT"])
