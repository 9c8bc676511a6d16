-- Reports. One report per exam, kept in versions: version 1 is the report, every later
-- version an amendment with its reason. A version is a draft, then preliminary, then final;
-- a final version never changes and no version is ever deleted (triggers below).
CREATE TABLE report_versions (
    id                INTEGER PRIMARY KEY,
    exam_ref          INTEGER NOT NULL REFERENCES exams (id),
    version           INTEGER NOT NULL CHECK (version >= 1),
    status            TEXT NOT NULL CHECK (status IN ('draft', 'preliminary', 'final')),
    findings          TEXT NOT NULL DEFAULT '',
    impression        TEXT NOT NULL DEFAULT '',
    amendment_reason  TEXT NOT NULL DEFAULT '',
    -- +1 on every save; a save names the revision it was editing, so a stale save is refused
    revision          INTEGER NOT NULL DEFAULT 1,
    -- who has it open in the editor, and since when (refreshed by every save)
    held_by           TEXT,
    held_at           TEXT,
    created_at        TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    updated_by        TEXT NOT NULL,
    preliminary_at    TEXT,
    preliminary_by    TEXT,
    signed_at         TEXT,
    signed_by         TEXT,
    UNIQUE (exam_ref, version),
    CHECK ((version = 1) = (amendment_reason = '')),
    CHECK ((status = 'final') = (signed_at IS NOT NULL))
);

CREATE TRIGGER report_final_never_changes BEFORE UPDATE ON report_versions WHEN OLD.status = 'final'
BEGIN
    SELECT RAISE(ABORT, 'a final report version cannot change');
END;

CREATE TRIGGER report_versions_are_kept BEFORE DELETE ON report_versions
BEGIN
    SELECT RAISE(ABORT, 'report versions are never deleted');
END;

-- Phrases a radiologist inserts, per modality and body part (empty: any body part).
CREATE TABLE report_phrases (
    id          INTEGER PRIMARY KEY,
    modality    TEXT NOT NULL,
    body_part   TEXT NOT NULL DEFAULT '',
    title       TEXT NOT NULL,
    findings    TEXT NOT NULL DEFAULT '',
    impression  TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    UNIQUE (modality, body_part, title)
);

-- "Images missing": a radiologist told the technologists; cleared when images are filed.
ALTER TABLE exams ADD COLUMN images_missing_at TEXT;
ALTER TABLE exams ADD COLUMN images_missing_by TEXT;
CREATE INDEX exams_images_missing ON exams (images_missing_at) WHERE images_missing_at IS NOT NULL;
