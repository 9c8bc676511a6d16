-- A re-filing of one series: it left study from_study_ref for the new study study_ref (its
-- files got a new StudyInstanceUID). NULL for a re-filing of a whole study.
ALTER TABLE refilings ADD COLUMN from_study_ref INTEGER REFERENCES studies (id);
ALTER TABLE refilings ADD COLUMN series_ref INTEGER REFERENCES series (id);
