//! Sign-in throttling and temporary lockout, per account and per source address.
//!
//! * **Per account** (the submitted user name, whether it exists or not, so a lockout says
//!   nothing about which names are real): after [`Settings::account`]`.max_failures` refused
//!   sign-ins within its window the name is locked; each further lockout episode lasts twice as
//!   long as the last, up to a cap. A successful sign-in clears the account's counter.
//! * **Per source address** (the TCP peer; IPv6 by /64): a larger budget across every account,
//!   against password spraying. A successful sign-in does not clear it (one valid account must
//!   not buy an attacker fresh guesses on the others).
//!
//! During a lock every attempt is refused with `429` and `Retry-After` **before** the password
//! is looked at, so the right password during a lockout is refused exactly like a wrong one (no
//! oracle). Lockouts (`admin.lockout`) and refused attempts (`admin.sign_in_throttled`) are
//! recorded in the hash-chained admin-action trail.
//!
//! The counters live in the database (`login_throttle`, migration 0029), updated by
//! compare-and-set on a version column, so replicas on one PostgreSQL database share them.
//! [`Policy`] is the core without I/O: it takes the stored [`Entry`] and `now`.

use std::net::IpAddr;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::error::ApiError;
use crate::state::SharedState;
use crate::store::StoreError;

/// One throttling budget: `max_failures` refused sign-ins within `window_ms` lock the key for
/// `lock_ms`, doubled for each further episode up to `max_lock_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Refused sign-ins that start a lockout.
    pub max_failures: i64,
    /// Window over which they are counted (ms).
    pub window_ms: i64,
    /// Length of the first lockout (ms).
    pub lock_ms: i64,
    /// Longest lockout (ms).
    pub max_lock_ms: i64,
}

/// Both budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Per submitted user name.
    pub account: Policy,
    /// Per client address (IPv6 /64), across accounts.
    pub address: Policy,
}

const MINUTE_MS: i64 = 60_000;

impl Default for Settings {
    /// 5 failures in 15 min lock an account for 15 min (then 30, 60, … up to 24 h); 30
    /// failures in 15 min lock an address the same way.
    fn default() -> Settings {
        Settings {
            account: Policy {
                max_failures: 5,
                window_ms: 15 * MINUTE_MS,
                lock_ms: 15 * MINUTE_MS,
                max_lock_ms: 24 * 60 * MINUTE_MS,
            },
            address: Policy {
                max_failures: 30,
                window_ms: 15 * MINUTE_MS,
                lock_ms: 15 * MINUTE_MS,
                max_lock_ms: 24 * 60 * MINUTE_MS,
            },
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the budgets for this process (once, at start; later calls are ignored).
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The budgets in force ([`Settings::default`] unless [`configure`]d).
pub fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// The stored state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// Start of the current counting window (Unix ms).
    pub window_start_ms: i64,
    /// Refused sign-ins in the window.
    pub failures: i64,
    /// Locked until (Unix ms), if a lockout was ever started.
    pub locked_until_ms: Option<i64>,
    /// Lockout episodes so far.
    pub episodes: i64,
}

/// What a refused sign-in did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The new state.
    pub entry: Entry,
    /// `Some(until)` when this failure started a lockout.
    pub locked_until_ms: Option<i64>,
}

impl Policy {
    /// Milliseconds left of a lock in force at `now`, if any.
    pub fn locked_for(&self, entry: &Entry, now_ms: i64) -> Option<i64> {
        entry
            .locked_until_ms
            .filter(|until| *until > now_ms)
            .map(|until| until - now_ms)
    }

    /// Length of the lockout of episode `n` (1-based): `lock_ms · 2^(n-1)`, capped.
    pub fn lock_length(&self, episode: i64) -> i64 {
        let shift = u32::try_from(episode.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        self.lock_ms
            .saturating_mul(1_i64 << shift)
            .min(self.max_lock_ms)
            .max(self.lock_ms.min(self.max_lock_ms))
    }

    /// Counts one refused sign-in at `now`.
    pub fn on_failure(&self, old: Option<Entry>, now_ms: i64) -> Failure {
        let mut entry = old.unwrap_or(Entry {
            window_start_ms: now_ms,
            ..Entry::default()
        });
        if self.locked_for(&entry, now_ms).is_some() {
            // Already locked (a concurrent attempt got past the check): nothing to add.
            return Failure {
                entry,
                locked_until_ms: None,
            };
        }
        if now_ms.saturating_sub(entry.window_start_ms) >= self.window_ms || entry.failures == 0 {
            entry.window_start_ms = now_ms;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures < self.max_failures {
            return Failure {
                entry,
                locked_until_ms: None,
            };
        }
        entry.episodes += 1;
        let until = now_ms.saturating_add(self.lock_length(entry.episodes));
        entry.locked_until_ms = Some(until);
        entry.failures = 0;
        entry.window_start_ms = until;
        Failure {
            entry,
            locked_until_ms: Some(until),
        }
    }
}

/// Which budget refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user name is locked.
    Account,
    /// The client address is locked.
    Address,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
        }
    }

