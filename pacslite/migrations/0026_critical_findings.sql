-- Critical findings (危急值, issue 18): recorded when a radiologist classes a result critical
-- (or presses "critical finding" while reading), sent to the requesting department's clinicians,
-- acknowledged by one of them, escalated when nobody has after CRITICAL_ACK_MINUTES.
ALTER TABLE users ADD COLUMN department TEXT NOT NULL DEFAULT '';

CREATE TABLE critical_findings (
    id               INTEGER PRIMARY KEY,
    exam_ref         INTEGER NOT NULL REFERENCES exams (id),
    version          INTEGER,            -- the report version signed critical; NULL: recorded while reading
    finding          TEXT NOT NULL,
    department       TEXT NOT NULL COLLATE NOCASE,  -- the exam's requesting department when it was recorded
    reported_by      TEXT NOT NULL,
    reported_at      TEXT NOT NULL,
    due_at           TEXT NOT NULL,      -- reported_at + CRITICAL_ACK_MINUTES
    escalated_at     TEXT,
    acknowledged_by  TEXT,
    acknowledged_at  TEXT,
    acknowledgement  TEXT                -- the note: who took it, what was done
);
CREATE INDEX critical_open ON critical_findings (department, due_at) WHERE acknowledged_at IS NULL;
CREATE INDEX critical_unacknowledged ON critical_findings (due_at) WHERE acknowledged_at IS NULL;
CREATE INDEX critical_reported ON critical_findings (reported_at, acknowledged_at);
CREATE INDEX critical_exam ON critical_findings (exam_ref);

-- The alert rule critical_finding (SQLite cannot change a CHECK constraint: the table is copied).
CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict', 'storage_low', 'file_missing',
                                                'file_changed', 'forward_failed', 'incomplete_transmission',
                                                'commitment_failed', 'backup_space', 'critical_finding')),
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
