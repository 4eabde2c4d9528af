-- Fleet health (issue 6): each edge's last heartbeat figures, and the version-lag alerts
-- already raised (one per device and expected version).
CREATE TABLE device_health (
    device_id TEXT PRIMARY KEY,
    spooled_events BIGINT NOT NULL,
    load1_milli BIGINT,
    cpus BIGINT,
    mem_total_kib BIGINT,
    mem_available_kib BIGINT,
    reported_at_ms BIGINT NOT NULL,
    lag_alerted_version BIGINT
);
