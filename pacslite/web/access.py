"""Who may use which route. Enforced in one place, before every request, and closed by default.

A view declares its access with :func:`allow` (roles, the web session), :func:`api` (roles,
bearer token only), :func:`session_or_token` (roles, either: DICOMweb, used by browsers and by
programs) or :func:`public`. A view that declares nothing is refused to everybody, so a
forgotten check fails safe. Admin may do everything any role may.
"""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, jsonify, redirect, request, url_for
from flask_login import current_user

from ..core import audit
from ..ris import users
from ..core.db import transaction
from .database import get_db

STAFF = users.ROLES
#: Who sees (and, later, re-files) images that were not filed: the technologists and admins.
IMAGE_CONTROL = ("technologist", "admin")
PUBLIC = "public"
#: How a view's user proves who they are.
SESSION, TOKEN, EITHER = "session", "token", "either"
#: Paths where a bearer token is taken (everywhere else only the session cookie).
TOKEN_PATHS = ("/api/", "/dicom-web/", "/wado")


def allow(*roles: str) -> Callable:
    """The page may be used by a logged-in user holding one of ``roles`` (or admin)."""
    return _declare(frozenset(roles), SESSION)


def api(*roles: str) -> Callable:
    """The JSON endpoint may be used with a bearer token of a user holding one of ``roles``."""
    return _declare(frozenset(roles), TOKEN)


def session_or_token(*roles: str) -> Callable:
    """The endpoint may be used with the web session or a bearer token of a user holding one
    of ``roles``; it answers 401 and 403 itself, never with the login page."""
    return _declare(frozenset(roles), EITHER)


def public(view: Callable) -> Callable:
    view.access = PUBLIC
    return view


def _declare(roles: frozenset[str], credentials: str) -> Callable:
    unknown = roles - set(users.ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    def decorate(view: Callable) -> Callable:
        view.access = roles
        view.credentials = credentials
        return view
    return decorate


def actor() -> audit.Actor:
    """The audit actor of the current request."""
    name = current_user.username if current_user.is_authenticated else "anonymous"
    return audit.Actor(name, request.remote_addr or "")


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def takes_token() -> bool:
    """Whether the path takes a bearer token (the API and DICOMweb); their errors go as JSON."""
    return request.path.startswith(TOKEN_PATHS)


def enforce() -> Any:
    """before_request: refuse the request unless the view's declaration lets this user in."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or request.endpoint == "static":
        return None
    access = getattr(view, "access", None)
    if access == PUBLIC:
        return None
    credentials = getattr(view, "credentials", SESSION)
    if not current_user.is_authenticated or (credentials == TOKEN and g.get("auth_via") != "token"):
        return _unauthenticated(api_call=credentials != SESSION)
    if access is None or not current_user.has_any(access):
        _audit_denied()
        if credentials != SESSION:
            return jsonify(error="forbidden", field=None), 403
        abort(403)
    if current_user.must_change_password and g.get("auth_via") != "token" and request.endpoint not in PASSWORD_FIRST:
        return _password_first()
    return None


#: What a user whose password an administrator set may still do before changing it.
PASSWORD_FIRST = ("auth.password_change", "auth.logout")


def _password_first() -> Any:
    """An administrator set this user's password: every page leads to changing it first."""
    return _send_to(url_for("auth.password_change"))


def _send_to(target: str) -> Any:
    """A redirect that htmx follows too (an htmx request would swap the page into a fragment)."""
    if request.headers.get("HX-Request"):
        return "", 401, {"HX-Redirect": target}
    return redirect(target)


def _unauthenticated(api_call: bool) -> Any:
    if api_call:
        return (jsonify(error="authentication required: send 'Authorization: Bearer <token>'", field=None), 401,
                {"WWW-Authenticate": 'Bearer realm="pacslite"'})
    return _send_to(url_for("auth.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))


def _audit_denied() -> None:
    conn = get_db()
    with transaction(conn):
        audit.record(conn, actor(), "access.denied", f"{request.method} {request.path}"[:200], outcome="denied",
                     detail={"endpoint": request.endpoint, "roles": sorted(current_user.roles)})


def load_token_user(_request: Any = None) -> users.User | None:
    """Flask-Login request loader: a bearer token, accepted on the JSON API and DICOMweb only."""
    if not takes_token():
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    user = users.user_for_token(get_db(), token.strip())
    if user is not None:
        g.auth_via = "token"
    return user


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: no open redirect through ``next``."""
    if not target or "\\" in target or any(ch in target for ch in "\r\n\t"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def security_headers(response: Any) -> Any:
    """after_request: CSP without inline script, no sniffing, no framing by other sites."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none';"
        " frame-ancestors 'self'; base-uri 'self'; form-action 'self'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.before_request(enforce)
    app.after_request(security_headers)
