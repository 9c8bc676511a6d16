-- Image quality control (图像质控, issue 32): the reading radiologist's grade of an exam's images
-- (X-ray 甲/乙/丙/丁 as A–D, CT/MR and the others 3 best … 0 not diagnostic) with the reasons of a
-- lower grade; one grade an exam, graded again it changes (audited). Written by ris.quality.
CREATE TABLE image_grades (
    id          INTEGER PRIMARY KEY,
    exam_ref    INTEGER NOT NULL UNIQUE REFERENCES exams(id),
    grade       TEXT NOT NULL CHECK (grade IN ('A', 'B', 'C', 'D', '0', '1', '2', '3')),
    reasons     TEXT NOT NULL DEFAULT '',   -- comma-separated: positioning, coverage, artefacts, exposure, other
    graded_by   TEXT NOT NULL,
    graded_at   TEXT NOT NULL
);
CREATE INDEX image_grades_at ON image_grades (graded_at);
