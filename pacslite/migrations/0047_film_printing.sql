-- Film printing (胶片打印, issue 31): a print job is an exam's chosen images in a film layout,
-- size and orientation, each with its window, for one printer (a configured AE of modality HC);
-- queued, sent by DICOM Basic Grayscale Print Management, tried again, failed with an alert.
-- Written by pacs.printing.
CREATE TABLE print_jobs (
    id               INTEGER PRIMARY KEY,
    exam_ref         INTEGER NOT NULL REFERENCES exams(id),
    printer_ae       TEXT NOT NULL,
    layout           TEXT NOT NULL,          -- columns x rows: 1x1, 2x2, 3x4, 4x5, 4x6
    film_size        TEXT NOT NULL,          -- 14INX17IN …
    orientation      TEXT NOT NULL CHECK (orientation IN ('PORTRAIT', 'LANDSCAPE')),
    copies           INTEGER NOT NULL DEFAULT 1,
    images           TEXT NOT NULL,          -- JSON: [{"instance": id, "center": c, "width": w}, …]
    films            INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'printing', 'printed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    next_attempt_at  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    printed_at       TEXT
);
CREATE INDEX print_jobs_due ON print_jobs (next_attempt_at) WHERE state = 'queued';
CREATE INDEX print_jobs_exam ON print_jobs (exam_ref, id);
CREATE INDEX print_jobs_printed ON print_jobs (printed_at) WHERE state = 'printed';
