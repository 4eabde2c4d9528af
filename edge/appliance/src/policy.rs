//! The policy in force on this edge: the last verified bundle, compiled for the hot path and
//! swapped atomically (`tokio::sync::watch`). Bundles are verified with the pinned control-plane
//! key (or, during a signing-key rollover, by its announced successor: `signing-keys.json` next
//! to the bundle, see `sase_model::signing_keys`; the first bundle signed by the successor
//! retires the older key), checked against the device's tenant and never older than the one
//! applied; each accepted
//! bundle is written to disk before it is enforced, so a restart without the control plane
//! enforces it again. With no valid bundle the edge refuses every protected request (fail
//! closed).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use ed25519_dalek::VerifyingKey;
use sase_gateway::{CompiledPolicy, JwksStore, TokenCache};
use sase_model::bundle::SignedBundle;
use sase_model::signing_keys::{KeyEndorsement, TrustedKeys};
use tokio::sync::watch;

use crate::identity::write_atomic;
use crate::waf::PolicyWaf;

/// A compiled bundle ready for enforcement.
#[derive(Debug)]
pub struct ActivePolicy {
    /// Compiled routes and issuers.
    pub compiled: CompiledPolicy,
    /// The CRS rule set and the WAF settings of each route.
    pub waf: PolicyWaf,
    /// The QUIC modes of the policy (published UDP port, `Alt-Svc`, SNI relay).
    pub quic: crate::quic::QuicPlan,
    /// The tunnel peers of the policy (read by the tunnel shell, `crate::tunnel`).
    pub tunnel: Option<Arc<sase_model::tunnel::TunnelPolicy>>,
    /// Rate limits, flow limits, size limits and timeouts of each route.
    pub limits: Arc<sase_gateway::ratelimit::CompiledLimits>,
    /// Bundle version.
    pub version: u64,
    /// Digest of the signed payload (identifies the exact bundle).
    pub digest: String,
}

/// What applying a bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A new version is in force.
    Applied(u64),
    /// The bundle is the one already in force.
    Unchanged(u64),
}

/// Holder of the policy in force.
pub struct PolicyHolder {
    current: watch::Sender<Option<Arc<ActivePolicy>>>,
    keys: RwLock<TrustedKeys>,
    keys_path: PathBuf,
    tenant_id: String,
    bundle_path: PathBuf,
    crs: sase_waf::CrsPaths,
    /// Keys of `jwks_url` issuers, fetched by the daemon.
    pub jwks: RwLock<JwksStore>,
    /// Held for the duration of a JWKS fetch, so that a request needing keys waits for a fetch
    /// in flight instead of being refused because the rate limit says "just fetched".
    pub jwks_fetch: tokio::sync::Mutex<()>,
    /// Verified tokens (by SHA-256), emptied whenever a new policy is swapped in.
    pub tokens: TokenCache,
}

impl PolicyHolder {
    /// A holder with nothing in force yet, loading CRS from the Debian locations.
    pub fn new(key: VerifyingKey, tenant_id: String, bundle_path: PathBuf) -> PolicyHolder {
        PolicyHolder::with_crs(key, tenant_id, bundle_path, sase_waf::CrsPaths::default())
    }

    /// A holder with nothing in force yet, loading CRS from `crs`.
    pub fn with_crs(
        key: VerifyingKey,
        tenant_id: String,
        bundle_path: PathBuf,
        crs: sase_waf::CrsPaths,
    ) -> PolicyHolder {
        let keys_path = bundle_path.with_file_name(SIGNING_KEYS_FILE);
        let keys = load_trusted_keys(&keys_path).unwrap_or_else(|| TrustedKeys::pinned(&key));
        PolicyHolder {
            current: watch::Sender::new(None),
            keys: RwLock::new(keys),
            keys_path,
            tenant_id,
            bundle_path,
            crs,
            jwks: RwLock::new(JwksStore::new()),
            jwks_fetch: tokio::sync::Mutex::new(()),
            tokens: TokenCache::new(),
        }
    }

    /// The policy in force, if any (cheap: one `Arc` clone).
    pub fn snapshot(&self) -> Option<Arc<ActivePolicy>> {
        self.current.borrow().clone()
    }

