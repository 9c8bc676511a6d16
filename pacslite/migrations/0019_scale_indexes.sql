-- Indexes the pages need at the paper's scale (200,000 exams, 4.9 M instances, 7.1 M audit
-- rows), each for a query that otherwise read a whole table (issue 17's measurements).
CREATE INDEX IF NOT EXISTS exams_registered ON exams (registered_at);
CREATE INDEX IF NOT EXISTS studies_first_received ON studies (first_received_at);
CREATE INDEX IF NOT EXISTS refilings_to_exam ON refilings (to_exam_ref);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor);