    /// The stable error code of a refusal by this budget.
    pub fn code(self) -> &'static str {
        match self {
            Scope::Account => sase_model::reason::Reason::AccountLocked.as_str(),
            Scope::Address => sase_model::reason::Reason::LoginThrottled.as_str(),
        }
    }
}

/// The key of a user name (trimmed, lower-cased, bounded).
pub fn account_key(username: &str) -> String {
    let name: String = username.trim().to_lowercase().chars().take(200).collect();
    format!("account:{name}")
}

/// The key of a tenant's remote (ZTNA) user: its own namespace, so a remote user never shares a
/// counter with an admin of the same name, nor with a namesake in another tenant.
pub fn remote_user_key(tenant_id: &str, username: &str) -> String {
    let tenant: String = tenant_id.chars().take(128).collect();
    let name: String = username.trim().to_lowercase().chars().take(200).collect();
    format!("ztna:{tenant}/{name}")
}

/// The key of a client address; IPv6 addresses count per /64 (one host usually has a whole
/// /64), IPv4-mapped IPv6 as IPv4.
pub fn address_key(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => format!("address:{v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("address:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// A sign-in refused by a lock: answered `429` with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which budget.
    pub scope: Scope,
    /// Seconds until the lock ends (rounded up, at least 1).
    pub retry_after_s: i64,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let message = match self.scope {
            Scope::Account => "too many failed sign-ins for this account; try again later",
            Scope::Address => "too many failed sign-ins from this address; try again later",
        };
        let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, self.scope.code(), message)
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&self.retry_after_s.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Throttle rows untouched for this long (and not locked) are forgotten, and with them the
/// count of lockout episodes.
pub const FORGET_AFTER_MS: i64 = 24 * 60 * MINUTE_MS;

async fn load(state: &SharedState, key: &str) -> Result<Option<(Entry, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT window_start_ms, failures, locked_until_ms, episodes, version FROM login_throttle WHERE throttle_key = $1",
    )
    .bind(key)
    .fetch_optional(state.store.pool())
    .await?;
    row.map(|r| {
        Ok((
            Entry {
                window_start_ms: r.try_get("window_start_ms")?,
                failures: r.try_get("failures")?,
                locked_until_ms: r.try_get("locked_until_ms")?,
                episodes: r.try_get("episodes")?,
            },
            r.try_get("version")?,
        ))
    })
    .transpose()
}

/// The first lock in force at `now` among the account and (when known) the address.
///
/// # Errors
/// Database failure.
pub async fn check(
    state: &SharedState,
    account: &str,
    address: Option<&str>,
    now_ms: i64,
) -> Result<Option<Refusal>, StoreError> {
    let settings = settings();
    let mut keys = vec![(Scope::Account, account, settings.account)];
    if let Some(address) = address {
        keys.push((Scope::Address, address, settings.address));
    }
    for (scope, key, policy) in keys {
        if let Some((entry, _)) = load(state, key).await? {
            if let Some(left) = policy.locked_for(&entry, now_ms) {
                return Ok(Some(Refusal {
                    scope,
                    retry_after_s: ((left + 999) / 1000).max(1),
                }));
            }
        }
    }
    Ok(None)
}

