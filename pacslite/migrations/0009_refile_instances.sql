-- A re-filing of some instances of a series: they left series series_ref for a new series in
-- a new study (new SeriesInstanceUID and StudyInstanceUID in their files).
ALTER TABLE refilings ADD COLUMN instances_only INTEGER NOT NULL DEFAULT 0;
