"""The sweep's alerts: the dashboard, the count in the navigation bar, resolving one."""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from .. import sweep
from ..core.alerts import rules as alert_rules
from .database import get_db
from ..core.validation import Conflict, NotFound, ValidationError
from . import access
from .forms import message

bp = Blueprint("alerts", __name__)
#: Who deals with alerts: everybody but the clinicians, who only read.
RESOLVERS = ("registrar", "technologist", "radiologist")


@bp.route("/alerts")
@access.allow(*access.STAFF)
def alert_list(status: int = 200) -> Any:
    state = request.args.get("state", sweep.OPEN)
    state = state if state in (sweep.OPEN, sweep.RESOLVED, sweep.CLEARED, "") else sweep.OPEN
    rule = request.args.get("rule", "")
    rule = rule if rule in alert_rules() else ""
    alerts = sweep.list_alerts(get_db(), state=state, rule=rule, before_id=request.args.get("before", type=int))
    details = {a["id"]: json.loads(a["detail"]) for a in alerts}
    return render_template("alerts/list.html", alerts=alerts, details=details, state=state, rule=rule,
                           rules=alert_rules(), more=len(alerts) == sweep.ALERTS_PAGE), status


@bp.route("/alerts/count")
@access.allow(*access.STAFF)
def alert_count() -> Any:
    """The navigation bar's count; htmx asks for it every minute."""
    return render_template("alerts/_count.html", count=sweep.count_open(get_db()))


@bp.route("/alerts/<int:alert_id>/resolve", methods=["POST"])
@access.allow(*RESOLVERS)
def alert_resolve(alert_id: int) -> Any:
    try:
        sweep.resolve(get_db(), access.actor(), alert_id, request.form)
    except NotFound:
        abort(404)
    except (ValidationError, Conflict) as exc:  # shown above the list: the alert may no longer be in it
        flash(message(exc), "error")
        return alert_list(status=400 if isinstance(exc, ValidationError) else 409)
    flash(gettext("Alert resolved."), "success")
    return redirect(url_for("alerts.alert_list"))


@bp.app_context_processor
def _alert_count() -> dict[str, Any]:
    def count() -> int:
        return sweep.count_open(get_db()) if current_user.is_authenticated else 0
    return {"open_alerts_count": count}
