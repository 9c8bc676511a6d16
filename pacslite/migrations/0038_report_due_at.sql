-- Report targets count the department's reporting hours (issue 26): when an exam's report was
-- due is worked out from the timetable at its first final signature and kept beside its time,
-- so the statistics' "within target" is one comparison read from their covering indexes.
-- Exams reported before this keep NULL and are compared by clock hours, as they were.
ALTER TABLE exams ADD COLUMN report_due_at TEXT;
DROP INDEX IF EXISTS exams_statistics;
CREATE INDEX exams_statistics ON exams (registered_at, modality, source, station_ae, status, instance_count,
                                        images_first_at, reported_at, result_class, priority, target_hours,
                                        report_due_at);
DROP INDEX IF EXISTS exams_reported;
CREATE INDEX exams_reported ON exams (reported_at, reported_by, modality, images_first_at, target_hours, report_due_at)
    WHERE reported_at IS NOT NULL;
