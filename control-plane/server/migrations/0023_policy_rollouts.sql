-- Staged policy rollouts (issue 6): a new version goes to canary devices first; the rest of the
-- fleet keeps the stable version until the canaries report healthy for a window (promoted),
-- and a failing canary rolls it back (the stable policy republished as a newer version).
CREATE TABLE policy_rollouts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    stable_version BIGINT NOT NULL,
    canary_json TEXT NOT NULL,
    window_ms BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    decided_at_ms BIGINT,
    reason TEXT,
    rollback_version BIGINT,
    created_by TEXT NOT NULL
);
CREATE INDEX policy_rollouts_tenant ON policy_rollouts (tenant_id, started_at_ms);

-- Health reports of edges after applying a version.
CREATE TABLE policy_health (
    device_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    healthy BIGINT NOT NULL,
    failing_json TEXT NOT NULL,
    reported_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, version)
);
