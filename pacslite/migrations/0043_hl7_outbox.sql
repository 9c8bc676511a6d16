-- What pacslite tells the HIS (issue 29): each exam state change of an HIS order (状态回写) and
-- each signed report (ORU^R01), queued in the transaction of its cause, sent over MLLP in order,
-- tried again until the HIS accepts it. The message is built once, at its first attempt, and
-- sent again as it was (the same MSH-10: the HIS keeps a repeat once). Written by ris.outbox.
CREATE TABLE hl7_outbox (
    id                 INTEGER PRIMARY KEY,
    exam_ref           INTEGER NOT NULL REFERENCES exams(id),
    kind               TEXT NOT NULL CHECK (kind IN ('status', 'result')),
    status             TEXT NOT NULL DEFAULT '',   -- the exam's new state (status)
    report_version_ref INTEGER REFERENCES report_versions(id),
    result_status      TEXT NOT NULL DEFAULT '',   -- P, F or C (result)
    state              TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TEXT NOT NULL,
    last_error         TEXT NOT NULL DEFAULT '',
    control_id         TEXT NOT NULL DEFAULT '',
    message            BLOB,
    ack                BLOB,
    created_at         TEXT NOT NULL,
    sent_at            TEXT
);
CREATE INDEX hl7_outbox_queued ON hl7_outbox (id) WHERE state = 'queued';
CREATE INDEX hl7_outbox_exam ON hl7_outbox (exam_ref);
CREATE INDEX hl7_outbox_created ON hl7_outbox (created_at);
