-- Archive: offline volumes, the off-site copy, the scrub, long jobs; and more alert rules.

-- Alerts get the storage and integrity rules (SQLite cannot change a CHECK: the table is rebuilt).
CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict', 'storage_low', 'file_missing',
                                                'file_changed')),
    subject       TEXT NOT NULL,
    exam_ref      INTEGER REFERENCES exams (id),
    study_ref     INTEGER REFERENCES studies (id),
    state         TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'cleared')),
    detail        TEXT NOT NULL DEFAULT '{}',
    opened_at     TEXT NOT NULL,
    closed_at     TEXT,
    closed_by     TEXT,
    resolution    TEXT
);
INSERT INTO alerts_new SELECT * FROM alerts;
DROP TABLE alerts;
ALTER TABLE alerts_new RENAME TO alerts;
CREATE UNIQUE INDEX alerts_live ON alerts (rule, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_state ON alerts (state);

-- An instance whose online file was released after its offline volume was verified.
ALTER TABLE instances ADD COLUMN released_at TEXT;

-- Offline volumes (a DVD each): a folder in the IHE PDI layout and an ISO 9660 image.
CREATE TABLE volumes (
    id            INTEGER PRIMARY KEY,
    label         TEXT NOT NULL UNIQUE,            -- PL000001
    state         TEXT NOT NULL CHECK (state IN ('planned', 'built', 'verified', 'failed')),
    capacity      INTEGER NOT NULL,
    size          INTEGER NOT NULL DEFAULT 0,
    first_date    TEXT,
    last_date     TEXT,
    created_at    TEXT NOT NULL,
    built_at      TEXT,
    verified_at   TEXT,
    verify_detail TEXT NOT NULL DEFAULT '{}',
    released_at   TEXT,
    released_by   TEXT,
    release_reason TEXT
);

CREATE TABLE volume_studies (
    volume_ref    INTEGER NOT NULL REFERENCES volumes (id),
    study_ref     INTEGER NOT NULL REFERENCES studies (id),
    PRIMARY KEY (volume_ref, study_ref)
);
CREATE INDEX volume_studies_study ON volume_studies (study_ref);

CREATE TABLE volume_files (
    volume_ref    INTEGER NOT NULL REFERENCES volumes (id),
    instance_ref  INTEGER NOT NULL REFERENCES instances (id),
    file_id       TEXT NOT NULL,                   -- path inside the volume, 8.3 components
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    PRIMARY KEY (volume_ref, instance_ref)
);
CREATE INDEX volume_files_instance ON volume_files (instance_ref);

-- The lossy off-site copy of each instance.
CREATE TABLE offsite_copies (
    instance_ref  INTEGER PRIMARY KEY REFERENCES instances (id),
    path          TEXT NOT NULL,                   -- relative to OFFSITE_DIR
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    ratio         REAL NOT NULL,
    method        TEXT NOT NULL,
    copied_at     TEXT NOT NULL
);

-- Long jobs (volume building and verification, off-site copying, scrubbing): resumable, pausable.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('build_volume', 'verify_volume', 'offsite_copy', 'scrub')),
    subject       TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'paused', 'done', 'failed')),
    done          INTEGER NOT NULL DEFAULT 0,
    total         INTEGER NOT NULL DEFAULT 0,
    cursor        TEXT NOT NULL DEFAULT '',         -- where to resume
    message       TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX jobs_state ON jobs (state);

-- The scrub's place in the store, so that it goes round at its limited rate across restarts.
CREATE TABLE scrub_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_instance INTEGER NOT NULL DEFAULT 0,
    rounds        INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL
);
