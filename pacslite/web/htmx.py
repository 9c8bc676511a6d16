"""htmx requests: a route returns the full page, or its partial (``_name.html``) for htmx."""
from __future__ import annotations

from flask import request


def is_htmx() -> bool:
    """Whether the request came from htmx and wants a partial (not a history restore)."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"
