-- Issue 14: routing. Forward rules (from a calling AE and/or a modality to a destination AE),
-- one persistent outbound queue for them and for "send to…", and the forward_failed alert.

CREATE TABLE forward_rules (
    id              INTEGER PRIMARY KEY,
    calling_ae      TEXT NOT NULL DEFAULT '',    -- '' : from any AE
    modality        TEXT NOT NULL DEFAULT '',    -- '' : any modality (DICOM Modality of a series)
    destination_ae  TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    UNIQUE (calling_ae, modality, destination_ae)
);

-- One row per study and destination while it waits, is sent, or has failed for good.
CREATE TABLE outbound_queue (
    id               INTEGER PRIMARY KEY,
    study_ref        INTEGER NOT NULL REFERENCES studies (id),
    destination_ae   TEXT NOT NULL,
    reason           TEXT NOT NULL,              -- rule:<id> or user:<name>
    state            TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    images_sent      INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    next_attempt_at  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX outbound_live ON outbound_queue (study_ref, destination_ae) WHERE state IN ('queued', 'sending');
CREATE INDEX outbound_due ON outbound_queue (state, next_attempt_at);
CREATE INDEX outbound_study ON outbound_queue (study_ref);
CREATE INDEX outbound_updated ON outbound_queue (updated_at);

CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict', 'storage_low', 'file_missing',
                                                'file_changed', 'forward_failed')),
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
