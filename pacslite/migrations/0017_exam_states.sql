-- Issue 15: the exam's life cycle (exams.py). Existing exams get the state their data says.
UPDATE exams SET status = 'scheduled' WHERE status = 'registered';
UPDATE exams SET status = CASE
    WHEN EXISTS (SELECT 1 FROM report_versions v WHERE v.exam_ref = exams.id AND v.status = 'final') THEN 'final'
    WHEN EXISTS (SELECT 1 FROM report_versions v WHERE v.exam_ref = exams.id AND v.preliminary_at IS NOT NULL)
        THEN 'preliminary'
    ELSE 'in_progress' END
  WHERE status IN ('images_received', 'completed');
-- When and by whom it was performed, and how many images the modality (MPPS) or the
-- technologist said were acquired: the expected-image check compares that with what arrived.
ALTER TABLE exams ADD COLUMN performed_at TEXT;
ALTER TABLE exams ADD COLUMN performed_by TEXT;
ALTER TABLE exams ADD COLUMN images_expected INTEGER;
-- The worklist asks for exams in two states on a day.
CREATE INDEX exams_status_scheduled ON exams (status, scheduled_at);
DROP INDEX exams_status;  -- exams_status_scheduled serves queries by status alone too
-- A final report amended (signed final again): the lists say "amended".
ALTER TABLE exams ADD COLUMN amended_at TEXT;
UPDATE exams SET amended_at = (SELECT MAX(v.signed_at) FROM report_versions v WHERE v.exam_ref = exams.id
                               AND v.status = 'final')
  WHERE (SELECT COUNT(*) FROM report_versions v WHERE v.exam_ref = exams.id AND v.status = 'final') > 1;
-- The expected-image check: when it is due (performed + MPPS_GRACE_MINUTES), until it passes.
ALTER TABLE exams ADD COLUMN transmission_check_at TEXT;
CREATE INDEX exams_transmission_check ON exams (transmission_check_at) WHERE transmission_check_at IS NOT NULL;

-- A modality's own DICOM Modality (CT, MR, ...): a worklist query by its station AE title gets
-- the exams scheduled on no particular station only when they are of this modality. And
-- ISO 2022 IR 58 (GB2312 with code extensions) for older Chinese consoles.
CREATE TABLE application_entities_new (
    id          INTEGER PRIMARY KEY,
    ae_title    TEXT NOT NULL UNIQUE,
    host        TEXT NOT NULL DEFAULT '',
    port        INTEGER NOT NULL DEFAULT 104 CHECK (port BETWEEN 1 AND 65535),
    name        TEXT NOT NULL DEFAULT '',
    location    TEXT NOT NULL DEFAULT '',
    charset     TEXT NOT NULL DEFAULT 'ISO_IR 192'
                CHECK (charset IN ('ISO_IR 192', 'GB18030', 'ISO 2022 IR 58', 'ISO_IR 100')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    rights      TEXT NOT NULL DEFAULT 'store,worklist,mpps,commitment'
);
INSERT INTO application_entities_new SELECT * FROM application_entities;
DROP TABLE application_entities;
ALTER TABLE application_entities_new RENAME TO application_entities;
ALTER TABLE application_entities ADD COLUMN modality TEXT NOT NULL DEFAULT '';

-- Modality Performed Procedure Steps (N-CREATE, N-SET). exam_ref NULL: not (yet) linked to an
-- exam (an unscheduled procedure), listed for the technologists to link by hand.
CREATE TABLE mpps (
    id                   INTEGER PRIMARY KEY,
    sop_instance_uid     TEXT NOT NULL UNIQUE,
    calling_ae           TEXT NOT NULL,
    exam_ref             INTEGER REFERENCES exams (id),
    state                TEXT NOT NULL CHECK (state IN ('IN PROGRESS', 'COMPLETED', 'DISCONTINUED')),
    procedure_step_id    TEXT NOT NULL DEFAULT '',
    accession_number     TEXT NOT NULL DEFAULT '',
    study_instance_uid   TEXT NOT NULL DEFAULT '',
    requested_procedure_id TEXT NOT NULL DEFAULT '',
    patient_id           TEXT NOT NULL DEFAULT '',
    patient_name         TEXT NOT NULL DEFAULT '',
    modality             TEXT NOT NULL DEFAULT '',
    description          TEXT NOT NULL DEFAULT '',
    started_at           TEXT NOT NULL DEFAULT '',   -- as the modality says (local DICOM date time)
    ended_at             TEXT NOT NULL DEFAULT '',
    discontinued_reason  TEXT NOT NULL DEFAULT '',
    instance_count       INTEGER NOT NULL DEFAULT 0, -- listed in its Performed Series Sequence
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    linked_at            TEXT,
    linked_by            TEXT
);
CREATE INDEX mpps_exam ON mpps (exam_ref);
CREATE INDEX mpps_unlinked ON mpps (created_at) WHERE exam_ref IS NULL;

-- What the modality says it acquired (Performed Series Sequence of the final N-SET).
CREATE TABLE mpps_instances (
    mpps_ref             INTEGER NOT NULL REFERENCES mpps (id),
    sop_instance_uid     TEXT NOT NULL,
    sop_class_uid        TEXT NOT NULL,
    series_instance_uid  TEXT NOT NULL,
    series_description   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (mpps_ref, sop_instance_uid)
) WITHOUT ROWID;

-- Storage commitment requests (N-ACTION) and their reports (N-EVENT-REPORT), kept until
-- delivered or given up. result: JSON {"committed": [[class, instance]...], "failed": [[class, instance, reason]...]}.
CREATE TABLE commitments (
    id                   INTEGER PRIMARY KEY,
    transaction_uid      TEXT NOT NULL,
    calling_ae           TEXT NOT NULL,
    address              TEXT NOT NULL DEFAULT '',
    requested            INTEGER NOT NULL,
    committed            INTEGER NOT NULL,
    result               TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT NOT NULL DEFAULT '',
    delivered_on         TEXT NOT NULL DEFAULT '',   -- 'same' or 'new' association
    next_attempt_at      TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX commitments_due ON commitments (state, next_attempt_at);
CREATE INDEX commitments_created ON commitments (created_at);

CREATE TABLE alerts_new (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL CHECK (rule IN ('missing_images', 'unfiled_images', 'stale_registration',
                                                'overdue_report', 'conflict', 'storage_low', 'file_missing',
                                                'file_changed', 'forward_failed', 'incomplete_transmission',
                                                'commitment_failed')),
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
