-- Imports from the import page: the uploaded files staged in a folder, the exam and the
-- patient mapping chosen, and the report (one line per file) as the job goes.
CREATE TABLE imports (
    id            INTEGER PRIMARY KEY,
    folder        TEXT NOT NULL,
    accession     TEXT NOT NULL DEFAULT '',
    mapping       TEXT NOT NULL DEFAULT '{}',
    report        TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL
);

-- Jobs get the import kind (SQLite cannot change a CHECK: the table is rebuilt, every row kept).
CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('build_volume', 'verify_volume', 'offsite_copy', 'scrub', 'import')),
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
