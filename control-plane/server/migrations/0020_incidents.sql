-- Incidents (issue 7): opened from audit events, tracked against the NIS2 Art. 23 deadlines
-- (early warning 24 h, notification 72 h, final report one month after the notification).
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity TEXT NOT NULL,
    aware_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    early_warning_ms BIGINT,
    notification_ms BIGINT,
    final_report_ms BIGINT,
    closed_at_ms BIGINT,
    -- Deadline alerts already raised, e.g. "early_warning:soon early_warning:missed".
    alerted TEXT NOT NULL
);
CREATE INDEX incidents_tenant ON incidents (tenant_id, created_at_ms);

-- Audit events (by the reference given to clients) that belong to an incident.
CREATE TABLE incident_events (
    incident_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (incident_id, reference)
);

-- What happened to the incident, in order: opened, events added, submissions, closed.
CREATE TABLE incident_timeline (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, at_ms);
