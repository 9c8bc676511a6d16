-- DICOM: the modalities that may talk to pacslite, the associations refused, and the image
-- index (studies, series, instances) with the filing of each study to an exam or to quarantine.

CREATE TABLE application_entities (
    id          INTEGER PRIMARY KEY,
    ae_title    TEXT NOT NULL UNIQUE,
    host        TEXT NOT NULL DEFAULT '',
    port        INTEGER NOT NULL DEFAULT 104 CHECK (port BETWEEN 1 AND 65535),
    name        TEXT NOT NULL DEFAULT '',
    location    TEXT NOT NULL DEFAULT '',
    charset     TEXT NOT NULL DEFAULT 'ISO_IR 192' CHECK (charset IN ('ISO_IR 192', 'GB18030', 'ISO_IR 100')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- One row per (calling AE, called AE, address, reason): how often and when last.
CREATE TABLE association_rejections (
    id          INTEGER PRIMARY KEY,
    calling_ae  TEXT NOT NULL,
    called_ae   TEXT NOT NULL,
    address     TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('unknown_calling_ae', 'wrong_called_ae')),
    attempts    INTEGER NOT NULL DEFAULT 1,
    first_at    TEXT NOT NULL,
    last_at     TEXT NOT NULL,
    UNIQUE (calling_ae, called_ae, address, reason)
);

-- A study as it arrived. Filed: exam_ref set. Quarantined: quarantine_reason set.
-- Header values are the dataset's own (decoded, control characters replaced), kept for
-- the quarantine page and the demographic check; the file is the original.
CREATE TABLE studies (
    id                   INTEGER PRIMARY KEY,
    study_instance_uid   TEXT NOT NULL UNIQUE,
    exam_ref             INTEGER REFERENCES exams(id),
    quarantine_reason    TEXT CHECK (quarantine_reason IN
                            ('no_accession', 'unknown_accession', 'patient_id_mismatch',
                             'demographics_mismatch', 'exam_cancelled')),
    quarantine_detail    TEXT NOT NULL DEFAULT '{}',
    accession_number     TEXT NOT NULL DEFAULT '',
    patient_id           TEXT NOT NULL DEFAULT '',
    patient_name         TEXT NOT NULL DEFAULT '',
    patient_sex          TEXT NOT NULL DEFAULT '',
    patient_birth_date   TEXT NOT NULL DEFAULT '',
    study_date           TEXT NOT NULL DEFAULT '',
    study_description    TEXT NOT NULL DEFAULT '',
    calling_ae           TEXT NOT NULL DEFAULT '',
    address              TEXT NOT NULL DEFAULT '',
    series_count         INTEGER NOT NULL DEFAULT 0,
    instance_count       INTEGER NOT NULL DEFAULT 0,
    first_received_at    TEXT NOT NULL,
    last_received_at     TEXT NOT NULL,
    CHECK ((exam_ref IS NULL) <> (quarantine_reason IS NULL))
);
CREATE INDEX studies_exam ON studies (exam_ref);
CREATE INDEX studies_quarantine ON studies (quarantine_reason) WHERE quarantine_reason IS NOT NULL;

CREATE TABLE series (
    id                   INTEGER PRIMARY KEY,
    study_ref            INTEGER NOT NULL REFERENCES studies(id),
    series_instance_uid  TEXT NOT NULL UNIQUE,
    modality             TEXT NOT NULL DEFAULT '',
    series_number        TEXT NOT NULL DEFAULT '',
    series_description   TEXT NOT NULL DEFAULT '',
    instance_count       INTEGER NOT NULL DEFAULT 0,
    first_received_at    TEXT NOT NULL,
    last_received_at     TEXT NOT NULL
);
CREATE INDEX series_study ON series (study_ref);

CREATE TABLE instances (
    id                   INTEGER PRIMARY KEY,
    series_ref           INTEGER NOT NULL REFERENCES series(id),
    sop_instance_uid     TEXT NOT NULL UNIQUE,
    sop_class_uid        TEXT NOT NULL,
    transfer_syntax_uid  TEXT NOT NULL,
    instance_number      TEXT NOT NULL DEFAULT '',
    storage_path         TEXT NOT NULL UNIQUE,
    size                 INTEGER NOT NULL,
    sha256               TEXT NOT NULL,
    calling_ae           TEXT NOT NULL DEFAULT '',
    received_at          TEXT NOT NULL
);
CREATE INDEX instances_series ON instances (series_ref);
CREATE INDEX instances_received ON instances (received_at);

-- A second copy of a stored SOP Instance UID with other content: kept aside, never filed,
-- the first copy untouched. Listed in the quarantine with reason duplicate_conflict.
CREATE TABLE instance_conflicts (
    id                   INTEGER PRIMARY KEY,
    instance_ref         INTEGER NOT NULL REFERENCES instances(id),
    sop_instance_uid     TEXT NOT NULL,
    study_instance_uid   TEXT NOT NULL,
    transfer_syntax_uid  TEXT NOT NULL,
    accession_number     TEXT NOT NULL DEFAULT '',
    patient_id           TEXT NOT NULL DEFAULT '',
    patient_name         TEXT NOT NULL DEFAULT '',
    patient_sex          TEXT NOT NULL DEFAULT '',
    patient_birth_date   TEXT NOT NULL DEFAULT '',
    storage_path         TEXT NOT NULL UNIQUE,
    size                 INTEGER NOT NULL,
    sha256               TEXT NOT NULL,
    calling_ae           TEXT NOT NULL DEFAULT '',
    address              TEXT NOT NULL DEFAULT '',
    received_at          TEXT NOT NULL
);
CREATE INDEX instance_conflicts_received ON instance_conflicts (received_at);

-- When the first and the last image of an exam arrived.
ALTER TABLE exams ADD COLUMN images_first_at TEXT;
ALTER TABLE exams ADD COLUMN images_last_at TEXT;
