-- Report quality control (报告质控, issue 32): a QC reviewer (users.can_qc) samples final reports
-- (a number per radiologist per month, at random, and every critical one) and scores each against
-- a checklist, with a comment the author sees. Written by ris.qc (the users column by ris.users).
ALTER TABLE users ADD COLUMN can_qc INTEGER NOT NULL DEFAULT 0;
CREATE TABLE report_qc (
    id            INTEGER PRIMARY KEY,
    version_ref   INTEGER NOT NULL UNIQUE REFERENCES report_versions(id),
    exam_ref      INTEGER NOT NULL REFERENCES exams(id),
    author        TEXT NOT NULL,            -- who signed the version
    month         TEXT NOT NULL,            -- the department's month of the signature, YYYY-MM
    why           TEXT NOT NULL CHECK (why IN ('sample', 'critical')),
    description   INTEGER CHECK (description BETWEEN 0 AND 2),
    conclusion    INTEGER CHECK (conclusion BETWEEN 0 AND 2),
    agreement     INTEGER CHECK (agreement BETWEEN 0 AND 2),   -- with pathology / the outcome, when known
    score         INTEGER,                  -- the checklist's sum, out of the items scored
    comment       TEXT NOT NULL DEFAULT '',
    sampled_by    TEXT NOT NULL,
    sampled_at    TEXT NOT NULL,
    scored_by     TEXT,
    scored_at     TEXT
);
CREATE INDEX report_qc_month ON report_qc (month, author);
CREATE INDEX report_qc_exam ON report_qc (exam_ref);
