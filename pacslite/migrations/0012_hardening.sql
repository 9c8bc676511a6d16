-- Issue 13: identical copies of a kept-aside duplicate are recognised (by SOP Instance UID and hash).
CREATE INDEX instance_conflicts_sop ON instance_conflicts (sop_instance_uid, sha256);

-- Refusals are counted, bounded per address (floods fold into one row "*" per address).
CREATE INDEX association_rejections_address ON association_rejections (address);
CREATE INDEX association_rejections_last ON association_rejections (last_at);

-- Presentation contexts (services) an accepted association asked for and was refused.
CREATE TABLE refused_contexts (
    id               INTEGER PRIMARY KEY,
    calling_ae       TEXT NOT NULL,
    address          TEXT NOT NULL,
    abstract_syntax  TEXT NOT NULL,
    reason           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 1,
    first_at         TEXT NOT NULL,
    last_at          TEXT NOT NULL,
    UNIQUE (calling_ae, address, abstract_syntax, reason)
);
CREATE INDEX refused_contexts_address ON refused_contexts (address);
CREATE INDEX refused_contexts_last ON refused_contexts (last_at);

-- When a refusal from an address was last audited, and how many since were not (one a minute).
CREATE TABLE refusal_audits (
    address     TEXT PRIMARY KEY,
    audited_at  TEXT NOT NULL,
    suppressed  INTEGER NOT NULL DEFAULT 0
);
