-- MSP policy templates (issue 6) and the tenants that inherit them with overrides.
CREATE TABLE policy_templates (
    id TEXT PRIMARY KEY,
    msp_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    policy_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX policy_templates_name ON policy_templates (msp_id, name);

CREATE TABLE policy_sources (
    tenant_id TEXT PRIMARY KEY,
    template_id TEXT NOT NULL,
    overrides_json TEXT NOT NULL,
    template_version BIGINT NOT NULL,
    policy_version BIGINT NOT NULL
);
CREATE INDEX policy_sources_template ON policy_sources (template_id);
