//! Continuous access evaluation at the edge, without I/O: the table of revocations pushed by
//! the control plane (from CAEP Security Event Tokens) and the check run on every request right
//! after the token verdict — whether the token was just verified or served from the cache, on
//! a new connection or an already open keep-alive one.
//!
//! A token is refused when a revocation in force names its subject (`iss`/`sub` or `email`)
//! and/or its session (`sid`) and the token was issued at or before the event (see
//! [`sase_model::caep::Revocation::matches`]). The refusal carries a claims challenge
//! ([`claims_challenge`]) asking the client for a token issued after the event. Expired
//! revocations are forgotten ([`RevocationTable::prune`] with `now`).

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use sase_model::caep::Revocation;
use serde_json::Value;

use crate::jwt::VerifiedToken;

/// Most revocations kept; beyond it the ones expiring first are dropped.
pub const MAX_REVOCATIONS: usize = 100_000;

/// The revocations in force, indexed by subject, e-mail and session.
#[derive(Debug, Default, Clone)]
pub struct RevocationTable {
    by_id: BTreeMap<String, Revocation>,
    by_key: HashMap<String, Vec<String>>,
}

fn keys(r: &Revocation) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(sid) = &r.sid {
        out.push(format!("sid\u{0}{sid}"));
    } else if let Some(sub) = &r.sub {
        out.push(format!("sub\u{0}{sub}"));
    } else if let Some(email) = &r.email {
        out.push(format!("email\u{0}{email}"));
    }
    out
}

impl RevocationTable {
    /// An empty table.
    pub fn new() -> RevocationTable {
        RevocationTable::default()
    }

