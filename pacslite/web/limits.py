"""How large a request body each route takes, declared on the view and enforced before the
body is read: by the HTTP server (waitress) when the headers arrive, and again by Flask.

Without it, an anonymous ``POST /login`` with a 300 MB body was spooled to disk before it was
refused. A view that takes uploads declares the setting that bounds them with :func:`body`;
every other route takes at most :data:`DEFAULT_BODY_BYTES`.
"""
from __future__ import annotations

from typing import Any, Callable

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException

#: Forms, JSON and htmx requests: a report's text is the largest thing typed.
DEFAULT_BODY_BYTES = 1024 * 1024
#: What multipart/form-data adds around an upload (boundaries, headers, the other fields).
MULTIPART_MARGIN = 64 * 1024


def body(setting: str) -> Callable:
    """The view takes a body of up to ``settings[setting]`` bytes (plus the multipart margin)."""
    def decorate(view: Callable) -> Callable:
        view.body_setting = setting  # type: ignore[attr-defined]
        return view
    return decorate


def _limit_of(app: Flask, view: Any) -> int:
    setting = getattr(view, "body_setting", None)
    return int(app.config[setting]) + MULTIPART_MARGIN if setting else DEFAULT_BODY_BYTES


def body_limit(app: Flask, method: str, path: str) -> int:
    """The largest body the route at ``method path`` takes (unknown routes: the default)."""
    try:
        endpoint, _ = app.url_map.bind("localhost").match(path, method)
    except HTTPException:
        return DEFAULT_BODY_BYTES
    return _limit_of(app, app.view_functions.get(endpoint))


def largest_body(app: Flask) -> int:
    """The largest body any route takes: the HTTP server's own limit."""
    return max(_limit_of(app, view) for view in app.view_functions.values())


def _apply() -> None:
    """before_request: Flask's limit for this request is its route's."""
    request.max_content_length = _limit_of(current_app, current_app.view_functions.get(request.endpoint or ""))


def init_app(app: Flask) -> None:
    app.config["MAX_CONTENT_LENGTH"] = DEFAULT_BODY_BYTES
    app.before_request(_apply)


def bound_waitress(server: Any, app: Flask) -> None:
    """Make waitress refuse (413) a body over its route's limit as soon as the headers are in:
    a declared Content-Length at once, a chunked body when it passes the limit."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.server import BaseWSGIServer
    from waitress.utilities import RequestEntityTooLarge

    class BoundedParser(HTTPRequestParser):
        route_limit: int | None = None

        def received(self, data: bytes) -> int:
            consumed = super().received(data)
            if self.headers_finished and self.error is None and not self.empty:
                if self.route_limit is None:
                    self.route_limit = body_limit(app, self.command, self.path)
                if self.content_length > self.route_limit or self.body_bytes_received > self.route_limit:
                    self.error = RequestEntityTooLarge(f"the body is larger than {self.route_limit} bytes,"
                                                       f" the limit of {self.path}")
                    self.completed = True
            return consumed

    if not isinstance(server, BaseWSGIServer):
        raise TypeError("pacslite listens on one address: expected a single waitress server")
    server.channel_class = type("BoundedChannel", (HTTPChannel,), {"parser_class": BoundedParser})
