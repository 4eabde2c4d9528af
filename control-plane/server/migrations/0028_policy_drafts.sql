-- Policy drafts (issue 6): work in progress, stored (valid or not) but not published.
CREATE TABLE policy_drafts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    note TEXT NOT NULL,
    policy_json TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX policy_drafts_tenant ON policy_drafts (tenant_id, updated_at_ms);
