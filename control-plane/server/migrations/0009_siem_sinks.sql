-- SIEM forwarding (issue 7): per-tenant sinks that receive the tenant's audit log in order.
-- `cursor` is the next log position (audit_events.log_index) to deliver; it only moves past
-- events the sink is known to have taken, so a restart or a broken connection resends instead
-- of losing (at-least-once delivery).
CREATE TABLE siem_sinks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    format TEXT NOT NULL,
    transport TEXT NOT NULL,
    address TEXT NOT NULL,
    server_name TEXT,
    ca_pem TEXT,
    cursor BIGINT NOT NULL,
    last_error TEXT,
    last_delivered_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX siem_sinks_tenant_name ON siem_sinks (tenant_id, name);
