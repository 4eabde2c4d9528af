-- A remote user's TOTP code is accepted once: the step of the last code used is kept, and a
-- sign-in with a code of that step or an earlier one is refused (as for admins, 0003).
-- Enrolling a new seed clears it.
ALTER TABLE ztna_users ADD COLUMN totp_last_step BIGINT;
