-- People, sessions, API tokens and the audit log.
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name   TEXT NOT NULL DEFAULT '',
    password_hash  TEXT NOT NULL,
    active         INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    -- changes on password reset or disable, which ends every session of the user
    session_token  TEXT NOT NULL,
    language       TEXT,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE user_roles (
    user_id  INTEGER NOT NULL REFERENCES users(id),
    role     TEXT NOT NULL CHECK (role IN ('registrar', 'technologist', 'radiologist', 'clinician', 'admin')),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

-- Failed logins by client address, for throttling an address that tries many accounts.
CREATE TABLE login_failures (
    id        INTEGER PRIMARY KEY,
    address   TEXT NOT NULL,
    username  TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE INDEX login_failures_address_at ON login_failures (address, at);

-- Append-only and hash-chained: hash = sha256(prev_hash || canonical row content).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    address     TEXT NOT NULL DEFAULT '',
    action      TEXT NOT NULL,
    target      TEXT NOT NULL DEFAULT '',
    patient_id  TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}',
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_patient ON audit_log (patient_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
