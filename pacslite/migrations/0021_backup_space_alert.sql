-- A new alert rule, backup_space: the backups' disk cannot hold BACKUP_KEEP copies of the
-- database as it is now. SQLite cannot change a CHECK constraint, so the table is copied.
CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict', 'storage_low', 'file_missing',
                                                'file_changed', 'forward_failed', 'incomplete_transmission',
                                                'commitment_failed', 'backup_space')),
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
