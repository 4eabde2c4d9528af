-- Audit retention (issue 7). A deleted event keeps only its integrity skeleton (device, seq,
-- tenant, time, log position, chain hash): its content (event_json emptied, reference and the
-- searchable columns cleared) is gone, while the Merkle log, the signed checkpoints and the
-- chain links of the kept events stay verifiable.
ALTER TABLE audit_events ADD COLUMN pruned_at_ms BIGINT;

-- Retention per tenant (months); tenants without a row keep the default (18).
CREATE TABLE audit_retention_settings (
    tenant_id TEXT PRIMARY KEY,
    months BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Signed records of retention runs (sase-model::retention::RetentionRecord as JSON).
CREATE TABLE audit_retention_records (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    executed_at_ms BIGINT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX audit_retention_records_tenant ON audit_retention_records (tenant_id, executed_at_ms);
