-- Purging after the retention period: the file a re-filing superseded (the original, or the
-- rewritten one after an undo) is removed, and noted here.
ALTER TABLE refiled_files ADD COLUMN purged_at TEXT;
