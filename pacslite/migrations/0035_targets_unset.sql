-- Exams registered before the catalogue (0031) have no report target of their own; the first
-- start fills it in once (exams.fill_missing_targets). This index finds them, and stays
-- empty afterwards: registration always sets the target.
CREATE INDEX exams_target_unset ON exams (id) WHERE target_hours IS NULL;