/// Counts a refused sign-in against `key` (compare-and-set, retried when another replica or
/// request updated the row meanwhile). Returns when the lockout it started ends, if it did.
///
/// # Errors
/// Database failure.
pub async fn record_failure(
    state: &SharedState,
    key: &str,
    policy: &Policy,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let pool = state.store.pool();
    // Opportunistic clean-up of keys nobody has tried for a day (indexed).
    sqlx::query(
        "DELETE FROM login_throttle WHERE updated_at_ms < $1 AND (locked_until_ms IS NULL OR locked_until_ms < $2)",
    )
    .bind(now_ms - FORGET_AFTER_MS)
    .bind(now_ms)
    .execute(pool)
    .await?;
    for _ in 0..20 {
        let old = load(state, key).await?;
        let failure = policy.on_failure(old.map(|(e, _)| e), now_ms);
        let e = failure.entry;
        let written = match old {
            None => sqlx::query(
                "INSERT INTO login_throttle (throttle_key, window_start_ms, failures, locked_until_ms, episodes, updated_at_ms, version) VALUES ($1, $2, $3, $4, $5, $6, 1)",
            )
            .bind(key)
            .bind(e.window_start_ms)
            .bind(e.failures)
            .bind(e.locked_until_ms)
            .bind(e.episodes)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .or_else(|err| match &err {
                sqlx::Error::Database(db)
                    if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
                {
                    Ok(false)
                }
                _ => Err(err),
            })?,
            Some((_, version)) => sqlx::query(
                "UPDATE login_throttle SET window_start_ms = $1, failures = $2, locked_until_ms = $3, episodes = $4, updated_at_ms = $5, version = version + 1 WHERE throttle_key = $6 AND version = $7",
            )
            .bind(e.window_start_ms)
            .bind(e.failures)
            .bind(e.locked_until_ms)
            .bind(e.episodes)
            .bind(now_ms)
            .bind(key)
            .bind(version)
            .execute(pool)
            .await?
            .rows_affected()
                == 1,
        };
        if written {
            return Ok(failure.locked_until_ms);
        }
    }
    Err(StoreError::Corrupt(format!(
        "throttle key {key} kept changing under concurrent updates"
    )))
}

/// Clears an account's counter (after a successful sign-in). Lockout episodes are forgotten
/// with it.
///
/// # Errors
/// Database failure.
pub async fn reset(state: &SharedState, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1")
        .bind(key)
        .execute(state.store.pool())
        .await?;
    Ok(())
}

/// Records an authentication event that may concern no known admin (an address, a name that
/// does not exist) in the trail: attributed to the admin when `admin` is known (their MSP and
/// tenant), else to the platform (default MSP) with actor `anonymous`. Never fails the caller.
pub async fn audit(
    state: &SharedState,
    admin: Option<&crate::store::AdminRecord>,
    action: &str,
    target: &str,
    after: Value,
) {
    let actor = admin.and_then(|a| {
        let role = a.role.parse::<crate::rbac::Role>().ok()?;
        let scope = match (role.is_msp(), &a.tenant_id) {
            (true, _) => crate::rbac::Scope::Msp {
                msp_id: a.msp_id.clone(),
            },
            (false, Some(tenant_id)) => crate::rbac::Scope::Customer {
                msp_id: a.msp_id.clone(),
                tenant_id: tenant_id.clone(),
            },
            (false, None) => return None,
        };
        Some(crate::rbac::Principal {
            id: a.id.clone(),
            username: a.username.clone(),
            role,
            scope,
            token_scopes: None,
        })
    });
    let result = match actor {
        Some(actor) => {
            let tenant = actor.scope.tenant_id().map(str::to_string);
            crate::admin_audit::record(
                state,
                &actor,
                action,
                tenant.as_deref(),
                target,
                Value::Null,
                after,
            )
            .await
        }
        None => {
            let mut row = crate::store::AdminAction {
                seq: 0,
                ts_ms: crate::state::now_ms(),
                actor_id: String::new(),
                actor: "anonymous".into(),
                actor_role: "anonymous".into(),
                msp_id: crate::store::DEFAULT_MSP.into(),
                tenant_id: None,
                action: action.into(),
                target: target.into(),
                diff: json!({"before": Value::Null, "after": after.clone(),
                    "changes": crate::admin_audit::json_diff(&Value::Null, &after)}),
                prev_hash: String::new(),
                hash: String::new(),
            };
            state
                .store
                .append_admin_action(&mut row)
                .await
                .map_err(ApiError::from)
        }
    };
    if let Err(err) = result {
        tracing::warn!(?err, action, "cannot record an authentication event");
    }
}

/// The audit target of a throttle key: the admin id when the account exists, else the key
/// (a name that does not exist is recorded as tried, for the platform's operators only).
fn target_of(admin: Option<&crate::store::AdminRecord>, key: &str) -> String {
    admin.map_or_else(|| key.to_string(), |a| a.id.clone())
}

