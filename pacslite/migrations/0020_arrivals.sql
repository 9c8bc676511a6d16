-- One row per delivery of a study: an association (or a STOW-RS request, an import, a volume
-- read) and the study its images belong to. Each stored instance points to its arrival, so
-- its provenance (calling AE, address, time) is in the index; the audit log gets one row per
-- arrival when the delivery ends, instead of one per image (4.9 M of 7.1 M rows at the
-- paper's scale). An arrival left open by a stopped process is closed at the next start.
CREATE TABLE arrivals (
    id                 INTEGER PRIMARY KEY,
    batch              TEXT NOT NULL,
    source             TEXT NOT NULL,
    address            TEXT NOT NULL DEFAULT '',
    study_ref          INTEGER NOT NULL REFERENCES studies(id),
    patient_id         TEXT NOT NULL DEFAULT '',
    exam_ref           INTEGER REFERENCES exams(id),
    quarantine_reason  TEXT NOT NULL DEFAULT '',
    filed              INTEGER NOT NULL DEFAULT 0,
    quarantined        INTEGER NOT NULL DEFAULT 0,
    first_at           TEXT NOT NULL,
    last_at            TEXT NOT NULL,
    closed_at          TEXT
);
-- a delivery resumed after a restart (an import job) starts new rows: closed ones stay as audited
CREATE UNIQUE INDEX arrivals_open ON arrivals (batch, study_ref) WHERE closed_at IS NULL;
CREATE INDEX arrivals_study ON arrivals (study_ref);

ALTER TABLE instances ADD COLUMN arrival_ref INTEGER REFERENCES arrivals(id);
CREATE INDEX instances_arrival ON instances (arrival_ref) WHERE arrival_ref IS NOT NULL;
