-- Alert rules and job kinds are registered in code (alerts.register, jobs.register), not listed
-- in a CHECK: the alerts table was rebuilt six times only to widen its list. This last rebuild
-- drops both lists; the state CHECKs stay. Every row and index is kept.
CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL,
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

CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'paused', 'done', 'failed')),
    done          INTEGER NOT NULL DEFAULT 0,
    total         INTEGER NOT NULL DEFAULT 0,
    cursor        TEXT NOT NULL DEFAULT '',
    message       TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
INSERT INTO jobs_new SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_state ON jobs (state);
