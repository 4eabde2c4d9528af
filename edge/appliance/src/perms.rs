//! File modes of the edge's secrets, checked at every start of `sase-edge run`.
//!
//! The data dir must be 0700 and every private key file (`*.key`: the device key, the
//! listener key, an operator's `--tls-key`) 0600. The edge **fixes and warns**: a looser mode
//! is tightened (`chmod`) and logged at WARN naming the path and the mode found, so an
//! operator's slip never leaves a key readable and never takes a branch offline. What a
//! `chmod` cannot repair — a data dir or key owned by another user, a symlinked key — is
//! refused: the edge does not start and says why. docs/OPERATIONS.md explains; the hardening
//! part `tests/security/hardening.d/30-ops` checks it against the binary.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// What the check found.
#[derive(Debug, thiserror::Error)]
pub enum PermsError {
    /// A path is owned by another user than the one the edge runs as.
    #[error("{path} is owned by uid {owner}, not by the edge's uid {me}: fix the ownership (chown) before starting")]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The edge's effective uid.
        me: u32,
    },
    /// A key file is a symbolic link (it could point anywhere).
    #[error("{0} is a symbolic link: key files must be regular files in place")]
    Symlink(PathBuf),
    /// Reading metadata or changing a mode failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A mode the check tightened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// The path.
    pub path: PathBuf,
    /// The mode found (permission bits).
    pub was: u32,
    /// The mode set.
    pub now: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PermsError + '_ {
    move |source| PermsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The effective uid of this process (the owner of `/proc/self`).
fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn tighten(path: &Path, wanted: u32, me: Option<u32>) -> Result<Option<Fixed>, PermsError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if meta.file_type().is_symlink() {
        return Err(PermsError::Symlink(path.to_path_buf()));
    }
    if let Some(me) = me {
        if meta.uid() != me {
            return Err(PermsError::Owner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
    }
    let mode = meta.permissions().mode() & 0o7777;
    // Anything beyond `wanted` (group/other bits, setuid...) is removed.
    if mode & !wanted == 0 {
        return Ok(None);
    }
    let now = mode & wanted;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(now)).map_err(io(path))?;
    Ok(Some(Fixed {
        path: path.to_path_buf(),
        was: mode,
        now,
    }))
}

fn key_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "key") {
            out.push(path);
        }
    }
}

/// Checks (and tightens) the data dir and the key files in it and in its `tls/` directory,
/// plus `extra_keys` (an operator's listener key elsewhere). Returns what was tightened.
///
/// # Errors
/// A path owned by another user, a symlinked key, or an I/O failure.
pub fn check(data_dir: &Path, extra_keys: &[PathBuf]) -> Result<Vec<Fixed>, PermsError> {
    let me = effective_uid();
    let mut fixed = Vec::new();
    if !data_dir.exists() {
        return Ok(fixed);
    }
    if let Some(f) = tighten(data_dir, 0o700, me)? {
        fixed.push(f);
    }
    let mut keys = Vec::new();
    key_files(data_dir, &mut keys);
    key_files(&data_dir.join("tls"), &mut keys);
    keys.extend(extra_keys.iter().cloned());
    for key in keys {
        if let Some(f) = tighten(&key, 0o600, me)? {
            fixed.push(f);
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0)
    }

    #[test]
    fn loose_modes_are_tightened_and_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = crate::scratch::Scratch::new("perms", "modes");
        std::fs::create_dir_all(dir.join("tls"))?;
        std::fs::write(dir.join("device.key"), b"k")?;
        std::fs::write(dir.join("tls/listener.key"), b"k")?;
        std::fs::write(dir.join("device.pem"), b"c")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(
            dir.join("device.key"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        std::fs::set_permissions(
            dir.join("tls/listener.key"),
            std::fs::Permissions::from_mode(0o640),
        )?;
        std::fs::set_permissions(
            dir.join("device.pem"),
            std::fs::Permissions::from_mode(0o644),
        )?;
        let fixed = check(&dir, &[])?;
        assert_eq!(fixed.len(), 3, "{fixed:?}");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("device.key")), 0o600);
        assert_eq!(mode(&dir.join("tls/listener.key")), 0o600);
        // Certificates are public.
        assert_eq!(mode(&dir.join("device.pem")), 0o644);
        // A second start finds nothing to do.
        assert!(check(&dir, &[])?.is_empty());
        std::os::unix::fs::symlink(dir.join("device.pem"), dir.join("evil.key"))?;
        assert!(matches!(check(&dir, &[]), Err(PermsError::Symlink(_))));
        Ok(())
    }
}
