-- Online guessing of TOTP codes (issue 6): consecutive wrong codes at sign-in, and the time
-- until which sign-in with MFA is refused after too many. Portable SQL.
ALTER TABLE admins ADD COLUMN mfa_failures BIGINT;
ALTER TABLE admins ADD COLUMN mfa_locked_until_ms BIGINT;
