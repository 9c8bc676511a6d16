"""Languages (zh_CN, en) and time zones, through Flask-Babel.

The catalogue source is ``pacslite/translations/<lang>/LC_MESSAGES/messages.po``; it is compiled
into the instance folder at start-up, so there is no build step to forget.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, request, session
from flask_babel import Babel, format_datetime, format_decimal, format_percent, gettext
from flask_login import current_user

from ..core import clock
from ..ris.users import LANGUAGES

SOURCE = Path(__file__).resolve().parent.parent / "translations"


def compile_catalogues(target: Path) -> None:
    """Compile every .po under SOURCE into ``target`` (atomically, so readers never see half)."""
    for po_path in SOURCE.glob("*/LC_MESSAGES/messages.po"):
        # Babel looks for zh_CN under its full name, zh_Hans_CN.
        language = str(Locale.parse(po_path.parent.parent.name))
        out = target / language / "LC_MESSAGES" / "messages.mo"
        out.parent.mkdir(parents=True, exist_ok=True)
        with po_path.open("rb") as handle:
            catalog = read_po(handle)
        tmp = out.with_suffix(f".mo.{os.getpid()}")
        with tmp.open("wb") as handle:
            write_mo(handle, catalog)
        os.replace(tmp, out)


def select_locale() -> str:
    if current_user and current_user.is_authenticated and current_user.language in LANGUAGES:
        return current_user.language
    if session.get("language") in LANGUAGES:
        return session["language"]
    best = request.accept_languages.best_match(["zh_CN", "zh", "en"])
    if best == "zh":
        return "zh_CN"
    return best or current_app.config["DEFAULT_LANGUAGE"]


def select_timezone() -> str:
    return current_app.config["TIMEZONE"]


def localtime(value: str | None, fmt: str = "yyyy-MM-dd HH:mm") -> str:
    """A stored UTC time shown in the department's time zone."""
    moment = clock.from_db(value) if isinstance(value, str) else value
    return format_datetime(moment, fmt) if moment else ""


def dicom_datetime(value: str | None) -> str:
    """A DICOM date and time as a modality sent it (its own clock, no zone): 2026-11-29 10:30;
    a value that is not one is shown as it came (a quarantined header's typo stays visible)."""
    digits = "".join(c for c in (value or "") if c.isdigit())
    if len(digits) < 8:
        return value or ""
    shown = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
    return f"{shown} {digits[8:10]}:{digits[10:12]}" if len(digits) >= 12 else shown


def duration(value: timedelta) -> str:
    """A waiting time in hours and minutes (days past two days)."""
    minutes = max(int(value.total_seconds() // 60), 0)
    if minutes >= 48 * 60:
        return gettext("%(d)d d %(h)d h", d=minutes // 1440, h=minutes % 1440 // 60)
    return gettext("%(h)d h %(m)02d min", h=minutes // 60, m=minutes % 60)


def percent(value: float | None) -> str:
    """A rate as a percentage with two decimals (99.99 %), or a dash when there is none."""
    return "—" if value is None else format_percent(value, "#,##0.00%")


def hours(value: float | None) -> str:
    return "—" if value is None else gettext("%(h)s h", h=format_decimal(value, "#,##0.0"))


def filesize(value: float) -> str:
    """Bytes as B, KB, MB, GB or TB (powers of 1024), one decimal."""
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{format_decimal(size, '#,##0.#')} {unit}"
        size /= 1024
    return f"{format_decimal(size, '#,##0.#')} TB"


def init_app(app: Flask) -> None:
    translations = Path(app.instance_path) / "translations"
    compile_catalogues(translations)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(translations)
    app.config["BABEL_DEFAULT_TIMEZONE"] = app.config["TIMEZONE"]
    app.config["BABEL_DEFAULT_LOCALE"] = app.config["DEFAULT_LANGUAGE"]
    Babel(app, locale_selector=select_locale, timezone_selector=select_timezone)
    app.jinja_env.filters["localtime"] = localtime
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.filters["dicom_datetime"] = dicom_datetime
    app.jinja_env.filters["percent"] = percent
    app.jinja_env.filters["hours"] = hours
    app.jinja_env.filters["filesize"] = filesize
