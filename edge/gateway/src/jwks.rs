//! Keys of issuers whose JWK set is fetched from a `jwks_url`, and the rotation logic around
//! them (all with an injected `now`).
//!
//! The gateway never fetches anything itself: the shell (the edge daemon) owns a [`JwksStore`],
//! fetches when [`crate::decide`] answers [`crate::Verdict::NeedKeys`] and when
//! [`crate::CompiledPolicy::refreshes_due`] says a background refresh is due, and installs what
//! it got. The store decides:
//!
//! * **refetch limit** — at most one fetch per issuer every [`REFETCH_INTERVAL_MS`], so that
//!   tokens with made-up `kid`s cannot make the edge hammer an identity provider;
//! * **background refresh** — due once the issuer's `refresh_seconds` have passed since the
//!   last successful fetch (retried every 10 s while it fails);
//! * **outage** — keys of the last successful fetch keep verifying tokens for
//!   `refresh_seconds + max_stale_seconds` after that fetch; later, tokens of the issuer are
//!   refused with `token_keys_unavailable` until a fetch succeeds.
//!
//! Keys are recorded with the URL they came from: when a policy points an issuer at another
//! URL, keys fetched from the old one are no longer used. Every install gets a new key
//! generation, which invalidates cached token verifications made with the previous keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::KeyError;
use crate::keys::{parse_key_set_bytes, VerificationKey};
use crate::policy::RemoteKeys;

/// Source of key generations (process-wide, so that two stores never share one).
static KEY_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Shortest time between two fetches of one issuer's JWK set, in milliseconds.
pub const REFETCH_INTERVAL_MS: i64 = 10_000;

/// Fetched verification keys, by issuer id.
#[derive(Debug, Default)]
pub struct JwksStore {
    issuers: HashMap<String, IssuerKeys>,
}

#[derive(Debug, Default)]
struct IssuerKeys {
    keys: Vec<VerificationKey>,
    /// The URL the keys were fetched from; `None` when installed without one (any URL).
    url: Option<String>,
    installed_at_ms: Option<i64>,
    last_attempt_ms: Option<i64>,
    generation: u64,
}

/// What the store holds for an issuer at a given time.
#[derive(Debug)]
pub(crate) enum HeldKeys<'a> {
    /// Nothing was fetched (from the issuer's current URL) yet.
    None,
    /// Keys that may verify tokens now, with their generation.
    Usable(&'a [VerificationKey], u64),
    /// Keys too old to be trusted: the JWKS endpoint has been unreachable for longer than the
    /// issuer allows.
    Stale,
}

impl JwksStore {
    /// An empty store: no issuer has keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a fetched JWK set (the JSON bytes) for issuer `issuer_id` at time `now_ms`,
    /// replacing the keys held for it. Keys that cannot verify signatures with an accepted
    /// algorithm (symmetric keys, encryption keys, unsupported curves) are skipped. Installing
    /// also counts as a fetch attempt at `now_ms`, whatever the outcome.
    ///
    /// Returns how many usable keys were installed.
    ///
    /// # Errors
    /// When the bytes are not a JWK set with at least one usable key; the keys held before are
    /// then kept.
    pub fn install(
        &mut self,
        issuer_id: &str,
        jwks_json: &[u8],
        now_ms: i64,
    ) -> Result<usize, KeyError> {
        self.install_inner(issuer_id, None, jwks_json, now_ms)
    }

    /// Like [`JwksStore::install`], recording the URL the set was fetched from: the keys are
    /// only used while the policy names that URL for the issuer.
    ///
    /// # Errors
    /// When the bytes are not a JWK set with at least one usable key; the keys held before are
    /// then kept.
    pub fn install_from(
        &mut self,
        issuer_id: &str,
        url: &str,
        jwks_json: &[u8],
        now_ms: i64,
    ) -> Result<usize, KeyError> {
        self.install_inner(issuer_id, Some(url), jwks_json, now_ms)
    }

    fn install_inner(
        &mut self,
        issuer_id: &str,
        url: Option<&str>,
        jwks_json: &[u8],
        now_ms: i64,
    ) -> Result<usize, KeyError> {
        let entry = self.issuers.entry(issuer_id.to_string()).or_default();
        entry.last_attempt_ms = Some(now_ms);
        let keys = parse_key_set_bytes(jwks_json)?;
        let count = keys.len();
        entry.keys = keys;
        entry.url = url.map(str::to_string);
        entry.installed_at_ms = Some(now_ms);
        entry.generation = KEY_GENERATION.fetch_add(1, Ordering::Relaxed);
        Ok(count)
    }

