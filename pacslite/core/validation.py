"""Validation shared by the pages, the API and the command line.

Domain functions raise :class:`ValidationError` naming the field; the message is an English
msgid marked with :func:`N_` so that the web layer can translate it for the user's language.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable, Mapping


# DICOM AE title: up to 16 printable ASCII characters, no backslash.
AE_TITLE_PATTERN = r"[ -\[\]-~]{1,16}"


def N_(message: str) -> str:
    """Mark a message for translation without translating it here (the domain has no locale)."""
    return message


class ValidationError(ValueError):
    def __init__(self, field: str, message: str, **params: Any) -> None:
        super().__init__(f"{field}: {message % params if params else message}")
        self.field = field
        self.message = message
        self.params = params


class FormErrors(ValidationError):
    """Several fields are wrong at once, each reported under its field:
    ``problems`` is {field: (message, params)}; the first is the ValidationError's own."""

    def __init__(self, problems: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        field, (message, params) = next(iter(problems.items()))
        super().__init__(field, message, **params)
        self.problems = dict(problems)


class NotFound(LookupError):
    """The thing asked for does not exist."""


class Conflict(Exception):
    """The request is valid but the current state does not allow it."""

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.message = message
        self.params = params


def collect(checks: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run each field's check; the values by field, or FormErrors with every field that failed
    (a form shows all its errors at once, each under its field)."""
    values: dict[str, Any] = {}
    problems: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for field, check in checks.items():
        try:
            values[field] = check()
        except FormErrors as exc:
            problems.update(exc.problems)
        except ValidationError as exc:
            problems[exc.field] = (exc.message, exc.params)
    if problems:
        raise FormErrors(problems)
    return values


def text(data: Mapping[str, Any], field: str, *, required: bool = False, max_length: int = 64,
         multiline: bool = False) -> str:
    """A stripped string from ``data``; refuses control characters and over-long values."""
    raw = data.get(field)
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ValidationError(field, N_("Must be text."))
    value = raw.strip()
    if multiline:
        value = value.replace("\r\n", "\n")
    if required and not value:
        raise ValidationError(field, N_("This field is required."))
    if len(value) > max_length:
        raise ValidationError(field, N_("At most %(max)d characters."), max=max_length)
    allowed = "\n\t" if multiline else ""
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
        raise ValidationError(field, N_("Control characters are not allowed."))
    return value


def choice(data: Mapping[str, Any], field: str, options: tuple[str, ...] | list[str], *,
           required: bool = True, default: str = "") -> str:
    value = text(data, field, required=required) or default
    if value and value not in options:
        raise ValidationError(field, N_("Not one of the allowed values."))
    return value


def hours(data: Mapping[str, Any], field: str, *, maximum: float = 720) -> float | None:
    """An optional number of hours (a report target): None when blank, else more than 0 and at
    most ``maximum``."""
    value = text(data, field, max_length=16)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValidationError(field, N_("A number of hours, such as 2 or 0.5.")) from None
    if not 0 < number <= maximum:
        raise ValidationError(field, N_("More than 0 and at most %(max)d hours."), max=maximum)
    return number


def matches(value: str, field: str, pattern: str, message: str) -> str:
    if value and not re.fullmatch(pattern, value):
        raise ValidationError(field, message)
    return value
