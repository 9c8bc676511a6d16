-- Modalities (issue 19): when each configured AE last associated with pacslite (any service),
-- and the last image time read from the deliveries by calling AE.
ALTER TABLE application_entities ADD COLUMN last_association_at TEXT;
CREATE INDEX arrivals_source ON arrivals (source, last_at);
