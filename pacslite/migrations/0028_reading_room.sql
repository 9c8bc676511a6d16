-- The reading list (issue 18): a radiologist "takes" an exam, and others see who has it; report
-- targets by priority, so the statistics' covering index carries the priority too.
ALTER TABLE exams ADD COLUMN taken_by TEXT;
ALTER TABLE exams ADD COLUMN taken_at TEXT;
DROP INDEX IF EXISTS exams_statistics;
CREATE INDEX exams_statistics ON exams (registered_at, modality, source, station_ae, status, instance_count,
                                        images_first_at, reported_at, result_class, priority);
