-- Re-enrolment (issue 6): a claim code may be bound to an existing device; enrolling with it
-- gives that device new keys and a new certificate, and its old certificate stops working.
ALTER TABLE claim_codes ADD COLUMN target_device_id TEXT;
