-- Issue 14: what each configured AE may do. Existing AEs are modalities: they keep storing and
-- reading the worklist, and may send MPPS and ask for storage commitment.
ALTER TABLE application_entities ADD COLUMN rights TEXT NOT NULL DEFAULT 'store,worklist,mpps,commitment';
