-- The procedure catalogue (issue 19): what the registration desk picks, per modality, with its
-- body part, default station, report targets and the patient's preparation instructions.
-- A procedure is retired (active = 0), never deleted: exams keep its code.
CREATE TABLE procedures (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    name_zh TEXT NOT NULL DEFAULT '',
    name_en TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    default_station_ae TEXT NOT NULL DEFAULT '',
    target_hours REAL,
    target_stat_hours REAL,
    target_urgent_hours REAL,
    target_outpatient_hours REAL,
    target_inpatient_hours REAL,
    target_emergency_hours REAL,
    target_physical_exam_hours REAL,
    preparation TEXT NOT NULL DEFAULT '',
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX procedures_modality ON procedures (modality, active, code);

-- A modality's report target and location as set on the modalities page (over the
-- configuration file's MODALITIES entry).
CREATE TABLE modality_settings (
    code TEXT PRIMARY KEY,
    turnaround_hours REAL,
    location TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);

-- The exam keeps the catalogue code it was registered with and its report target in hours,
-- fixed at registration (a later change to the catalogue does not move an exam's deadline).
-- NULL for exams registered before: their target is computed from the configuration.
ALTER TABLE exams ADD COLUMN procedure_code TEXT;
ALTER TABLE exams ADD COLUMN target_hours REAL;
-- The statistics read the target with the rest, from the index alone.
DROP INDEX IF EXISTS exams_statistics;
CREATE INDEX exams_statistics ON exams (registered_at, modality, source, station_ae, status, instance_count,
                                        images_first_at, reported_at, result_class, priority, target_hours);
