-- Filing when the header lies (issue 28).
--
-- What the worklist offered each station: one row per (station, exam), the first and the last
-- time the exam was in an answer to that station's worklist query. A console can only have
-- picked an exam it was offered, so the quarantine's ranking weighs it. Rows older than the
-- log's keeping time are removed by ris.worklist as it writes.
CREATE TABLE worklist_offers (
    calling_ae   TEXT NOT NULL,
    exam_ref     INTEGER NOT NULL REFERENCES exams(id),
    first_at     TEXT NOT NULL,
    last_at      TEXT NOT NULL,
    PRIMARY KEY (calling_ae, exam_ref)
);
CREATE INDEX worklist_offers_exam ON worklist_offers (exam_ref);
CREATE INDEX worklist_offers_last ON worklist_offers (last_at);

-- The body part a series shows (BodyPartExamined), for the ranking and the image comparison.
ALTER TABLE series ADD COLUMN body_part TEXT NOT NULL DEFAULT '';

-- The statistics read the exams grouped as they count them (modality, source, station, report
-- turnaround to 0.1 h, target) from this covering index in its own order: no sort of two
-- years of exams (450 ms → 100 ms at the paper's scale). The turnaround expression is the one
-- in pacslite/statistics.py (_TURNAROUND); SQLite uses the index only where they are equal.
-- It replaces exams_statistics (read by nothing else), so an exam's write keeps one such index.
DROP INDEX IF EXISTS exams_statistics;
CREATE INDEX exams_statistics_groups ON exams (
    modality, source, station_ae,
    (CASE WHEN status <> 'cancelled' AND images_first_at IS NOT NULL AND reported_at IS NOT NULL
          THEN ROUND((julianday(reported_at) - julianday(images_first_at)) * 24, 1) END),
    target_hours, registered_at, status, instance_count, result_class, reported_at, report_due_at, images_first_at);
