"""Administration: user accounts, the modalities (DICOM AEs, their targets and locations), the
procedure catalogue and the audit log."""
from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext

from ..core import audit, certificates, clock
from ..ris import aes, procedures, users
from ..pacs import arrivals
from .database import get_db
from ..core.validation import Conflict, ValidationError
from . import access, csvout, limits
from .htmx import is_htmx
from .labels import label
from .forms import errors_of, found_or_404, message

bp = Blueprint("admin", __name__, url_prefix="/admin")
ADMIN = ("admin",)


def _user_or_404(user_id: int) -> users.User:
    return found_or_404(users.get, get_db(), user_id)


def _edit_page(user: users.User, values: dict[str, Any] | None = None, errors: dict[str, str] | None = None) -> Any:
    """The user's edit page, with the stored values unless a submitted form is shown again."""
    values = values or {"display_name": user.display_name, "roles": sorted(user.roles), "active": user.active,
                        "can_review": user.can_review, "can_qc": user.can_qc, "department": user.department}
    return render_template("admin/user_edit.html", user=user, values=values, errors=errors or {}, roles=users.ROLES,
                           now=clock.now(), signature=users.signature_of(get_db(), user.username)), \
        (400 if errors else 200)


def _form_data() -> dict[str, Any]:
    form = request.form
    return {"username": form.get("username", ""), "display_name": form.get("display_name", ""),
            "department": form.get("department", ""),
            "password": form.get("password", ""), "roles": form.getlist("roles"), "active": form.get("active") == "on",
            "can_review": form.get("can_review") == "on", "can_qc": form.get("can_qc") == "on"}


@bp.route("/users")
@access.allow(*ADMIN)
def user_list() -> Any:
    return render_template("admin/users.html", users=users.all_users(get_db()), now=clock.now())


@bp.route("/users/new", methods=["GET", "POST"])
@access.allow(*ADMIN)
def user_new() -> Any:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {"roles": [], "active": True}
    if request.method == "POST":
        values = _form_data()
        try:  # the administrator chose the password: its user changes it at the first login
            user = users.create(get_db(), access.actor(), {**values, "must_change_password": True})
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            flash(gettext("User %(name)s created.", name=user.username), "success")
            return redirect(url_for("admin.user_list"))
    return render_template("admin/user_new.html", values=values, errors=errors, roles=users.ROLES), \
        (400 if errors else 200)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@access.allow(*ADMIN)
def user_edit(user_id: int) -> Any:
    user = _user_or_404(user_id)
    if request.method == "GET":
        return _edit_page(user)
    values = _form_data()
    try:
        users.update(get_db(), access.actor(), user_id, values)
    except ValidationError as exc:
        return _edit_page(user, values, errors_of(exc))
    except Conflict as exc:
        return _edit_page(user, values, {"roles": message(exc)})
    flash(gettext("User %(name)s saved.", name=user.username), "success")
    return redirect(url_for("admin.user_list"))


@bp.route("/users/<int:user_id>/signature", methods=["POST"])
@access.allow(*ADMIN)
@limits.body("SIGNATURE_MAX_BYTES")
def user_signature(user_id: int) -> Any:
    """Upload the signature image printed on the reports the user signs (re-encoded, audited)."""
    user = _user_or_404(user_id)
    upload = request.files.get("signature")
    try:
        users.set_signature(get_db(), access.actor(), user_id, upload.read() if upload else b"",
                            current_app.config["SIGNATURE_MAX_BYTES"])
    except ValidationError as exc:
        return _edit_page(user, errors=errors_of(exc))
    flash(gettext("Signature image of %(name)s saved.", name=user.username), "success")
    return redirect(url_for("admin.user_edit", user_id=user_id))


