"""Small helpers the blueprints share for forms and domain errors."""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from flask import abort
from flask_babel import gettext

from ..core.validation import Conflict, FormErrors, NotFound, ValidationError

T = TypeVar("T")


def found_or_404(lookup: Callable[..., T], *args: Any) -> T:
    """``lookup(*args)``, or a 404 page when the domain says it does not exist."""
    try:
        return lookup(*args)
    except NotFound:
        abort(404)


def message(exc: ValidationError | Conflict) -> str:
    """The domain's English msgid, translated and filled in. A parameter that is itself a domain
    error (a file's row and what is wrong with it) is translated too."""
    return _translated(exc.message, exc.params)


def _translated(text: str, params: Mapping[str, Any]) -> str:
    return gettext(text, **{name: message(value) if isinstance(value, (ValidationError, Conflict)) else value
                            for name, value in params.items()})


def errors_of(exc: ValidationError) -> dict[str, str]:
    """The form's error dict ``{field: message}`` for a template (every field of FormErrors)."""
    if isinstance(exc, FormErrors):
        return {field: _translated(text, params) for field, (text, params) in exc.problems.items()}
    return {exc.field: message(exc)}
