-- Key images (关键图像, issue 32): images a radiologist marked while reporting, with a short note
-- and the window they were seen in (the printed 图文报告 lays them out so). When a final report
-- version is signed with key images, they are stored in the study as a DICOM Key Object
-- Selection document ("Of Interest"), filed like any image; an amendment's new signature stores
-- a new one and keeps the old. Written by pacs.key_images.
CREATE TABLE key_images (
    id            INTEGER PRIMARY KEY,
    exam_ref      INTEGER NOT NULL REFERENCES exams(id),
    instance_ref  INTEGER NOT NULL REFERENCES instances(id),
    frame         INTEGER NOT NULL DEFAULT 0,
    center        REAL,
    width         REAL,
    note          TEXT NOT NULL DEFAULT '',
    marked_by     TEXT NOT NULL,
    marked_at     TEXT NOT NULL,
    UNIQUE (exam_ref, instance_ref, frame)
);
CREATE INDEX key_images_exam ON key_images (exam_ref, id);
-- Each final version's Key Object Selection document, once stored (the duty stores those due);
-- '' when the version kept the key images of the document stored before it (none stored again).
CREATE TABLE key_object_documents (
    id                 INTEGER PRIMARY KEY,
    version_ref        INTEGER NOT NULL UNIQUE REFERENCES report_versions(id),
    sop_instance_uid   TEXT NOT NULL,
    images             INTEGER NOT NULL,
    fingerprint        TEXT NOT NULL,            -- the key images and notes it holds (SHA-256)
    stored_at          TEXT NOT NULL
);
