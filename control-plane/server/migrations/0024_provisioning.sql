-- Provisioning (issue 6): claim codes get a label (bulk CSV creation) and can be revoked
-- (revoking also expires them, so enrolment refuses them like any expired code).
ALTER TABLE claim_codes ADD COLUMN label TEXT;
ALTER TABLE claim_codes ADD COLUMN revoked_at_ms BIGINT;
-- Why and when a device was decommissioned.
ALTER TABLE devices ADD COLUMN decommissioned_at_ms BIGINT;
ALTER TABLE devices ADD COLUMN decommission_reason TEXT;
