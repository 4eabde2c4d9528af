//! A bounded cache of verified tokens, so that a client sending the same token on every
//! request costs one signature check, not one per request.
//!
//! Entries are keyed by the SHA-256 of the token's compact serialization (the token itself is
//! never stored as a key) and hold what verification produced. An entry is served only while
//! all of these hold, otherwise it is dropped and the token is verified again:
//!
//! * `now` is before the token's `exp` (with its issuer's leeway) and not before its `nbf`;
//! * the policy in force is the very compilation the token was verified under
//!   ([`crate::CompiledPolicy::generation`]) — a policy change invalidates every entry;
//! * for a `jwks_url` issuer, the keys held are the same install (key generation) and still
//!   usable at `now` — a key rotation or a JWKS outage beyond the allowance invalidates;
//! * the issuer that verified it is trusted by the resource of the request.
//!
//! Only successful verifications are cached: a refused token is checked afresh each time.
//! The cache holds at most its capacity; when full it drops the entries that expire first.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::jwt::{check_times, expiry_seconds, VerifiedToken};

/// Entries held by [`TokenCache::new`].
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;

type TokenHash = [u8; 32];

/// Verified tokens by hash; shared by all requests (interior mutability, one short lock).
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// `(exp in ms, hash)`, to drop the entries that expire first.
    by_expiry: BTreeSet<(i64, TokenHash)>,
}

#[derive(Debug)]
struct Entry {
    token: Arc<VerifiedToken>,
    policy_generation: u64,
    expires_at_ms: i64,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new()
    }
}

impl TokenCache {
    /// A cache of [`DEFAULT_TOKEN_CACHE_ENTRIES`] entries.
    pub fn new() -> TokenCache {
        TokenCache::with_capacity(DEFAULT_TOKEN_CACHE_ENTRIES)
    }

    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn with_capacity(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How many tokens are held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.by_expiry.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters (worst case an entry is verified again), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hash(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The cached verification of the token with this hash, if still valid; `valid` checks the
    /// key generation and issuer trust against the current state. Invalid entries are removed.
    pub(crate) fn get(
        &self,
        hash: &TokenHash,
        policy_generation: u64,
        now_ms: i64,
        valid: impl FnOnce(&VerifiedToken) -> bool,
    ) -> Option<Arc<VerifiedToken>> {
        let mut inner = self.lock();
        let entry = inner.entries.get(hash)?;
        let fresh = entry.policy_generation == policy_generation
            && now_ms < entry.expires_at_ms
            && check_times(&entry.token.claims, entry.token.leeway_seconds, now_ms).is_ok()
            && valid(&entry.token);
        if fresh {
            return Some(entry.token.clone());
        }
        let key = (entry.expires_at_ms, *hash);
        inner.entries.remove(hash);
        inner.by_expiry.remove(&key);
        None
    }

    /// Remembers a verified token until its `exp` (plus its issuer's leeway).
    pub(crate) fn insert(
        &self,
        hash: TokenHash,
        token: Arc<VerifiedToken>,
        policy_generation: u64,
        now_ms: i64,
    ) {
        if self.capacity == 0 {
            return;
        }
        let Some(exp) = expiry_seconds(&token.claims) else {
            return;
        };
        let expires_at_ms = exp
            .saturating_add(i64::from(token.leeway_seconds))
            .saturating_mul(1000);
        if expires_at_ms <= now_ms {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&hash) {
            inner.by_expiry.remove(&(old.expires_at_ms, hash));
        }
        while inner.entries.len() >= self.capacity {
            let Some(first) = inner.by_expiry.pop_first() else {
                break;
            };
            inner.entries.remove(&first.1);
        }
        inner.by_expiry.insert((expires_at_ms, hash));
        inner.entries.insert(
            hash,
            Entry {
                token,
                policy_generation,
                expires_at_ms,
            },
        );
    }
}