@bp.route("/users/<int:user_id>/signature/remove", methods=["POST"])
@access.allow(*ADMIN)
def user_signature_remove(user_id: int) -> Any:
    user = _user_or_404(user_id)
    users.remove_signature(get_db(), access.actor(), user_id)
    flash(gettext("Signature image of %(name)s removed.", name=user.username), "success")
    return redirect(url_for("admin.user_edit", user_id=user_id))


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@access.allow(*ADMIN)
def user_password(user_id: int) -> Any:
    user = _user_or_404(user_id)
    try:
        users.reset_password(get_db(), access.actor(), user_id, request.form.get("password", ""))
    except ValidationError as exc:
        return _edit_page(user, errors=errors_of(exc))
    flash(gettext("Password of %(name)s reset; the account is unlocked and its sessions are ended.",
                  name=user.username), "success")
    return redirect(url_for("admin.user_list"))


AUDIT_FILTERS = ("actor", "action", "patient_id", "outcome", "since", "until", "day")
#: Rows one CSV export gives at most (newest first; narrow the filters, or page with ``before``).
AUDIT_CSV_ROWS = 50_000


def _audit_query() -> tuple[dict[str, str], dict[str, Any]]:
    """The audit filters as asked (a period from one local day to another, both included; ``day``
    is one day) and the arguments for :func:`audit.search`."""
    filters = {k: request.args.get(k, "").strip()[:64] for k in AUDIT_FILTERS}
    if filters["day"]:
        filters["since"] = filters["until"] = filters["day"]
    filters.pop("day")
    tz = current_app.config["TIMEZONE"]
    bounds = {}
    for key, edge in (("since", 0), ("until", 1)):
        try:
            bounds[key] = clock.local_day_bounds(date.fromisoformat(filters[key]), tz)[edge] if filters[key] else ""
        except ValueError:
            filters[key], bounds[key] = "", ""
    return filters, {"actor": filters["actor"], "action": filters["action"], "patient_id": filters["patient_id"],
                     "outcome": filters["outcome"], **bounds}


@bp.route("/audit")
@access.allow(*ADMIN)
def audit_log() -> Any:
    """The audit log, newest first, 100 a page (keyset on the id: ``before``), filtered."""
    filters, query = _audit_query()
    rows = audit.search(get_db(), **query, before_id=request.args.get("before", type=int), limit=100)
    template = "admin/_audit_rows.html" if is_htmx() else "admin/audit.html"
    return render_template(template, rows=rows, filters=filters)


@bp.route("/audit.csv")
@access.allow(*ADMIN)
def audit_csv() -> Any:
    """The filtered audit log as CSV (cells neutralised against spreadsheet formulas)."""
    filters, query = _audit_query()
    rows = audit.search(get_db(), **query, before_id=request.args.get("before", type=int), limit=AUDIT_CSV_ROWS)
    header = ["id", "at", "actor", "address", "action", "action_text", "target", "patient_id", "outcome", "detail"]
    body = ([r["id"], r["at"], r["actor"], r["address"], r["action"], str(label("audit_action", r["action"])),
             r["target"], r["patient_id"], r["outcome"], r["detail"]] for r in rows)
    return csvout.response([header, *body], "audit.csv")


# ---------------------------------------------------------------- modalities (DICOM AEs)

AE_FORM_FIELDS = ("ae_title", "host", "port", "name", "location", "modality", "charset", "any_host", "also_from",
                  "tls", "certificate")


def _ae_or_404(ae_id: int) -> Any:
    return found_or_404(aes.get_ae_by_id, get_db(), ae_id)


def _ae_form() -> dict[str, Any]:
    values: dict[str, Any] = {k: request.form.get(k, "") for k in AE_FORM_FIELDS}
    if request.form.get("rights_given"):  # the form's checkboxes (none ticked: no rights)
        values["rights"] = request.form.getlist("rights")
    return values  # the one-click "add" of a refused caller has none: a modality's rights


def _ae_page(template: str, values: dict[str, Any], errors: dict[str, str], **extra: Any) -> Any:
    return render_template(template, values=values, errors=errors, **extra), \
        (400 if errors else 200)


