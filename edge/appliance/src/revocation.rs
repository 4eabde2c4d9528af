//! The I/O half of continuous access evaluation: the revocation table of
//! `sase_gateway::revocation` behind a lock, fed by the channel (`revocations` messages),
//! written to the data directory (`revocations.json`, atomically) whenever it grows so that a
//! restarted edge keeps refusing revoked sessions without the control plane, and consulted by
//! the request path after every token verdict.

use std::path::PathBuf;
use std::sync::RwLock;

use sase_gateway::revocation::RevocationTable;
use sase_gateway::VerifiedToken;
use sase_model::caep::Revocation;

use crate::identity::write_atomic;

/// Largest revocation file read at start, in bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The revocations in force on this edge.
pub struct Revocations {
    table: RwLock<RevocationTable>,
    path: PathBuf,
}

impl Revocations {
    /// Loads the revocations kept at `path` (none when the file is missing or unreadable: a
    /// damaged file is logged and replaced by the next push), dropping those expired at
    /// `now_ms`.
    pub fn load(path: PathBuf, now_ms: i64) -> Revocations {
        let mut table = RevocationTable::new();
        let read = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.len() <= MAX_FILE_BYTES)
            .and_then(|_| std::fs::read(&path).ok());
        if let Some(bytes) = read {
            match serde_json::from_slice::<Vec<Revocation>>(&bytes) {
                Ok(list) => {
                    let n = table.extend(list, now_ms);
                    tracing::info!(revocations = n, "revocations loaded from disk");
                }
                Err(err) => {
                    tracing::error!(%err, path = %path.display(), "revocation file unreadable; ignored")
                }
            }
        }
        Revocations {
            table: RwLock::new(table),
            path,
        }
    }

    /// Merges revocations pushed by the control plane and persists the table when it grew;
    /// returns how many were new.
    ///
    /// # Errors
    /// When the table cannot be written (the revocations are enforced anyway).
    pub fn apply(&self, revocations: Vec<Revocation>, now_ms: i64) -> anyhow::Result<usize> {
        let (added, snapshot) = {
            let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
            table.prune(now_ms);
            let added = table.extend(revocations, now_ms);
            let snapshot: Vec<Revocation> = if added > 0 {
                table.iter().cloned().collect()
            } else {
                Vec::new()
            };
            (added, snapshot)
        };
        if added > 0 {
            let json = serde_json::to_vec(&snapshot)?;
            write_atomic(&self.path, &json, 0o600)?;
        }
        Ok(added)
    }

    /// The revocation refusing this token at `now_ms`, if any.
    pub fn check(&self, token: &VerifiedToken, now_ms: i64) -> Option<Revocation> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table.check(token, now_ms).cloned()
    }

    /// Forgets expired revocations (and rewrites the file when some were).
    pub fn prune(&self, now_ms: i64) {
        let snapshot = {
            let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
            if table.prune(now_ms) == 0 {
                return;
            }
            table.iter().cloned().collect::<Vec<_>>()
        };
        if let Ok(json) = serde_json::to_vec(&snapshot) {
            if let Err(err) = write_atomic(&self.path, &json, 0o600) {
                tracing::warn!(%err, "could not rewrite the revocation file");
            }
        }
    }

    /// Revocations held.
    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sase_model::caep::RevocationEvent;

    #[test]
    fn revocations_survive_a_restart_and_expire() {
        let dir = crate::scratch::Scratch::new("revocations", "persist");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("revocations.json");
        let r = Revocation {
            id: "j#0".into(),
            event: RevocationEvent::SessionRevoked,
            iss: None,
            sub: Some("alice".into()),
            email: None,
            sid: None,
            event_time_ms: 1_000,
            expires_at_ms: 10_000,
        };
        let held = Revocations::load(path.clone(), 0);
        assert_eq!(held.apply(vec![r.clone()], 0).expect("apply"), 1);
        assert_eq!(held.apply(vec![r], 0).expect("apply"), 0);
        let again = Revocations::load(path.clone(), 5_000);
        assert_eq!(again.len(), 1);
        let later = Revocations::load(path.clone(), 10_000);
        assert!(later.is_empty());
        again.prune(20_000);
        assert!(Revocations::load(path, 0).is_empty());
    }
}
