-- Control-plane security (issue 11): sign-in throttling shared by every replica, and session
-- idle timeouts. Portable SQL (SQLite and PostgreSQL).
--
-- One row per throttled key: `account:<user name>` (any submitted name, known or not, so a lock
-- reveals nothing about which names exist) or `address:<client address or IPv6 /64>`.
-- `failures` counts refused sign-ins since `window_start_ms`; `locked_until_ms` is set when the
-- budget is spent; `episodes` counts lockouts (each one twice as long as the last, capped);
-- `version` makes every update a compare-and-set, so concurrent replicas never lose a failure.
CREATE TABLE login_throttle (
    throttle_key TEXT PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    locked_until_ms BIGINT,
    episodes BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX login_throttle_updated ON login_throttle (updated_at_ms);

-- When a session was last used (idle timeout); NULL for rows older than this migration, which
-- count as used at their creation.
ALTER TABLE credentials ADD COLUMN last_used_at_ms BIGINT;
CREATE INDEX credentials_admin ON credentials (admin_id);
