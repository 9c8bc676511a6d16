-- The scrub leaves the job queue for its own thread, in two passes: a quick one (every file
-- there, with its size) each SCRUB_INTERVAL_HOURS, and a full one (SHA-256) spread over
-- SCRUB_FULL_DAYS. last_instance stays the full pass's cursor.
ALTER TABLE scrub_state ADD COLUMN quick_cursor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scrub_state ADD COLUMN quick_started_at TEXT;
ALTER TABLE scrub_state ADD COLUMN quick_done_at TEXT;
ALTER TABLE scrub_state ADD COLUMN full_started_at TEXT;
ALTER TABLE scrub_state ADD COLUMN full_done_at TEXT;
UPDATE scrub_state SET full_done_at = updated_at, last_instance = 0 WHERE rounds > 0;
UPDATE jobs SET state = 'done', message = 'the scrub runs in its own thread now'
 WHERE kind = 'scrub' AND state IN ('queued', 'running', 'paused');
