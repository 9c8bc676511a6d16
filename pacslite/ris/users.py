"""People: accounts, roles, logins with throttling, API tokens.

A user may hold several roles; ``admin`` may do everything the other roles may.
Passwords are hashed by werkzeug; API tokens are stored as SHA-256 hashes only.
"""
from __future__ import annotations

import hashlib
import io
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Iterable, Mapping

from PIL import Image, UnidentifiedImageError
from werkzeug.security import check_password_hash, generate_password_hash

from ..core import audit, clock
from ..core.db import transaction
from ..core.validation import N_, Conflict, FormErrors, NotFound, ValidationError, matches, text

ROLES = ("registrar", "technologist", "radiologist", "clinician", "admin")
LANGUAGES = ("zh_CN", "en")
MIN_PASSWORD_LENGTH = 8
USERNAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{1,31}"
# Checked when the user name is unknown, so that a failed login takes as long either way.
_DUMMY_HASH = generate_password_hash("pacslite-timing-equaliser")


@dataclass(frozen=True)
class User:
    """An account as the rest of pacslite sees it (also Flask-Login's user object)."""

    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    active: bool
    language: str | None
    session_token: str
    locked_until: datetime | None = None
    can_review: bool = False  # may review another radiologist's report and issue it final (审核)
    can_qc: bool = False  # may sample and score final reports (报告质控)
    department: str = ""  # a clinician's ward or clinic: the critical findings it receives
    must_change_password: bool = False  # an administrator set the password: changed at the next login
    is_authenticated: bool = field(default=True, init=False)
    is_anonymous: bool = field(default=False, init=False)

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        # The session refers to a token that changes on password reset and disable.
        return self.session_token

    def has_any(self, roles: Iterable[str]) -> bool:
        """Whether the user may act in one of ``roles``; admin may act in all."""
        return "admin" in self.roles or bool(self.roles.intersection(roles))

    @property
    def label(self) -> str:
        return self.display_name or self.username


class LoginOutcome(Enum):
    OK = "ok"
    INVALID = "invalid"
    ACCOUNT_LOCKED = "account_locked"
    ADDRESS_LOCKED = "address_locked"
    DISABLED = "disabled"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None = None
    locked_until: datetime | None = None


