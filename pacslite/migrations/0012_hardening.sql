-- Issue 13: identical copies of a kept-aside duplicate are recognised (by SOP Instance UID and hash).
CREATE INDEX instance_conflicts_sop ON instance_conflicts (sop_instance_uid, sha256);
