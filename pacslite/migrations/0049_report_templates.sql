-- Report templates (报告模板, issue 32): findings and impression with choice slots ({左/右}) and
-- blanks (__), kept at three levels: the department's and a section's (kept by administrators)
-- and a radiologist's own. A section is a modality or a body part group; a template may be the
-- normal report of a procedure (inserted with one key). The department's phrases become its
-- templates (report_phrases stays as it was, written by nothing: migrations never destroy).
-- Written by ris.report_templates.
CREATE TABLE report_templates (
    id              INTEGER PRIMARY KEY,
    level           TEXT NOT NULL CHECK (level IN ('department', 'section', 'personal')),
    owner           TEXT NOT NULL DEFAULT '',   -- the radiologist's user name (personal), else ''
    section         TEXT NOT NULL DEFAULT '',   -- the section's name (section), else ''
    modality        TEXT NOT NULL DEFAULT '',   -- '' for every modality
    body_part       TEXT NOT NULL DEFAULT '',   -- '' for every body part
    folder          TEXT NOT NULL DEFAULT '',   -- where it sits in the tree ("胸部/肺")
    name            TEXT NOT NULL,
    findings        TEXT NOT NULL DEFAULT '',
    impression      TEXT NOT NULL DEFAULT '',
    procedure_code  TEXT,                       -- the procedure whose normal report this is
    updated_at      TEXT NOT NULL,
    updated_by      TEXT NOT NULL,
    CHECK ((level = 'personal') = (owner <> '')),
    CHECK ((level = 'section') = (section <> '')),
    UNIQUE (level, owner, section, modality, body_part, folder, name)
);
CREATE INDEX report_templates_modality ON report_templates (modality, body_part);
CREATE INDEX report_templates_owner ON report_templates (owner) WHERE owner <> '';
CREATE INDEX report_templates_normal ON report_templates (procedure_code) WHERE procedure_code IS NOT NULL;
INSERT INTO report_templates (level, modality, body_part, name, findings, impression, updated_at, updated_by)
    SELECT 'department', modality, body_part, title, findings, impression, updated_at, updated_by
    FROM report_phrases;
