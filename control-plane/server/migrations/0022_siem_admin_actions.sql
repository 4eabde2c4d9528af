-- SIEM sinks also receive the tenant's admin actions (configuration, account and sign-in
-- records of the admin-action trail): the last admin_actions.seq delivered.
ALTER TABLE siem_sinks ADD COLUMN admin_cursor BIGINT NOT NULL DEFAULT 0;
