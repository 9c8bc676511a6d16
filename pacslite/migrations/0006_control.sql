-- Re-filing (纠正归位): a study moved to another exam. Its files' headers are rewritten into
-- new files; the original files stay (their paths here) until an admin purges them.
CREATE TABLE refilings (
    id                      INTEGER PRIMARY KEY,
    study_ref               INTEGER NOT NULL REFERENCES studies (id),
    from_exam_ref           INTEGER REFERENCES exams (id),
    from_quarantine_reason  TEXT,
    from_quarantine_detail  TEXT NOT NULL DEFAULT '{}',
    to_exam_ref             INTEGER NOT NULL REFERENCES exams (id),
    reason                  TEXT NOT NULL CHECK (reason <> ''),
    before                  TEXT NOT NULL,   -- header values before, JSON
    after                   TEXT NOT NULL,   -- header values after, JSON
    at                      TEXT NOT NULL,
    by                      TEXT NOT NULL,
    undone_at               TEXT,
    undone_by               TEXT,
    undo_reason             TEXT
);
CREATE INDEX refilings_study ON refilings (study_ref);
CREATE INDEX refilings_at ON refilings (at);

CREATE TABLE refiled_files (
    id            INTEGER PRIMARY KEY,
    refiling_ref  INTEGER NOT NULL REFERENCES refilings (id),
    instance_ref  INTEGER NOT NULL REFERENCES instances (id),
    old_path      TEXT NOT NULL,
    old_size      INTEGER NOT NULL,
    old_sha256    TEXT NOT NULL,
    new_path      TEXT NOT NULL UNIQUE,
    new_size      INTEGER NOT NULL,
    new_sha256    TEXT NOT NULL
);
CREATE INDEX refiled_files_refiling ON refiled_files (refiling_ref);

-- Rejected studies (test images, images of no patient): hidden, restorable, never deleted here.
ALTER TABLE studies ADD COLUMN rejected_at TEXT;
ALTER TABLE studies ADD COLUMN rejected_by TEXT;
ALTER TABLE studies ADD COLUMN rejected_reason TEXT;

-- The sweep's findings. One alert per (rule, subject) until it is cleared; a resolved alert
-- is not raised again for the same subject.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict')),
    subject       TEXT NOT NULL,             -- exam:<id> or study:<id>
    exam_ref      INTEGER REFERENCES exams (id),
    study_ref     INTEGER REFERENCES studies (id),
    state         TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'cleared')),
    detail        TEXT NOT NULL DEFAULT '{}',
    opened_at     TEXT NOT NULL,
    closed_at     TEXT,
    closed_by     TEXT,
    resolution    TEXT
);
CREATE UNIQUE INDEX alerts_live ON alerts (rule, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_state ON alerts (state);