@bp.route("/aes/<int:ae_id>/echo", methods=["POST"])
@access.allow(*ADMIN)
def ae_echo(ae_id: int) -> Any:
    """Test a configured AE with a C-ECHO from pacslite's own AE title; the result is shown and
    audited. Only the server process (app.py) can send one."""
    ae = found_or_404(aes.get_ae_by_id, get_db(), ae_id)
    echo = current_app.extensions.get("dicom_echo")
    if echo is None:
        flash(gettext("A C-ECHO can only be sent by the running server."), "error")
        return redirect(url_for("admin.ae_list"))
    started = time.perf_counter()
    try:
        status, error = echo(current_app.config, ae)
    except Exception as exc:  # a name that does not resolve, a refused socket: said, not raised
        status, error = None, str(exc)[:200]
    milliseconds = (time.perf_counter() - started) * 1000
    aes.record_echo(get_db(), access.actor(), ae, status, error, milliseconds)
    if status == 0:
        flash(gettext("C-ECHO to %(ae)s (%(host)s:%(port)s) answered in %(ms)d ms.", ae=ae["ae_title"],
                      host=ae["host"], port=ae["port"], ms=milliseconds), "success")
    else:
        reasons = {"rejected": gettext("the AE rejected the association"),
                   "unreachable": gettext("nothing answered at this host and port"),
                   "no_answer": gettext("no answer to the C-ECHO")}
        why = reasons.get(error, error) if error else gettext("status 0x%(status)04X", status=status or 0)
        flash(gettext("C-ECHO to %(ae)s (%(host)s:%(port)s) failed: %(why)s", ae=ae["ae_title"], host=ae["host"],
                      port=ae["port"], why=why), "error")
    return redirect(url_for("admin.ae_list"))


@bp.route("/modalities")
@access.allow(*ADMIN)
def ae_list() -> Any:
    conn = get_db()
    configured = aes.list_aes(conn)
    return _modalities_page(configured)


def _modalities_page(configured: list[Any], target_errors: dict[str, dict[str, str]] | None = None,
                     target_values: dict[str, Any] | None = None) -> Any:
    conn = get_db()
    targets = procedures.modality_targets(conn, current_app.config)
    for item in targets:  # a rejected row shows what was typed
        if target_values and item["code"] == target_values["code"]:
            item.update(target_values)
    return render_template("admin/modalities.html", aes=configured, rejections=aes.list_rejections(conn),
                           any_host=aes.accepts_any_host, tls_fingerprint=_tls_fingerprint(),
                           refused_services=aes.list_refused_contexts(conn), others=aes.OTHERS,
                           last_images=arrivals.last_image_at(conn, [a["ae_title"] for a in configured]),
                           targets=targets, target_errors=target_errors or {}), (400 if target_errors else 200)


def _tls_fingerprint() -> str:
    """pacslite's TLS certificate's fingerprint, for the modalities that pin it ('' before it is made)."""
    try:
        return certificates.fingerprint(Path(current_app.config["DICOM_TLS_CERTIFICATE"]))
    except (OSError, ValueError):
        return ""


@bp.route("/modalities/targets/<modality>", methods=["POST"])
@access.allow(*ADMIN)
def modality_target(modality: str) -> Any:
    """A modality's report target and location (for exams registered from now on)."""
    values = {"turnaround_hours": request.form.get("turnaround_hours", ""),
              "location": request.form.get("location", "")}
    try:
        found_or_404(procedures.set_modality_setting, get_db(), access.actor(), current_app.config, modality,
                     values)
    except ValidationError as exc:
        return _modalities_page(aes.list_aes(get_db()), {modality: errors_of(exc)}, {**values, "code": modality})
    flash(gettext("Report target and location of %(modality)s saved.", modality=modality), "success")
    return redirect(url_for("admin.ae_list"))


@bp.route("/modalities/new", methods=["GET", "POST"])
@access.allow(*ADMIN)
def ae_new() -> Any:
    """The add form; also the one-click "add" of a refused caller (its values come with the POST)."""
    values: dict[str, Any] = {"port": 104, "charset": aes.CHARSETS[0], "rights": list(aes.MODALITY_RIGHTS)}
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = _ae_form()
        try:
            ae = aes.add_ae(get_db(), access.actor(), values)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            flash(gettext("%(ae)s added: it may now connect for what it may use.", ae=ae["ae_title"]), "success")
            return redirect(url_for("admin.ae_list"))
    return _ae_page("admin/modality_form.html", values, errors, ae=None)


