-- The audit log filtered by outcome (the few denied or failed rows among millions) is read
-- newest first through this index instead of scanning the whole log (issue 17).
CREATE INDEX IF NOT EXISTS audit_log_outcome ON audit_log (outcome);
