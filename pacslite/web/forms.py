"""Small helpers the blueprints share for forms and domain errors."""
from __future__ import annotations

from flask_babel import gettext

from ..validation import Conflict, ValidationError


def message(exc: ValidationError | Conflict) -> str:
    """The domain's English msgid, translated and filled in."""
    return gettext(exc.message, **exc.params)


def errors_of(exc: ValidationError) -> dict[str, str]:
    """The form's error dict ``{field: message}`` for a template."""
    return {exc.field: message(exc)}
