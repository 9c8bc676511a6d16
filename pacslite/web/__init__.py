"""Flask blueprints and what they share. Never imports pynetdicom."""
from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template
from flask_babel import get_locale, gettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..core.names import readable_person_name
from ..ris import procedures, receipts, users
from . import (access, admin, alerts, api, archive, audit_text, auth, booking, critical, dicomweb, films, i18n, identity,
               images, imports, interfaces, keys, limits, ohif, pickup, proxies, qc_pages, quality_pages, queue,
               quarantine, registration, report_templates, reports, routing, stats, workflow)
from .database import close_db, get_db
from .extensions import csrf, login_manager
from .htmx import is_htmx
from .labels import dicom_sex, label, options, person, uid_name


@login_manager.user_loader
def _load_session_user(token: str) -> users.User | None:
    if access.is_api_request():  # the API takes bearer tokens only, never the session cookie
        return None
    return users.by_session_token(get_db(), token)


login_manager.request_loader(access.load_token_user)


def init_app(app: Flask) -> None:
    i18n.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "basic"
    app.teardown_appcontext(close_db)
    limits.init_app(app)  # first: nothing may read a body before its limit is set
    access.init_app(app)  # before CSRF: a denied request is refused (and audited) as denied
    csrf.init_app(app)
    for blueprint in (auth.bp, registration.bp, reports.bp, critical.bp, images.bp, imports.bp, quarantine.bp,
                      alerts.bp, stats.bp, archive.bp, admin.bp, identity.bp, interfaces.bp, routing.bp, workflow.bp,
                      booking.bp, queue.bp, films.bp, pickup.bp, report_templates.bp, keys.bp, quality_pages.bp, qc_pages.bp, api.bp, dicomweb.bp, ohif.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(api.bp)  # bearer tokens only, no cookies: nothing for a forged request to ride on
    csrf.exempt(dicomweb.bp)  # STOW checks the CSRF header itself when it rides on the session
    app.jinja_env.globals.update(label=label, options=options, uid_name=uid_name, is_htmx=is_htmx,
                                 current_locale=lambda: "zh_CN" if get_locale().language == "zh" else "en",
                                 modalities=lambda: app.config["MODALITIES"], ohif_available=ohif.available,
                                 ohif_url=ohif.study_url,
                                 exam_age=lambda exam: receipts.age_at_exam(exam, app.config),
                                 sex_and_age=lambda exam: _sex_and_age(exam, app.config),
                                 modality_options=lambda: [(m["code"], m["code"]) for m in app.config["MODALITIES"]],
                                 procedure_name=lambda p: procedures.name_in(p, get_locale().language),
                                 audit_lines=audit_text.describe)
    app.jinja_env.filters["person"] = person
    app.jinja_env.filters.update(dicom_person=readable_person_name, dicom_sex=dicom_sex)
    app.wsgi_app = proxies.TrustedProxies(app.wsgi_app, app.config["TRUSTED_PROXIES"])  # type: ignore[method-assign]
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CSRFError, _csrf_error)


def _sex_and_age(exam: Any, settings: Any) -> str:
    """"Male · 46 y": the sex and the age at the exam, for long lists (a macro per row costs)."""
    age = receipts.age_at_exam(exam, settings)
    return f"{label('sex', exam['sex'])} · {label('age_unit', age.unit) % {'n': age.value} if age else '—'}"


def _http_error(exc: HTTPException) -> Any:
    if access.takes_token():
        return jsonify(error=exc.description or exc.name, field=None), exc.code
    messages = {
        403: gettext("You do not have permission to open this page."),
        404: gettext("This page does not exist."),
        405: gettext("This action is not available here."),
        413: gettext("The upload is too large."),
    }
    message = messages.get(exc.code or 500, gettext("The request could not be handled."))
    return render_template("error.html", code=exc.code, message=message), exc.code


def _csrf_error(_exc: CSRFError) -> Any:
    message = gettext("The form has expired or did not come from pacslite. Reload the page and try again.")
    return render_template("error.html", code=400, message=message), 400
