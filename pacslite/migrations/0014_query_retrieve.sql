-- Issue 14: what a Query/Retrieve C-FIND answers and matches at the study level.
ALTER TABLE studies ADD COLUMN study_time TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN study_id TEXT NOT NULL DEFAULT '';
CREATE INDEX studies_date ON studies (study_date);