    /// Subscribes to policy changes.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ActivePolicy>>> {
        self.current.subscribe()
    }

    /// Loads the bundle kept on disk, if any. A bundle that no longer verifies is refused
    /// (and the edge stays fail-closed until the control plane sends a good one).
    ///
    /// # Errors
    /// Why the stored bundle was refused; `Ok(None)` when there is none.
    pub fn load_from_disk(&self) -> Result<Option<u64>, String> {
        let bytes = match std::fs::read(&self.bundle_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", self.bundle_path.display())),
        };
        let bundle = SignedBundle::from_json(&bytes).map_err(|e| e.to_string())?;
        match self.apply_inner(&bundle, false)? {
            ApplyOutcome::Applied(v) | ApplyOutcome::Unchanged(v) => Ok(Some(v)),
        }
    }

    /// Verifies, compiles, persists and swaps in a bundle from the control plane.
    ///
    /// # Errors
    /// Why the bundle was refused (the policy in force does not change).
    pub fn apply(&self, bundle: &SignedBundle) -> Result<ApplyOutcome, String> {
        self.apply_inner(bundle, true)
    }

    fn apply_inner(&self, bundle: &SignedBundle, persist: bool) -> Result<ApplyOutcome, String> {
        let current = self.snapshot();
        let digest = bundle.digest();
        if let Some(active) = &current {
            if active.digest == digest {
                return Ok(ApplyOutcome::Unchanged(active.version));
            }
        }
        let applied = current.as_ref().map(|a| (a.version, a.digest.as_str()));
        let (payload, key_index) = read_lock(&self.keys)
            .verify_bundle(bundle, &self.tenant_id, applied)
            .map_err(|e| e.to_string())?;
        let compiled = CompiledPolicy::compile(&payload).map_err(|e| e.to_string())?;
        // The rule set is compiled before anything changes: a bundle whose WAF settings do not
        // load is refused and the last good policy (with its rule set) stays in force.
        let previous_rules = current.as_ref().and_then(|a| a.waf.rules.as_ref());
        let waf = crate::waf::compile(&self.crs, &payload.policy, previous_rules)
            .map_err(|e| format!("WAF rule set does not load: {e}"))?;
        if persist {
            write_atomic(&self.bundle_path, bundle.to_json().as_bytes(), 0o600)
                .map_err(|e| format!("storing the bundle: {e:#}"))?;
        }
        let version = payload.version;
        crate::mtls::set_wanted(compiled.wants_client_certificates());
        self.current.send_replace(Some(Arc::new(ActivePolicy {
            compiled,
            waf,
            quic: crate::quic::QuicPlan::compile(&payload.policy),
            tunnel: payload.policy.tunnel.clone().map(Arc::new),
            limits: crate::ratelimit::compile(&payload.policy),
            version,
            digest,
        })));
        // Entries are tied to the compilation they were verified under and would never be
        // served again; free them now.
        self.tokens.clear();
        if key_index > 0 {
            // A bundle signed by the successor is in force: the older keys are retired.
            let mut keys = write_lock(&self.keys);
            if keys.promote(key_index) {
                tracing::info!(
                    trusted = keys.keys().len(),
                    "policy signing key rolled over; older keys retired"
                );
                self.persist_keys(&keys)?;
            }
        }
        Ok(ApplyOutcome::Applied(version))
    }

    /// Takes the control plane's signing-key endorsements (sent after each `hello` and when a
    /// rollover is announced). Returns how many new keys are now trusted.
    ///
    /// # Errors
    /// A forged or forking endorsement (nothing changes), or the key list cannot be stored.
    pub fn accept_endorsements(&self, endorsements: &[KeyEndorsement]) -> Result<usize, String> {
        let mut keys = write_lock(&self.keys);
        let mut next = keys.clone();
        let mut added = 0;
        for e in endorsements {
            if next.endorse(e).map_err(|e| e.to_string())? {
                added += 1;
            }
        }
        if added > 0 {
            self.persist_keys(&next)?;
            *keys = next;
        }
        Ok(added)
    }

    /// The policy signing keys trusted now (base64, oldest first).
    pub fn trusted_keys(&self) -> Vec<String> {
        read_lock(&self.keys).keys().to_vec()
    }

    fn persist_keys(&self, keys: &TrustedKeys) -> Result<(), String> {
        let json = serde_json::to_vec(keys).map_err(|e| e.to_string())?;
        write_atomic(&self.keys_path, &json, 0o600)
            .map_err(|e| format!("storing the trusted signing keys: {e:#}"))
    }
}

/// File (next to the bundle) holding the trusted policy signing keys once a rollover began.
pub const SIGNING_KEYS_FILE: &str = "signing-keys.json";

