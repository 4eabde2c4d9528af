-- Portable SQL: runs unchanged on SQLite and PostgreSQL (TEXT, BIGINT, no autoincrement).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ca_cert_pem TEXT NOT NULL,
    ca_key_pem TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Browser sessions and API tokens; only a SHA-256 of the secret is stored.
CREATE TABLE credentials (
    token_hash TEXT PRIMARY KEY,
    admin_id TEXT NOT NULL REFERENCES admins(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE claim_codes (
    code_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    site_id TEXT NOT NULL REFERENCES sites(id),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    device_id TEXT
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    site_id TEXT NOT NULL REFERENCES sites(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    cert_pem TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    enrolled_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT,
    applied_version BIGINT,
    edge_version TEXT
);

CREATE TABLE policy_versions (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    version BIGINT NOT NULL,
    policy_json TEXT NOT NULL,
    bundle_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE audit_events (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    identity TEXT,
    resource TEXT,
    route TEXT,
    method TEXT,
    path TEXT,
    status BIGINT,
    reference TEXT NOT NULL,
    hash TEXT NOT NULL,
    event_json TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX audit_events_tenant_ts ON audit_events (tenant_id, ts_ms);
CREATE INDEX audit_events_reference ON audit_events (reference);

-- Last verified link of each device's chain: ingest continues from here.
CREATE TABLE audit_heads (
    device_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    last_hash TEXT NOT NULL
);

-- Things an operator must look at: chain gaps and forks, channel protocol errors, refused bundles.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    device_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX alerts_created ON alerts (created_at_ms);