/// The shell around the core for one sign-in attempt, before the password is checked: refuses
/// (and audits) an attempt during a lock.
///
/// # Errors
/// The refusal to answer, or a database failure.
pub async fn before_sign_in(
    state: &SharedState,
    username: &str,
    address: Option<IpAddr>,
    now_ms: i64,
) -> Result<(), Response> {
    refuse_during_lock(
        state,
        SignIn::Admin(username),
        account_key(username),
        address,
        now_ms,
    )
    .await
}

/// [`before_sign_in`] for a tenant's remote (ZTNA) user signing in with `sase-connect`: the
/// same counters and lockouts under [`remote_user_key`] (the address counter is shared with
/// admin sign-ins: one source guessing both counts once), audited as `ztna.sign_in_throttled`.
///
/// # Errors
/// The refusal to answer, or a database failure.
pub async fn before_remote_user_sign_in(
    state: &SharedState,
    tenant_id: &str,
    username: &str,
    address: Option<IpAddr>,
    now_ms: i64,
) -> Result<(), Response> {
    refuse_during_lock(
        state,
        SignIn::RemoteUser,
        remote_user_key(tenant_id, username),
        address,
        now_ms,
    )
    .await
}

/// Who a sign-in attempt is for: an admin (by name; its record attributes the audit entry) or
/// a remote user (the entry names the throttle key).
#[derive(Clone, Copy)]
enum SignIn<'a> {
    Admin(&'a str),
    RemoteUser,
}

impl SignIn<'_> {
    /// The prefix of the audit actions (`admin.lockout`, `ztna.lockout`, ...).
    fn realm(self) -> &'static str {
        match self {
            SignIn::Admin(_) => "admin",
            SignIn::RemoteUser => "ztna",
        }
    }
}

async fn refuse_during_lock(
    state: &SharedState,
    who: SignIn<'_>,
    account: String,
    address: Option<IpAddr>,
    now_ms: i64,
) -> Result<(), Response> {
    let address = address.map(address_key);
    match check(state, &account, address.as_deref(), now_ms).await {
        Ok(None) => Ok(()),
        Ok(Some(refusal)) => {
            let admin = match who {
                SignIn::Admin(username) => state
                    .store
                    .admin_record_by_username(username)
                    .await
                    .ok()
                    .flatten(),
                SignIn::RemoteUser => None,
            };
            let key = match refusal.scope {
                Scope::Account => account.clone(),
                Scope::Address => address.clone().unwrap_or_default(),
            };
            tracing::warn!(%key, "sign-in refused during a lockout");
            audit(
                state,
                admin.as_ref(),
                &format!("{}.sign_in_throttled", who.realm()),
                &target_of(admin.as_ref(), &key),
                json!({"reason": refusal.scope.code(), "scope": refusal.scope.as_str(),
                    "key": key, "retry_after_s": refusal.retry_after_s}),
            )
            .await;
            Err(refusal.into_response())
        }
        Err(err) => Err(ApiError::from(err).into_response()),
    }
}

/// Counts a refused sign-in (wrong password or unknown name) against the account and the
/// address, recording an `admin.lockout` for each lock it starts.
pub async fn after_failed_sign_in(
    state: &SharedState,
    username: &str,
    admin: Option<&crate::store::AdminRecord>,
    address: Option<IpAddr>,
    now_ms: i64,
) {
    count_failure(
        state,
        SignIn::Admin(username),
        account_key(username),
        admin,
        address,
        now_ms,
    )
    .await;
}

/// [`after_failed_sign_in`] for a remote user (unknown name, wrong password or wrong TOTP
/// code), recording `ztna.lockout` for each lock it starts.
pub async fn after_failed_remote_user_sign_in(
    state: &SharedState,
    tenant_id: &str,
    username: &str,
    address: Option<IpAddr>,
    now_ms: i64,
) {
    let key = remote_user_key(tenant_id, username);
    count_failure(state, SignIn::RemoteUser, key, None, address, now_ms).await;
}