    /// Whether a background fetch of this issuer's keys is due at `now_ms` (see
    /// [`crate::CompiledPolicy::refreshes_due`]).
    pub(crate) fn refresh_due(&self, issuer_id: &str, remote: &RemoteKeys, now_ms: i64) -> bool {
        if !self.may_refetch(issuer_id, now_ms) {
            return false;
        }
        match self.issuers.get(issuer_id) {
            Some(entry) if entry.matches(&remote.url) => match entry.installed_at_ms {
                Some(at) => now_ms < at || now_ms.saturating_sub(at) >= remote.refresh_ms,
                None => true,
            },
            _ => true,
        }
    }

    /// The keys that may verify a token of a `jwks_url` issuer at `now_ms`.
    pub(crate) fn held(&self, issuer_id: &str, remote: &RemoteKeys, now_ms: i64) -> HeldKeys<'_> {
        let Some(entry) = self.issuers.get(issuer_id) else {
            return HeldKeys::None;
        };
        let Some(installed_at) = entry.installed_at_ms.filter(|_| entry.matches(&remote.url))
        else {
            return HeldKeys::None;
        };
        if remote.usable_at(installed_at, now_ms) {
            HeldKeys::Usable(&entry.keys, entry.generation)
        } else {
            HeldKeys::Stale
        }
    }

    /// Whether the shell may fetch this issuer's JWK set now: at most one fetch per issuer every
    /// [`REFETCH_INTERVAL_MS`], always true when never fetched (or when the clock went back
    /// before the last attempt). Calling it records nothing.
    pub fn may_refetch(&self, issuer_id: &str, now_ms: i64) -> bool {
        match self.issuers.get(issuer_id).and_then(|i| i.last_attempt_ms) {
            None => true,
            Some(last) => now_ms < last || now_ms.saturating_sub(last) >= REFETCH_INTERVAL_MS,
        }
    }

    /// Records that a fetch of this issuer's JWK set was attempted at `now_ms` (whether it
    /// succeeded or not).
    pub fn note_fetch_attempt(&mut self, issuer_id: &str, now_ms: i64) {
        self.issuers
            .entry(issuer_id.to_string())
            .or_default()
            .last_attempt_ms = Some(now_ms);
    }

    /// When keys were last installed for this issuer, if ever (for periodic refresh).
    pub fn installed_at_ms(&self, issuer_id: &str) -> Option<i64> {
        self.issuers.get(issuer_id).and_then(|i| i.installed_at_ms)
    }

    /// The keys held for an issuer; `None` when none were ever installed.
    #[cfg(test)]
    pub(crate) fn keys(&self, issuer_id: &str) -> Option<&[VerificationKey]> {
        self.issuers
            .get(issuer_id)
            .filter(|i| i.installed_at_ms.is_some())
            .map(|i| i.keys.as_slice())
    }
}

impl IssuerKeys {
    /// Whether these keys came from `url` (or were installed without a URL).
    fn matches(&self, url: &str) -> bool {
        self.url.as_deref().is_none_or(|u| u == url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &[u8] = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}"#;

    #[test]
    fn refetch_is_limited_to_one_per_interval_per_issuer() {
        let mut store = JwksStore::new();
        let t = 1_700_000_000_000;
        assert!(store.may_refetch("idp", t));
        assert!(store.may_refetch("idp", t), "asking records nothing");
        store.note_fetch_attempt("idp", t);
        assert!(!store.may_refetch("idp", t));
        assert!(!store.may_refetch("idp", t + 9_999));
        assert!(store.may_refetch("other", t + 1), "limit is per issuer");
        assert!(store.may_refetch("idp", t + 10_000));
        store.note_fetch_attempt("idp", t + 10_000);
        assert!(!store.may_refetch("idp", t + 15_000));
        assert!(store.may_refetch("idp", t + 20_000));
    }

    #[test]
    fn install_counts_as_attempt_and_keeps_old_keys_on_error() {
        let mut store = JwksStore::new();
        assert!(store.keys("idp").is_none());
        assert_eq!(store.install("idp", SET, 1_000), Ok(1));
        assert_eq!(store.installed_at_ms("idp"), Some(1_000));
        assert!(!store.may_refetch("idp", 2_000));
        assert!(store.install("idp", b"garbage", 20_000).is_err());
        assert_eq!(store.keys("idp").map(<[_]>::len), Some(1));
        assert_eq!(store.installed_at_ms("idp"), Some(1_000));
        assert!(!store.may_refetch("idp", 25_000));
    }

    #[test]
    fn failed_first_install_leaves_no_keys() {
        let mut store = JwksStore::new();
        assert!(store.install("idp", b"{}", 0).is_err());
        assert!(store.keys("idp").is_none());
    }
}
