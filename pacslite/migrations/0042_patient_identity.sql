-- Patient identity (issue 29): two records found to be one person are merged (HL7 ADT^A40, or
-- the admin's duplicates page), a patient ID is changed (ADT^A47). The prior record stays,
-- pointing at the survivor (merged_into), so that a later message or study with the old ID
-- resolves; the survivor gets the exams (and with them the studies, reports and critical
-- findings). Written by ris.patients.
ALTER TABLE patients ADD COLUMN merged_into INTEGER REFERENCES patients(id);
CREATE INDEX patients_merged_into ON patients (merged_into) WHERE merged_into IS NOT NULL;
-- The duplicates page looks for records with the same name and birth date.
CREATE INDEX patients_name_birth ON patients (name, birth_date);

-- Each merge, what it moved and how far the stored files have been rewritten with the
-- survivor's demographics (the old values kept in each file's Original Attributes Sequence);
-- undone by an admin while nothing new was filed to the survivor. Written by pacs.merging.
CREATE TABLE patient_merges (
    id             INTEGER PRIMARY KEY,
    prior_ref      INTEGER NOT NULL REFERENCES patients(id),
    survivor_ref   INTEGER NOT NULL REFERENCES patients(id),
    kind           TEXT NOT NULL CHECK (kind IN ('merge', 'change_id')),
    reason         TEXT NOT NULL,
    exams          TEXT NOT NULL,            -- JSON: the ids of the exams moved
    prior_values   TEXT NOT NULL,            -- JSON: the prior record as it was
    at             TEXT NOT NULL,
    by             TEXT NOT NULL,
    files_done_at  TEXT,
    undone_at      TEXT,
    undone_by      TEXT,
    undo_reason    TEXT
);
CREATE INDEX patient_merges_prior ON patient_merges (prior_ref);
CREATE INDEX patient_merges_survivor ON patient_merges (survivor_ref);
CREATE INDEX patient_merges_files ON patient_merges (id) WHERE files_done_at IS NULL AND undone_at IS NULL;

-- The files a merge rewrote: the instance, its file before and after.
CREATE TABLE merge_files (
    merge_ref    INTEGER NOT NULL REFERENCES patient_merges(id),
    instance_ref INTEGER NOT NULL REFERENCES instances(id),
    old_path     TEXT NOT NULL,
    old_size     INTEGER NOT NULL,
    old_sha256   TEXT NOT NULL,
    new_path     TEXT NOT NULL,
    new_size     INTEGER NOT NULL,
    new_sha256   TEXT NOT NULL,
    PRIMARY KEY (merge_ref, instance_ref)
);
CREATE INDEX merge_files_instance ON merge_files (instance_ref);