async fn count_failure(
    state: &SharedState,
    who: SignIn<'_>,
    account: String,
    admin: Option<&crate::store::AdminRecord>,
    address: Option<IpAddr>,
    now_ms: i64,
) {
    let settings = settings();
    let mut keys = vec![(Scope::Account, account, settings.account)];
    if let Some(ip) = address {
        keys.push((Scope::Address, address_key(ip), settings.address));
    }
    for (scope, key, policy) in keys {
        match record_failure(state, &key, &policy, now_ms).await {
            Ok(Some(until)) => {
                tracing::warn!(%key, until, "sign-in lockout");
                let attributed = if scope == Scope::Account { admin } else { None };
                audit(
                    state,
                    attributed,
                    &format!("{}.lockout", who.realm()),
                    &target_of(attributed, &key),
                    json!({"reason": scope.code(), "scope": scope.as_str(), "key": key,
                        "locked_until_ms": until, "lock_s": (until - now_ms) / 1000}),
                )
                .await;
            }
            Ok(None) => {}
            Err(err) => tracing::error!(%err, %key, "cannot count a failed sign-in"),
        }
    }
}

/// Clears the account's counter after a successful sign-in (the address keeps its count).
pub async fn after_sign_in(state: &SharedState, username: &str) {
    if let Err(err) = reset(state, &account_key(username)).await {
        tracing::error!(%err, "cannot reset the sign-in counter");
    }
}

/// [`after_sign_in`] for a remote user.
pub async fn after_remote_user_sign_in(state: &SharedState, tenant_id: &str, username: &str) {
    if let Err(err) = reset(state, &remote_user_key(tenant_id, username)).await {
        tracing::error!(%err, "cannot reset the sign-in counter");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Settings::default().account
    }

    #[test]
    fn five_failures_in_the_window_lock_for_fifteen_minutes() {
        let p = policy();
        let mut entry = None;
        let t0 = 1_000_000;
        for i in 0..4 {
            let f = p.on_failure(entry, t0 + i * 1000);
            assert_eq!(f.locked_until_ms, None);
            entry = Some(f.entry);
        }
        assert_eq!(p.locked_for(&entry.expect("entry"), t0 + 4000), None);
        let f = p.on_failure(entry, t0 + 4000);
        assert_eq!(f.locked_until_ms, Some(t0 + 4000 + 15 * MINUTE_MS));
        assert_eq!(
            p.locked_for(&f.entry, t0 + 5000),
            Some(15 * MINUTE_MS - 1000)
        );
        assert_eq!(p.locked_for(&f.entry, t0 + 4000 + 15 * MINUTE_MS), None);
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let p = policy();
        let mut entry = None;
        let mut t = 0;
        for _ in 0..20 {
            let f = p.on_failure(entry, t);
            assert_eq!(f.locked_until_ms, None, "at {t}");
            entry = Some(f.entry);
            // Four failures per window, then the window has passed.
            t += p.window_ms / 4 + 1;
        }
    }

    #[test]
    fn each_episode_doubles_up_to_the_cap() {
        let p = policy();
        let mut entry = None;
        let mut t = 0;
        let mut lengths = Vec::new();
        for _ in 0..10 {
            loop {
                let f = p.on_failure(entry, t);
                entry = Some(f.entry);
                if let Some(until) = f.locked_until_ms {
                    lengths.push(until - t);
                    t = until;
                    break;
                }
                t += 1;
            }
        }
        let m = MINUTE_MS;
        assert_eq!(
            lengths,
            vec![
                15 * m,
                30 * m,
                60 * m,
                120 * m,
                240 * m,
                480 * m,
                960 * m,
                1440 * m,
                1440 * m,
                1440 * m
            ]
        );
    }

    #[test]
    fn a_failure_during_a_lock_changes_nothing() {
        let p = policy();
        let locked = Entry {
            window_start_ms: 100,
            failures: 0,
            locked_until_ms: Some(10_000),
            episodes: 1,
        };
        let f = p.on_failure(Some(locked), 5_000);
        assert_eq!(f.entry, locked);
        assert_eq!(f.locked_until_ms, None);
    }

    #[test]
    fn keys_normalise_names_and_group_ipv6_by_64() {
        assert_eq!(account_key("  Admin "), "account:admin");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().expect("ip")),
            "address:2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("2001:db8:1:2:bbbb::9".parse().expect("ip")),
            address_key("2001:db8:1:2:aaaa::1".parse().expect("ip"))
        );
        assert_eq!(
            address_key("::ffff:10.0.0.1".parse().expect("ip")),
            "address:10.0.0.1"
        );
    }

    #[test]
    fn refusal_is_429_with_retry_after_and_a_stable_code() {
        let response = Refusal {
            scope: Scope::Account,
            retry_after_s: 900,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"900"[..])
        );
        assert_eq!(Scope::Account.code(), "account_locked");
        assert_eq!(Scope::Address.code(), "login_throttled");
    }
}
