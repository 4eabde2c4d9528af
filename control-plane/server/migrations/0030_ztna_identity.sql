-- ZTNA identity binding (issue 5): remote users (not admins), their groups, TOTP seeds (sealed
-- like admins' seeds), sessions of the sase-connect client, registered devices with their
-- tunnel address and posture, per-site address pools and access rules. The tenant's tunnel
-- peers are compiled from these tables into every policy version the control plane publishes.
CREATE TABLE ztna_settings (
    tenant_id TEXT PRIMARY KEY,
    session_ttl_secs BIGINT NOT NULL,
    next_recompile_ms BIGINT
);
CREATE TABLE ztna_sites (
    site_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    edge_public_key TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE ztna_users (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret TEXT,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);
CREATE TABLE ztna_members (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_id, group_name)
);
CREATE TABLE ztna_access_rules (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    rule_json TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE ztna_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    mfa_at_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ztna_sessions_user ON ztna_sessions (user_id);
CREATE TABLE ztna_devices (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    address TEXT NOT NULL,
    session_id TEXT,
    posture_json TEXT,
    posture_at_ms BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (tenant_id, public_key),
    UNIQUE (site_id, address)
);
CREATE INDEX ztna_devices_tenant ON ztna_devices (tenant_id);
