-- Review (审核, issue 18): the radiologists who may review and issue another's report.
ALTER TABLE users ADD COLUMN can_review INTEGER NOT NULL DEFAULT 0;
