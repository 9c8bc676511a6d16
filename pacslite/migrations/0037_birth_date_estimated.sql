-- A birth date typed as an age (67岁, 8月, 15天) is an estimate, and says so wherever it is shown.
ALTER TABLE patients ADD COLUMN birth_date_estimated INTEGER NOT NULL DEFAULT 0;
