-- Continuous access evaluation and API inventory (issue 4). Portable SQL.
-- The SET transmitter each tenant trusts (CAEP push endpoint), set through the admin API.
CREATE TABLE caep_transmitters (
    tenant_id TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    audience TEXT NOT NULL,
    jwks_json TEXT NOT NULL,
    ttl_seconds BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
-- Every accepted SET, by jti: a replayed SET is acknowledged and not applied again.
CREATE TABLE caep_events (
    tenant_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, jti)
);
-- Revocations in force (pushed to every edge of the tenant, again after each reconnect).
CREATE TABLE caep_revocations (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    revocation_json TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX caep_revocations_expiry ON caep_revocations (tenant_id, expires_at_ms);
-- What the edges saw, per device and endpoint (API9).
CREATE TABLE api_inventory (
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    template TEXT NOT NULL,
    count BIGINT NOT NULL,
    denied BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, resource, route, method, template)
);
CREATE INDEX api_inventory_tenant ON api_inventory (tenant_id);
