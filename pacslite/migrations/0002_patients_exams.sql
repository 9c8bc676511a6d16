-- The RIS: patients and their registered exams.
CREATE TABLE patients (
    id             INTEGER PRIMARY KEY,
    patient_id     TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    name_pinyin    TEXT NOT NULL DEFAULT '',
    name_initials  TEXT NOT NULL DEFAULT '',
    sex            TEXT NOT NULL CHECK (sex IN ('M', 'F', 'O')),
    birth_date     TEXT,
    phone          TEXT NOT NULL DEFAULT '',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX patients_name ON patients (name);
CREATE INDEX patients_pinyin ON patients (name_pinyin);
CREATE INDEX patients_initials ON patients (name_initials);

-- Accession numbers: a daily sequence per local calendar day.
CREATE TABLE accession_counters (
    day   TEXT PRIMARY KEY,
    last  INTEGER NOT NULL
);

CREATE TABLE exams (
    id                     INTEGER PRIMARY KEY,
    accession_number       TEXT NOT NULL UNIQUE,
    patient_ref            INTEGER NOT NULL REFERENCES patients(id),
    modality               TEXT NOT NULL,
    dicom_modality         TEXT NOT NULL,
    source                 TEXT NOT NULL CHECK (source IN ('outpatient', 'inpatient', 'emergency', 'physical_exam')),
    procedure              TEXT NOT NULL,
    body_part              TEXT NOT NULL DEFAULT '',
    requesting_department  TEXT NOT NULL DEFAULT '',
    requesting_physician   TEXT NOT NULL DEFAULT '',
    clinical_note          TEXT NOT NULL DEFAULT '',
    priority               TEXT NOT NULL CHECK (priority IN ('routine', 'urgent', 'stat')),
    scheduled_at           TEXT NOT NULL,
    station_ae             TEXT NOT NULL DEFAULT '',
    study_instance_uid     TEXT NOT NULL UNIQUE,
    status                 TEXT NOT NULL,
    series_count           INTEGER NOT NULL DEFAULT 0,
    instance_count         INTEGER NOT NULL DEFAULT 0,
    cancel_reason          TEXT,
    cancelled_at           TEXT,
    cancelled_by           TEXT,
    registered_at          TEXT NOT NULL,
    registered_by          TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX exams_patient ON exams (patient_ref);
CREATE INDEX exams_scheduled ON exams (scheduled_at);
CREATE INDEX exams_status ON exams (status);
