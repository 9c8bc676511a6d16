-- The printed report (issue 18): the visit's numbers and the ward and bed where known, and a
-- radiologist's signature image uploaded by an admin (re-encoded PNG, small).
ALTER TABLE exams ADD COLUMN outpatient_number TEXT NOT NULL DEFAULT '';
ALTER TABLE exams ADD COLUMN inpatient_number TEXT NOT NULL DEFAULT '';
ALTER TABLE exams ADD COLUMN ward TEXT NOT NULL DEFAULT '';
ALTER TABLE exams ADD COLUMN bed TEXT NOT NULL DEFAULT '';

CREATE TABLE user_signatures (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id),
    png          BLOB NOT NULL,
    sha256       TEXT NOT NULL,
    uploaded_at  TEXT NOT NULL,
    uploaded_by  TEXT NOT NULL
);