    /// Revocations held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The revocations held, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.by_id.values()
    }

    /// Adds revocations that are valid and not yet expired at `now_ms`; returns how many were
    /// new (an id already held is not replaced: the SET `jti` makes ids unique).
    pub fn extend(
        &mut self,
        revocations: impl IntoIterator<Item = Revocation>,
        now_ms: i64,
    ) -> usize {
        let mut added = 0;
        for r in revocations {
            if !r.is_valid() || r.expires_at_ms <= now_ms || self.by_id.contains_key(&r.id) {
                continue;
            }
            for key in keys(&r) {
                self.by_key.entry(key).or_default().push(r.id.clone());
            }
            self.by_id.insert(r.id.clone(), r);
            added += 1;
        }
        if self.by_id.len() > MAX_REVOCATIONS {
            let mut by_expiry: Vec<(i64, String)> = self
                .by_id
                .values()
                .map(|r| (r.expires_at_ms, r.id.clone()))
                .collect();
            by_expiry.sort();
            let excess = self.by_id.len() - MAX_REVOCATIONS;
            for (_, id) in by_expiry.into_iter().take(excess) {
                self.remove(&id);
            }
        }
        added
    }

    fn remove(&mut self, id: &str) {
        if let Some(r) = self.by_id.remove(id) {
            for key in keys(&r) {
                if let Some(ids) = self.by_key.get_mut(&key) {
                    ids.retain(|i| i != id);
                    if ids.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
    }

    /// Forgets revocations expired at `now_ms`; returns how many.
    pub fn prune(&mut self, now_ms: i64) -> usize {
        let expired: Vec<String> = self
            .by_id
            .values()
            .filter(|r| r.expires_at_ms <= now_ms)
            .map(|r| r.id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired.len()
    }

    /// The revocation in force at `now_ms` that refuses this token, if any.
    pub fn check(&self, token: &VerifiedToken, now_ms: i64) -> Option<&Revocation> {
        if self.by_id.is_empty() {
            return None;
        }
        let claims = token.claims();
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let sid = claims.get("sid").and_then(Value::as_str);
        let iat_ms = claims
            .get("iat")
            .and_then(Value::as_f64)
            .map(|s| (s * 1000.0) as i64);
        let mut candidates = Vec::with_capacity(3);
        candidates.push(format!("sub\u{0}{}", token.sub()));
        if let Some(sid) = sid {
            candidates.push(format!("sid\u{0}{sid}"));
        }
        if let Some(email) = &email {
            candidates.push(format!("email\u{0}{email}"));
        }
        candidates
            .iter()
            .filter_map(|key| self.by_key.get(key))
            .flatten()
            .filter_map(|id| self.by_id.get(id))
            .find(|r| {
                r.expires_at_ms > now_ms
                    && r.matches(token.iss(), token.sub(), email.as_deref(), sid, iat_ms)
            })
    }
}

/// The `WWW-Authenticate` value of a refusal for `revocation`: an RFC 6750 `invalid_token`
/// error with a claims challenge (as continuous access evaluation clients expect): `claims` is
/// the base64 of `{"access_token":{"nbf":{"essential":true,"value":"<event time + 1 s>"}}}`,
/// asking for a token issued after the event.
pub fn claims_challenge(revocation: &Revocation) -> String {
    let after = revocation.event_time_ms.div_euclid(1000) + 1;
    let claims = serde_json::json!({
        "access_token": {"nbf": {"essential": true, "value": after.to_string()}}
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(claims.to_string());
    format!(
        "Bearer error=\"invalid_token\", error_description=\"the session or credentials were revoked\", claims=\"{encoded}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sase_model::caep::RevocationEvent;
    use serde_json::{json, Map};

    fn token(sub: &str, claims: Value) -> VerifiedToken {
        VerifiedToken {
            iss: "https://idp".into(),
            sub: sub.into(),
            claims: claims.as_object().cloned().unwrap_or_else(Map::new),
            issuer_id: "idp".into(),
            key_generation: 0,
            leeway_seconds: 30,
        }
    }

    fn revocation(id: &str, sub: Option<&str>, sid: Option<&str>, expires: i64) -> Revocation {
        Revocation {
            id: id.into(),
            event: RevocationEvent::SessionRevoked,
            iss: None,
            sub: sub.map(str::to_string),
            email: None,
            sid: sid.map(str::to_string),
            event_time_ms: 10_000,
            expires_at_ms: expires,
        }
    }

    #[test]
    fn subject_and_session_revocations_refuse_older_tokens_until_expiry() {
        let mut table = RevocationTable::new();
        assert_eq!(
            table.extend(
                [
                    revocation("a#0", Some("alice"), None, 100_000),
                    revocation("b#0", None, Some("s-9"), 50_000),
                ],
                0
            ),
            2
        );
        let alice_old = token("alice", json!({"iat": 9}));
        let alice_new = token("alice", json!({"iat": 11}));
        let bob_s9 = token("bob", json!({"iat": 5, "sid": "s-9"}));
        let bob_s8 = token("bob", json!({"iat": 5, "sid": "s-8"}));
        assert_eq!(
            table.check(&alice_old, 20_000).map(|r| r.id.as_str()),
            Some("a#0")
        );
        assert!(table.check(&alice_new, 20_000).is_none());
        assert_eq!(
            table.check(&bob_s9, 20_000).map(|r| r.id.as_str()),
            Some("b#0")
        );
        assert!(table.check(&bob_s8, 20_000).is_none());
        // Expired entries stop refusing, then are pruned.
        assert!(table.check(&bob_s9, 50_000).is_none());
        assert_eq!(table.prune(60_000), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.prune(200_000), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn duplicates_invalid_and_expired_entries_are_not_added() {
        let mut table = RevocationTable::new();
        let r = |id: &str, sub: Option<&str>, expires: i64| revocation(id, sub, None, expires);
        assert_eq!(table.extend([r("a#0", Some("a"), 100_000)], 0), 1);
        assert_eq!(table.extend([r("a#0", Some("a"), 100_000)], 0), 0);
        // Names neither a subject nor a session; expires before its event; already expired.
        assert_eq!(table.extend([r("b#0", None, 100_000)], 0), 0);
        assert_eq!(table.extend([r("c#0", Some("c"), 5_000)], 0), 0);
        assert_eq!(table.extend([r("d#0", Some("d"), 100_000)], 100_000), 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn issuer_and_email_must_match_when_named() {
        let mut table = RevocationTable::new();
        let mut r = revocation("e#0", None, None, 100_000);
        r.email = Some("carol@example.com".into());
        r.iss = Some("https://other".into());
        table.extend([r], 0);
        let carol = token("c1", json!({"email": "Carol@Example.com"}));
        assert!(table.check(&carol, 1).is_none(), "issuer differs");
        let mut r = revocation("e#1", None, None, 100_000);
        r.email = Some("carol@example.com".into());
        table.extend([r], 0);
        assert!(table.check(&carol, 1).is_some());
    }

    #[test]
    fn challenge_names_invalid_token_and_claims() {
        let value = claims_challenge(&revocation("a#0", Some("a"), None, 1));
        assert!(
            value.starts_with("Bearer error=\"invalid_token\""),
            "{value}"
        );
        let b64 = value
            .split("claims=\"")
            .nth(1)
            .and_then(|r| r.strip_suffix('"'));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.unwrap_or_default())
            .unwrap_or_default();
        let claims: Value = serde_json::from_slice(&decoded).unwrap_or_default();
        assert_eq!(claims["access_token"]["nbf"]["value"], "11");
    }
}
