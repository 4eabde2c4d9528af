-- MSP tenancy, roles, TOTP MFA, scoped API tokens and the admin-action trail (issue 6).
-- Portable SQL (SQLite and PostgreSQL).

-- An MSP owns customer tenants. Existing installations get one default MSP that owns every
-- existing tenant; the existing admins become its owners.
CREATE TABLE msps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO msps (id, name, created_at_ms) VALUES ('msp_default', 'Default MSP', 0);

ALTER TABLE tenants ADD COLUMN msp_id TEXT;
UPDATE tenants SET msp_id = 'msp_default' WHERE msp_id IS NULL;

-- Role and scope of each admin: MSP roles carry msp_id, customer roles carry tenant_id too.
ALTER TABLE admins ADD COLUMN role TEXT;
ALTER TABLE admins ADD COLUMN msp_id TEXT;
ALTER TABLE admins ADD COLUMN tenant_id TEXT;
ALTER TABLE admins ADD COLUMN created_by TEXT;
ALTER TABLE admins ADD COLUMN disabled_at_ms BIGINT;
-- TOTP (RFC 6238): the base32 seed, set at enrolment; enabled once a first code is confirmed.
-- The seed is stored as is: encryption at rest is issue 11's.
ALTER TABLE admins ADD COLUMN totp_secret TEXT;
ALTER TABLE admins ADD COLUMN totp_enabled_at_ms BIGINT;
-- Last accepted time step, so that a code is accepted once.
ALTER TABLE admins ADD COLUMN totp_last_step BIGINT;
UPDATE admins SET role = 'msp_owner', msp_id = 'msp_default' WHERE role IS NULL;

-- Scopes of an API token (space-separated permission names); NULL: the admin's role (sessions).
ALTER TABLE credentials ADD COLUMN scopes TEXT;

-- Every admin action: who, what, when, where, and the before/after diff, hash-chained
-- (hash = SHA-256 over the previous hash and the canonical record) in one global sequence.
CREATE TABLE admin_actions (
    seq BIGINT PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    msp_id TEXT NOT NULL,
    tenant_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    diff_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX admin_actions_msp ON admin_actions (msp_id, seq);
CREATE INDEX admin_actions_tenant ON admin_actions (tenant_id, seq);