fn load_trusted_keys(path: &std::path::Path) -> Option<TrustedKeys> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<TrustedKeys>(&bytes) {
        Ok(keys) if keys.validate().is_ok() => Some(keys),
        _ => {
            tracing::error!(file = %path.display(), "unreadable trusted signing keys; using the key pinned at enrolment");
            None
        }
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;
    use ed25519_dalek::SigningKey;
    use sase_model::bundle::BundlePayload;
    use sase_model::Policy;

    fn bundle(version: u64, key: &SigningKey) -> SignedBundle {
        let policy = Policy::parse_yaml(
            "resources:\n  - name: app\n    upstream: http://127.0.0.1:1\n    routes:\n      - {id: h, methods: [GET], path: /health, public: true}\n",
        )
        .expect("policy");
        SignedBundle::sign(
            &BundlePayload {
                tenant_id: "t".into(),
                version,
                issued_at_ms: 0,
                policy,
            },
            key,
        )
        .expect("sign")
    }

    /// A holder whose bundle file is in a fresh scratch directory (keep the `Scratch` alive
    /// for the test).
    fn holder(name: &str, key: &SigningKey) -> (PolicyHolder, PathBuf, Scratch) {
        let dir = Scratch::new("policy", name);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bundle.json");
        (
            PolicyHolder::new(key.verifying_key(), "t".into(), path.clone()),
            path,
            dir,
        )
    }

    #[test]
    fn applied_bundle_is_persisted_and_reloaded_after_restart() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (first, path, _scratch) = holder("persist", &key);
        assert_eq!(first.apply(&bundle(3, &key)), Ok(ApplyOutcome::Applied(3)));
        let second = PolicyHolder::new(key.verifying_key(), "t".into(), path.clone());
        assert_eq!(second.load_from_disk(), Ok(Some(3)));
        assert_eq!(second.snapshot().map(|a| a.version), Some(3));
    }

    #[test]
    fn tampered_foreign_and_older_bundles_are_refused_and_policy_stays() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let (holder, path, _scratch) = holder("refuse", &key);
        holder.apply(&bundle(5, &key)).expect("apply");
        assert!(holder.apply(&bundle(6, &other)).is_err());
        assert!(holder.apply(&bundle(4, &key)).is_err());
        let mut tampered = bundle(7, &key);
        let flipped = if tampered.payload.as_bytes()[10] == b'A' {
            "B"
        } else {
            "A"
        };
        tampered.payload.replace_range(10..11, flipped);
        assert!(holder.apply(&tampered).is_err());
        assert_eq!(holder.snapshot().map(|a| a.version), Some(5));
        // A corrupted file on disk leaves a restarted edge fail-closed.
        std::fs::write(&path, b"{garbage").expect("write");
        let restarted = PolicyHolder::new(key.verifying_key(), "t".into(), path);
        assert!(restarted.load_from_disk().is_err());
        assert!(restarted.snapshot().is_none());
    }
    #[test]
    fn signing_key_rollover_survives_a_restart_and_retires_the_old_key() {
        use sase_model::signing_keys::KeyEndorsement;
        let old = SigningKey::from_bytes(&[7; 32]);
        let new = SigningKey::from_bytes(&[9; 32]);
        let (holder, path, _scratch) = holder("rollover", &old);
        holder.apply(&bundle(1, &old)).expect("old key");
        // A forged endorsement (signed by an untrusted key) changes nothing.
        let forged = KeyEndorsement::sign(&new, &new.verifying_key(), 1);
        assert_eq!(holder.accept_endorsements(&[forged]), Ok(0));
        assert!(holder.apply(&bundle(2, &new)).is_err());
        let endorsement = KeyEndorsement::sign(&old, &new.verifying_key(), 1);
        assert_eq!(
            holder.accept_endorsements(std::slice::from_ref(&endorsement)),
            Ok(1)
        );
        // Overlap, across a restart: both keys verify.
        let restarted = PolicyHolder::new(old.verifying_key(), "t".into(), path.clone());
        assert_eq!(restarted.trusted_keys().len(), 2);
        assert_eq!(restarted.load_from_disk(), Ok(Some(1)));
        assert_eq!(
            restarted.apply(&bundle(2, &old)),
            Ok(ApplyOutcome::Applied(2))
        );
        assert_eq!(
            restarted.apply(&bundle(3, &new)),
            Ok(ApplyOutcome::Applied(3))
        );
        // Retired: the old key is refused, also after another restart.
        assert_eq!(restarted.trusted_keys().len(), 1);
        assert!(restarted.apply(&bundle(4, &old)).is_err());
        let again = PolicyHolder::new(old.verifying_key(), "t".into(), path);
        assert_eq!(again.load_from_disk(), Ok(Some(3)));
        assert!(again.apply(&bundle(5, &old)).is_err());
        assert_eq!(again.accept_endorsements(&[endorsement]), Ok(0));
        assert_eq!(again.apply(&bundle(5, &new)), Ok(ApplyOutcome::Applied(5)));
    }
}
