-- Tamper evidence for the audit trail (issue 7): device batch signatures and a per-tenant
-- RFC 6962 Merkle log with signed checkpoints. Portable SQL (SQLite and PostgreSQL).

-- Position of each event's leaf in its tenant's Merkle log (0, 1, 2, … in ingest order).
-- Nullable so that the column can be added to a populated table; rows stored before this
-- migration are numbered below, new rows get their index in the ingest transaction.
ALTER TABLE audit_events ADD COLUMN log_index BIGINT;

UPDATE audit_events SET log_index = (
    SELECT COUNT(*) FROM audit_events e2
    WHERE e2.tenant_id = audit_events.tenant_id
      AND (e2.received_at_ms < audit_events.received_at_ms
        OR (e2.received_at_ms = audit_events.received_at_ms
          AND (e2.device_id < audit_events.device_id
            OR (e2.device_id = audit_events.device_id AND e2.seq < audit_events.seq))))
);
CREATE UNIQUE INDEX audit_events_log ON audit_events (tenant_id, log_index);

-- Size of each tenant's log: the next leaf index.
CREATE TABLE audit_logs (
    tenant_id TEXT PRIMARY KEY,
    size BIGINT NOT NULL
);
INSERT INTO audit_logs (tenant_id, size)
    SELECT tenant_id, COUNT(*) FROM audit_events GROUP BY tenant_id;

-- A device's signature over one uploaded batch (over tenant, device, first and last seq and
-- the chain hash of the last event). Batches from edges that do not sign are not recorded.
CREATE TABLE audit_batches (
    device_id TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    first_seq BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    last_hash TEXT NOT NULL,
    alg TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, last_seq)
);

-- Signed tree heads over each tenant's log.
CREATE TABLE audit_checkpoints (
    tenant_id TEXT NOT NULL,
    tree_size BIGINT NOT NULL,
    root_hash TEXT NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tree_size)
);