@bp.route("/modalities/<int:ae_id>", methods=["GET", "POST"])
@access.allow(*ADMIN)
def ae_edit(ae_id: int) -> Any:
    ae = _ae_or_404(ae_id)
    if request.method == "GET":
        return _ae_page("admin/modality_form.html", dict(ae), {}, ae=ae)
    values = {**_ae_form(), "ae_title": ae["ae_title"]}
    try:
        aes.update_ae(get_db(), access.actor(), ae["ae_title"], values)
    except ValidationError as exc:
        return _ae_page("admin/modality_form.html", values, errors_of(exc), ae=ae)
    flash(gettext("Modality %(ae)s saved.", ae=ae["ae_title"]), "success")
    return redirect(url_for("admin.ae_list"))


@bp.route("/modalities/<int:ae_id>/remove", methods=["POST"])
@access.allow(*ADMIN)
def ae_remove(ae_id: int) -> Any:
    ae = _ae_or_404(ae_id)
    aes.remove_ae(get_db(), access.actor(), ae["ae_title"])
    flash(gettext("Modality %(ae)s removed: its associations are refused from now on.", ae=ae["ae_title"]), "success")
    return redirect(url_for("admin.ae_list"))


# ---------------------------------------------------------------- the procedure catalogue

def _procedure_form() -> dict[str, Any]:
    return {f: request.form.get(f, "") for f in procedures.FIELDS}


def _procedure_page(values: dict[str, Any], errors: dict[str, str], procedure: Any = None) -> Any:
    stations = {m["code"]: procedures.station_titles(get_db(), current_app.config, m["code"])
                for m in current_app.config["MODALITIES"]}
    return render_template("admin/procedure_form.html", values=values, errors=errors, procedure=procedure,
                           stations=stations), (400 if errors else 200)


@bp.route("/procedures")
@access.allow(*ADMIN)
def procedure_list() -> Any:
    modality = request.args.get("modality", "")
    return render_template("admin/procedures.html", modality=modality,
                           catalogue=procedures.list_procedures(get_db(), modality), limit=procedures.LIST_LIMIT)


@bp.route("/procedures/new", methods=["GET", "POST"])
@access.allow(*ADMIN)
def procedure_new() -> Any:
    if request.method == "GET":
        return _procedure_page({"modality": request.args.get("modality", "")}, {})
    values = _procedure_form()
    try:
        added = procedures.add_procedure(get_db(), access.actor(), current_app.config, values)
    except ValidationError as exc:
        return _procedure_page(values, errors_of(exc))
    flash(gettext("Procedure %(code)s added.", code=added["code"]), "success")
    return redirect(url_for("admin.procedure_list", modality=added["modality"]))


@bp.route("/procedures/<procedure_code>", methods=["GET", "POST"])
@access.allow(*ADMIN)
def procedure_edit(procedure_code: str) -> Any:
    procedure = found_or_404(procedures.get_procedure, get_db(), procedure_code)
    if request.method == "GET":
        return _procedure_page({f: "" if procedure[f] is None else procedure[f] for f in procedures.FIELDS}, {},
                               procedure)
    values = {**_procedure_form(), "code": procedure_code}
    try:
        procedures.update_procedure(get_db(), access.actor(), current_app.config, procedure_code, values)
    except ValidationError as exc:
        return _procedure_page(values, errors_of(exc), procedure)
    flash(gettext("Procedure %(code)s saved.", code=procedure_code), "success")
    return redirect(url_for("admin.procedure_list", modality=procedure["modality"]))


@bp.route("/procedures/<procedure_code>/active", methods=["POST"])
@access.allow(*ADMIN)
def procedure_active(procedure_code: str) -> Any:
    """Retire a procedure (the desk no longer offers it; exams keep it) or bring it back."""
    procedure = found_or_404(procedures.get_procedure, get_db(), procedure_code)
    active = request.form.get("active") == "1"
    procedures.set_active(get_db(), access.actor(), procedure_code, active)
    flash(gettext("Procedure %(code)s is offered again.", code=procedure_code) if active else
          gettext("Procedure %(code)s retired: the desk no longer offers it.", code=procedure_code), "success")
    return redirect(url_for("admin.procedure_list", modality=procedure["modality"]))
