-- The radiologist classes the result when signing (issue 18): normal, abnormal or critical.
-- Kept on the version; the exam keeps its issued report's class for the statistics' positive
-- rate, which read it from the covering index with the other exam figures.
ALTER TABLE report_versions ADD COLUMN result_class TEXT CHECK (result_class IN ('normal', 'abnormal', 'critical'));
ALTER TABLE exams ADD COLUMN result_class TEXT;
DROP INDEX IF EXISTS exams_statistics;
CREATE INDEX exams_statistics ON exams (registered_at, modality, source, station_ae, status, instance_count,
                                        images_first_at, reported_at, result_class);