def _user_from_row(conn: sqlite3.Connection, row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    roles = frozenset(r[0] for r in conn.execute("SELECT role FROM user_roles WHERE user_id = ?", (row["id"],)))
    return User(id=row["id"], username=row["username"], display_name=row["display_name"], roles=roles,
                active=bool(row["active"]), language=row["language"], session_token=row["session_token"],
                locked_until=clock.from_db(row["locked_until"]), can_review=bool(row["can_review"]),
                can_qc=bool(row["can_qc"]),
                department=row["department"], must_change_password=bool(row["must_change_password"]))


def get(conn: sqlite3.Connection, user_id: int) -> User:
    user = _user_from_row(conn, conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
    if user is None:
        raise NotFound(f"user {user_id}")
    return user


def by_username(conn: sqlite3.Connection, username: str) -> User | None:
    return _user_from_row(conn, conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone())


def display_names(conn: sqlite3.Connection, usernames: Iterable[str]) -> dict[str, str]:
    """{login name: the name to show}: the display name, or the login name when there is none.
    Printed reports name people this way, never by login."""
    wanted = sorted({u for u in usernames if u})
    found = {u: u for u in wanted}
    for at in range(0, len(wanted), 500):
        chunk = wanted[at:at + 500]
        for row in conn.execute(f"SELECT username, display_name FROM users WHERE username IN"
                                f" ({', '.join('?' * len(chunk))})", chunk):
            found[row["username"]] = row["display_name"] or row["username"]
    return found


def by_session_token(conn: sqlite3.Connection, token: str) -> User | None:
    """The active user a session refers to; None once the token was rotated or the user disabled."""
    row = conn.execute("SELECT * FROM users WHERE session_token = ? AND active = 1", (token,)).fetchone()
    return _user_from_row(conn, row)


def all_users(conn: sqlite3.Connection) -> list[User]:
    rows = conn.execute("SELECT * FROM users ORDER BY username").fetchall()
    return [u for u in (_user_from_row(conn, r) for r in rows) if u is not None]


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def _clean_roles(roles: Iterable[str]) -> list[str]:
    cleaned = sorted(set(roles))
    if not cleaned:
        raise ValidationError("roles", N_("Choose at least one role."))
    if any(role not in ROLES for role in cleaned):
        raise ValidationError("roles", N_("Not one of the allowed values."))
    return cleaned


def password_problem(password: Any, username: str = "") -> tuple[str, dict[str, Any]] | None:
    """What is wrong with ``password`` as a new password (a message and its parameters), or
    None: at least MIN_PASSWORD_LENGTH characters, at most 256, not containing the user name."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        return N_("At least %(min)d characters."), {"min": MIN_PASSWORD_LENGTH}
    if len(password) > 256:
        return N_("At most %(max)d characters."), {"max": 256}
    if username and username.casefold() in password.casefold():
        return N_("The password must not contain the user name."), {}
    return None


def _check_password(password: Any, username: str = "", field: str = "password") -> str:
    problem = password_problem(password, username)
    if problem is not None:
        raise ValidationError(field, problem[0], **problem[1])
    return password


def create(conn: sqlite3.Connection, actor: audit.Actor, data: Mapping[str, Any]) -> User:
    """Create an account from ``username``, ``display_name``, ``password``, ``roles`` (and
    optionally ``can_review``, ``can_qc``, ``department`` and ``must_change_password``: an administrator
    chose the password, so its user changes it at the first login)."""
    username = matches(text(data, "username", required=True, max_length=32), "username", USERNAME_PATTERN,
                       N_("2 to 32 letters, digits, dots, dashes or underscores."))
    display_name = text(data, "display_name", max_length=64)
    password = _check_password(data.get("password"), username)
    roles = _clean_roles(data.get("roles") or [])
    can_review, can_qc = bool(data.get("can_review")), bool(data.get("can_qc"))
    department = text(data, "department", max_length=64)
    must_change = bool(data.get("must_change_password"))
    now = clock.to_db(clock.now())
    with transaction(conn):
        if by_username(conn, username) is not None:
            raise ValidationError("username", N_("This user name is taken."))
        cur = conn.execute(
            "INSERT INTO users (username, display_name, password_hash, session_token, created_at, updated_at,"
            " can_review, can_qc, department, must_change_password) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (username, display_name, generate_password_hash(password), secrets.token_urlsafe(24), now, now,
             int(can_review), int(can_qc), department, int(must_change)))
        user_id = int(cur.lastrowid)
        conn.executemany("INSERT INTO user_roles (user_id, role) VALUES (?, ?)", [(user_id, r) for r in roles])
        audit.record(conn, actor, "user.create", f"user:{username}", detail={
            "roles": roles, "can_review": can_review, "can_qc": can_qc, "department": department,
            "must_change_password": must_change})
    return get(conn, user_id)


def update(conn: sqlite3.Connection, actor: audit.Actor, user_id: int, data: Mapping[str, Any]) -> User:
    """Change display name, department, roles and active flag; disabling ends the user's sessions."""
    display_name = text(data, "display_name", max_length=64)
    department = text(data, "department", max_length=64)
    roles = _clean_roles(data.get("roles") or [])
    active = bool(data.get("active"))
    can_review, can_qc = bool(data.get("can_review")), bool(data.get("can_qc"))
    with transaction(conn):
        before = get(conn, user_id)
        if before.username == actor.name and (not active or "admin" not in roles) and "admin" in before.roles:
            raise Conflict(N_("You cannot remove your own administrator access."))
        token = before.session_token if active else secrets.token_urlsafe(24)
        conn.execute("UPDATE users SET display_name = ?, active = ?, session_token = ?, updated_at = ?, can_review = ?,"
                     " can_qc = ?, department = ? WHERE id = ?",
                     (display_name, int(active), token, clock.to_db(clock.now()), int(can_review), int(can_qc),
                      department, user_id))
        conn.execute("DELETE FROM user_roles WHERE user_id = ?", (user_id,))
        conn.executemany("INSERT INTO user_roles (user_id, role) VALUES (?, ?)", [(user_id, r) for r in roles])
        audit.record(conn, actor, "user.update", f"user:{before.username}", detail={
            "before": {"display_name": before.display_name, "roles": sorted(before.roles), "active": before.active,
                       "can_review": before.can_review, "can_qc": before.can_qc, "department": before.department},
            "after": {"display_name": display_name, "roles": roles, "active": active, "can_review": can_review,
                      "can_qc": can_qc, "department": department}})
    return get(conn, user_id)


#: The largest signature image kept (re-encoded as a PNG).
SIGNATURE_BOX = (600, 200)


def set_signature(conn: sqlite3.Connection, actor: audit.Actor, user_id: int, data: bytes, max_bytes: int) -> None:
    """Keep the user's signature image, printed on the reports they sign: a PNG or JPEG of up
    to ``max_bytes``, decoded whole and re-encoded as a PNG of at most 600×200 pixels (nothing
    of the upload but its pixels is kept)."""
    if not data:
        raise ValidationError("signature", N_("Choose a file."))
    if len(data) > max_bytes:
        raise ValidationError("signature", N_("The file is larger than %(max)d MB."), max=max(1, max_bytes // (1024 * 1024)))
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG") or image.width * image.height > 25_000_000:
                raise ValidationError("signature", N_("Only a PNG or JPEG image is accepted, and this file is not one."))
            image.load()
            picture = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ValidationError("signature", N_("Only a PNG or JPEG image is accepted, and this file is not one.")) from None
    picture.thumbnail(SIGNATURE_BOX)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    png = out.getvalue()
    digest = hashlib.sha256(png).hexdigest()
    with transaction(conn):
        user = get(conn, user_id)
        conn.execute("INSERT INTO user_signatures (user_id, png, sha256, uploaded_at, uploaded_by)"
                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET png = excluded.png,"
                     " sha256 = excluded.sha256, uploaded_at = excluded.uploaded_at, uploaded_by = excluded.uploaded_by",
                     (user_id, png, digest, clock.to_db(clock.now()), actor.name))
        audit.record(conn, actor, "user.signature", f"user:{user.username}",
                     detail={"sha256": digest, "width": picture.width, "height": picture.height})


def remove_signature(conn: sqlite3.Connection, actor: audit.Actor, user_id: int) -> None:
    with transaction(conn):
        user = get(conn, user_id)
        if conn.execute("DELETE FROM user_signatures WHERE user_id = ?", (user_id,)).rowcount:
            audit.record(conn, actor, "user.signature_remove", f"user:{user.username}")


def signature_of(conn: sqlite3.Connection, username: str) -> sqlite3.Row | None:
    """The user's signature image (``png``, ``sha256``), or None."""
    return conn.execute("SELECT s.png, s.sha256 FROM user_signatures s JOIN users u ON u.id = s.user_id"
                        " WHERE u.username = ?", (username,)).fetchone()


def with_signature(conn: sqlite3.Connection, usernames: Iterable[str]) -> set[str]:
    """Which of these users have a signature image."""
    wanted = sorted({u for u in usernames if u})
    if not wanted:
        return set()
    return {r[0] for r in conn.execute(f"SELECT u.username FROM users u JOIN user_signatures s ON s.user_id = u.id"
                                       f" WHERE u.username IN ({', '.join('?' * len(wanted))})", wanted)}


def reset_password(conn: sqlite3.Connection, actor: audit.Actor, user_id: int, password: Any) -> None:
    """An administrator sets a new password: the account is unlocked, its sessions end, and its
    user must change the password at the next login."""
    with transaction(conn):
        user = get(conn, user_id)
        password = _check_password(password, user.username)
        conn.execute("UPDATE users SET password_hash = ?, session_token = ?, failed_logins = 0, locked_until = NULL,"
                     " must_change_password = 1, updated_at = ? WHERE id = ?",
                     (generate_password_hash(password), secrets.token_urlsafe(24), clock.to_db(clock.now()), user_id))
        audit.record(conn, actor, "user.reset_password", f"user:{user.username}")


def change_own_password(conn: sqlite3.Connection, actor: audit.Actor, user_id: int,
                        data: Mapping[str, Any]) -> User:
    """The user changes their own password: the current one, the new one twice. Every problem
    is reported at once (:class:`FormErrors`); a wrong current password is audited as denied.
    The other sessions end (the session token changes); returns the user as now."""
    current, new, again = (str(data.get(k, "") or "") for k in ("current_password", "new_password", "new_password_again"))
    user = get(conn, user_id)
    problems: dict[str, tuple[str, dict[str, Any]]] = {}
    row = conn.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
    current_ok = check_password_hash(row[0], current)
    if not current_ok:
        problems["current_password"] = (N_("This is not your current password."), {})
    problem = password_problem(new, user.username)
    if problem is not None:
        problems["new_password"] = problem
    elif current_ok and new == current:
        problems["new_password"] = (N_("Choose a password other than the current one."), {})
    if new != again:
        problems["new_password_again"] = (N_("The two new passwords differ."), {})
    if problems:
        if not current_ok:
            with transaction(conn):
                audit.record(conn, actor, "user.change_password", f"user:{user.username}", outcome="denied",
                             detail={"reason": "wrong_current_password"})
        raise FormErrors(problems)
    with transaction(conn):
        conn.execute("UPDATE users SET password_hash = ?, session_token = ?, must_change_password = 0, updated_at = ?"
                     " WHERE id = ?", (generate_password_hash(new), secrets.token_urlsafe(24),
                                       clock.to_db(clock.now()), user_id))
        audit.record(conn, actor, "user.change_password", f"user:{user.username}",
                     detail={"was_required": user.must_change_password})
    return get(conn, user_id)


def log_out(conn: sqlite3.Connection, actor: audit.Actor, user_id: int) -> None:
    """End the user's sessions: the session cookie is signed, not stored, so a copy of it
    stays valid until the token it names is replaced."""
    with transaction(conn):
        conn.execute("UPDATE users SET session_token = ? WHERE id = ?", (secrets.token_urlsafe(24), user_id))
        audit.record(conn, actor, "logout", f"user:{get(conn, user_id).username}")


def set_language(conn: sqlite3.Connection, actor: audit.Actor, user_id: int, language: str) -> None:
    if language not in LANGUAGES:
        raise ValidationError("language", N_("Not one of the allowed values."))
    with transaction(conn):
        conn.execute("UPDATE users SET language = ? WHERE id = ?", (language, user_id))
        audit.record(conn, actor, "user.language", f"user:{get(conn, user_id).username}", detail={"language": language})


def authenticate(conn: sqlite3.Connection, username: str, password: str, address: str,
                 settings: Mapping[str, Any]) -> LoginResult:
    """Check a login, count failures, lock an account or an address after too many; audited."""
    now = clock.now()
    window_start = clock.to_db(now - timedelta(minutes=settings["LOGIN_LOCK_MINUTES"]))
    actor = audit.Actor(username[:64] or "-", address)
    with transaction(conn):
        recent = conn.execute("SELECT COUNT(*) FROM login_failures WHERE address = ? AND at >= ?",
                              (address, window_start)).fetchone()[0]
        if recent >= settings["LOGIN_MAX_FAILURES_PER_ADDRESS"]:
            audit.record(conn, actor, "login", f"user:{username[:64]}", outcome="denied", detail={"reason": "address_locked"})
            return LoginResult(LoginOutcome.ADDRESS_LOCKED)
        user = by_username(conn, username)
        if user is not None and user.locked_until is not None and user.locked_until > now:
            audit.record(conn, actor, "login", f"user:{user.username}", outcome="denied", detail={"reason": "account_locked"})
            return LoginResult(LoginOutcome.ACCOUNT_LOCKED, locked_until=user.locked_until)
        row = conn.execute("SELECT password_hash FROM users WHERE id = ?", (user.id,)).fetchone() if user else None
        if not check_password_hash(row[0] if row else _DUMMY_HASH, password) or user is None:
            return _record_failure(conn, actor, user, username, address, now, settings)
        if not user.active:
            audit.record(conn, actor, "login", f"user:{user.username}", outcome="denied", detail={"reason": "disabled"})
            return LoginResult(LoginOutcome.DISABLED)
        conn.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?", (user.id,))
        audit.record(conn, actor, "login", f"user:{user.username}")
    return LoginResult(LoginOutcome.OK, user=get(conn, user.id))


def _record_failure(conn: sqlite3.Connection, actor: audit.Actor, user: User | None, username: str, address: str,
                    now: datetime, settings: Mapping[str, Any]) -> LoginResult:
    conn.execute("DELETE FROM login_failures WHERE at < ?", (clock.to_db(now - timedelta(days=1)),))
    conn.execute("INSERT INTO login_failures (address, username, at) VALUES (?, ?, ?)",
                 (address, username[:64], clock.to_db(now)))
    locked_until = None
    if user is not None:
        failures = conn.execute("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ? RETURNING failed_logins",
                                (user.id,)).fetchone()[0]
        if failures >= settings["LOGIN_MAX_FAILURES"]:
            locked_until = now + timedelta(minutes=settings["LOGIN_LOCK_MINUTES"])
            conn.execute("UPDATE users SET locked_until = ?, failed_logins = 0 WHERE id = ?",
                         (clock.to_db(locked_until), user.id))
    audit.record(conn, actor, "login", f"user:{username[:64]}", outcome="failure",
                 detail={"reason": "locked_now" if locked_until else "invalid_credentials"})
    if locked_until is not None:
        return LoginResult(LoginOutcome.ACCOUNT_LOCKED, locked_until=locked_until)
    return LoginResult(LoginOutcome.INVALID)


def ensure_admin(conn: sqlite3.Connection) -> str | None:
    """On an empty database, create ``admin`` with a random password and return the password."""
    if count(conn) > 0:
        return None
    password = secrets.token_urlsafe(12)
    create(conn, audit.SYSTEM, {"username": "admin", "display_name": "Administrator",
                                "password": password, "roles": ["admin"]})
    return password


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(conn: sqlite3.Connection, actor: audit.Actor, username: str) -> str:
    """A new API bearer token for ``username``; only its hash is kept."""
    user = by_username(conn, username)
    if user is None:
        raise NotFound(f"user {username}")
    if not user.active:
        raise Conflict(N_("This account is disabled."))
    token = "psl_" + secrets.token_urlsafe(32)
    with transaction(conn):
        conn.execute("INSERT INTO api_tokens (user_id, token_hash, created_at) VALUES (?, ?, ?)",
                     (user.id, _token_hash(token), clock.to_db(clock.now())))
        audit.record(conn, actor, "token.create", f"user:{user.username}")
    return token


def user_for_token(conn: sqlite3.Connection, token: str) -> User | None:
    """The active user a bearer token belongs to, or None."""
    row = conn.execute(
        "SELECT u.* FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.revoked_at IS NULL AND u.active = 1", (_token_hash(token),)).fetchone()
    return _user_from_row(conn, row)
