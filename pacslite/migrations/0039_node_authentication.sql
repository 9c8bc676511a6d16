-- Node authentication (issue 27). A configured AE is accepted only from its host (resolved)
-- or the addresses in also_from, unless any_host (its address changes: DHCP); an AE with no
-- host is any host, as before, until the admin sets one. tls: it must associate over TLS, and
-- pacslite sends to it over TLS. certificate: its client certificate (PEM), pinned by SHA-256.
ALTER TABLE application_entities ADD COLUMN any_host INTEGER NOT NULL DEFAULT 0;
ALTER TABLE application_entities ADD COLUMN also_from TEXT NOT NULL DEFAULT '';
ALTER TABLE application_entities ADD COLUMN tls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE application_entities ADD COLUMN certificate TEXT NOT NULL DEFAULT '';
ALTER TABLE application_entities ADD COLUMN certificate_sha256 TEXT NOT NULL DEFAULT '';

-- Refusals get new reasons (wrong_host, tls_required, wrong_certificate, tls_handshake): the
-- reasons are the code's (aes.REJECTION_REASONS), not a CHECK list. Every row and index kept.
CREATE TABLE association_rejections_new (
    id          INTEGER PRIMARY KEY,
    calling_ae  TEXT NOT NULL,
    called_ae   TEXT NOT NULL,
    address     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 1,
    first_at    TEXT NOT NULL,
    last_at     TEXT NOT NULL,
    UNIQUE (calling_ae, called_ae, address, reason)
);
INSERT INTO association_rejections_new SELECT * FROM association_rejections;
DROP TABLE association_rejections;
ALTER TABLE association_rejections_new RENAME TO association_rejections;
CREATE INDEX association_rejections_address ON association_rejections (address);
CREATE INDEX association_rejections_last ON association_rejections (last_at);
