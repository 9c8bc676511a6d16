"""Log in, log out, choose a language."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext, format_datetime
from flask_login import current_user, login_user, logout_user

from ..ris import users
from .database import get_db
from ..core.validation import ValidationError
from . import access
from .forms import errors_of

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@access.public
def login() -> Any:
    next_url = access.safe_next(request.values.get("next"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("registration.home"))
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        result = users.authenticate(get_db(), username, password, request.remote_addr or "",
                                    current_app.config)
        if result.outcome is users.LoginOutcome.OK:
            session.clear()  # a fresh session: no fixation
            login_user(result.user)
            session.permanent = True
            return redirect(next_url or url_for("registration.home"))
        error = _login_error(result)
    return render_template("login.html", error=error, next=next_url or "")


def _login_error(result: users.LoginResult) -> str:
    if result.outcome is users.LoginOutcome.ACCOUNT_LOCKED:
        return gettext("Too many failed attempts: this account is locked until %(time)s."
                       " An administrator can unlock it by resetting the password.",
                       time=format_datetime(result.locked_until, "HH:mm"))
    if result.outcome is users.LoginOutcome.ADDRESS_LOCKED:
        return gettext("Too many failed attempts from this computer. Wait %(minutes)d minutes and try again.",
                       minutes=current_app.config["LOGIN_LOCK_MINUTES"])
    if result.outcome is users.LoginOutcome.DISABLED:
        return gettext("This account is disabled. Ask an administrator.")
    return gettext("Wrong user name or password.")


@bp.route("/logout", methods=["POST"])
@access.allow(*access.STAFF)
def logout() -> Any:
    users.log_out(get_db(), access.actor(), current_user.id)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@access.allow(*access.STAFF)
def password_change() -> Any:
    """The user's own password: required at the first login after an administrator set it
    (every other page leads here until it is done, see :func:`access.enforce`)."""
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            user = users.change_own_password(get_db(), access.actor(), current_user.id, request.form)
        except ValidationError as exc:
            errors = errors_of(exc)
        else:
            login_user(user)  # the session follows the new token; the other sessions are ended
            flash(gettext("Your password has been changed."), "success")
            return redirect(url_for("registration.home"))
    return render_template("account/password.html", errors=errors, min_length=users.MIN_PASSWORD_LENGTH,
                           required=current_user.must_change_password), (400 if errors else 200)


@bp.route("/language", methods=["POST"])
@access.public
def language() -> Any:
    """Remember the chosen language: in the session, and in the account when logged in."""
    choice = request.form.get("language", "")
    if choice not in users.LANGUAGES:
        abort(400)
    session["language"] = choice
    if current_user.is_authenticated:
        users.set_language(get_db(), access.actor(), current_user.id, choice)
    return redirect(access.safe_next(request.form.get("next")) or url_for("registration.home"))
