-- Scanned request forms attached to an exam. The file lives in the store at a generated path.
CREATE TABLE request_forms (
    id             INTEGER PRIMARY KEY,
    exam_ref       INTEGER NOT NULL REFERENCES exams(id),
    media_type     TEXT NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png', 'application/pdf')),
    size           INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    storage_path   TEXT NOT NULL UNIQUE,
    original_name  TEXT NOT NULL DEFAULT '',
    uploaded_at    TEXT NOT NULL,
    uploaded_by    TEXT NOT NULL
);
CREATE INDEX request_forms_exam ON request_forms (exam_ref);
