//! Backup and restore of a control plane (`sase-control backup` / `sase-control restore`).
//!
//! A backup is a directory (tar it to move it):
//!
//! ```text
//! MANIFEST.json   format, time, database kind, secrets key id, SHA-256 of every file
//! control.db      SQLite: a consistent copy taken with `VACUUM INTO` while the server runs
//! tls/…           the server's TLS identity (edges pin its CA: keep it, or they stop trusting)
//! updates/…       firmware bundles and offers
//! secrets.key     only when the key lives in the data dir (development default)
//! ```
//!
//! With PostgreSQL the database is not copied (use `pg_dump`, see `docs/OPERATIONS.md`); the
//! files are. Restore checks every file against the manifest, refuses a data dir that already
//! holds a database, and writes keys 0600 in a 0700 directory. Secret columns stay sealed in
//! the copy: restoring needs the same secrets key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Backend, Store, StoreError};

/// Format name in the manifest.
pub const FORMAT: &str = "sase-control-backup/1";
/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.json";
/// The SQLite database's file name (in the data dir and in a backup).
pub const DB_FILE: &str = "control.db";
/// Data-dir entries that are backed up (besides the database).
const DATA_ENTRIES: &[&str] = &["tls", "updates", crate::secrets::DEFAULT_KEY_FILE];

/// Backup and restore failures.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// File system failure.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// What.
        source: std::io::Error,
    },
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup does not match its manifest, or the target is not empty.
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was taken (Unix ms).
    pub created_at_ms: i64,
    /// `sqlite` (the database is `control.db`) or `postgres` (not included: `pg_dump`).
    pub database: String,
    /// Id of the secrets key the database's sealed values need (`None`: nothing sealed yet).
    pub secrets_key_id: Option<String>,
    /// Whether `secrets.key` is in the backup (it then opens everything: keep it safe).
    pub secrets_key_included: bool,
    /// Relative path → SHA-256 (hex) of every file.
    pub files: BTreeMap<String, String>,
}

fn sha256_file(path: &Path) -> Result<String, BackupError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// Copies `from` to `to` (0600: everything in a backup or data dir is private).
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    if let Some(parent) = to.parent() {
        create_private_dir(parent)?;
    }
    std::fs::copy(from, to).map_err(io(from))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).map_err(io(to))?;
    }
    Ok(())
}

/// Every regular file under `root/rel` (relative paths, sorted).
fn files_under(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    let path = root.join(rel);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
    };
    if meta.is_file() {
        out.push(rel.to_path_buf());
    } else if meta.is_dir() {
        let mut entries = std::fs::read_dir(&path)
            .map_err(io(&path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io(&path))?;
        entries.sort();
        for name in entries {
            files_under(root, &rel.join(name), out)?;
        }
    }
    Ok(())
}

fn rel_string(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "/")
}

/// Takes a backup of the control plane whose data dir is `data_dir` and whose database is
/// `store` into the new directory `out`.
///
/// # Errors
/// `out` exists and is not empty, file or database failures.
pub async fn backup(store: &Store, data_dir: &Path, out: &Path) -> Result<Manifest, BackupError> {
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} exists and is not empty",
            out.display()
        )));
    }
    create_private_dir(out)?;
    let secrets_key_id = crate::secrets::first_sealed_kid(store).await?;
    let database = match store.backend() {
        Backend::Sqlite => {
            let target = out.join(DB_FILE);
            let target_text = target.to_string_lossy().replace('\'', "''");
            // A transactionally consistent copy while the server keeps writing (WAL).
            sqlx::query(&format!("VACUUM INTO '{target_text}'"))
                .execute(store.pool())
                .await
                .map_err(StoreError::from)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&target))?;
            }
            "sqlite"
        }
        Backend::Postgres => "postgres",
    };
    let mut rels = Vec::new();
    for entry in DATA_ENTRIES {
        files_under(data_dir, Path::new(entry), &mut rels)?;
    }
    for rel in &rels {
        copy_private(&data_dir.join(rel), &out.join(rel))?;
    }
    if database == "sqlite" {
        rels.push(PathBuf::from(DB_FILE));
    }
    let mut files = BTreeMap::new();
    for rel in &rels {
        files.insert(rel_string(rel), sha256_file(&out.join(rel))?);
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        created_at_ms: crate::state::now_ms(),
        database: database.to_string(),
        secrets_key_id,
        secrets_key_included: files.contains_key(crate::secrets::DEFAULT_KEY_FILE),
        files,
    };
    let path = out.join(MANIFEST);
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Refused(e.to_string()))?;
    std::fs::write(&path, json).map_err(io(&path))?;
    Ok(manifest)
}

/// Restores the backup in `from` into the data dir `data_dir` (created 0700; it must not hold
/// a database yet). Every file is checked against the manifest before anything is written.
///
/// # Errors
/// A file missing, extra or changed, a non-empty target, file failures.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let path = from.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).map_err(io(&path))?)
        .map_err(|e| BackupError::Refused(format!("{}: {e}", path.display())))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Refused(format!(
            "unknown backup format {:?}",
            manifest.format
        )));
    }
    let mut present = Vec::new();
    for entry in DATA_ENTRIES.iter().chain(std::iter::once(&DB_FILE)) {
        files_under(from, Path::new(entry), &mut present)?;
    }
    let present: Vec<String> = present.iter().map(|p| rel_string(p)).collect();
    for rel in &present {
        if !manifest.files.contains_key(rel) {
            return Err(BackupError::Refused(format!(
                "{rel} is in the backup but not in its manifest"
            )));
        }
    }
    for (rel, sum) in &manifest.files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(BackupError::Refused(format!(
                "bad path {rel:?} in manifest"
            )));
        }
        let file = from.join(rel);
        if !file.is_file() {
            return Err(BackupError::Refused(format!("{rel} is missing")));
        }
        if sha256_file(&file)? != *sum {
            return Err(BackupError::Refused(format!(
                "{rel} does not match the manifest (changed or damaged)"
            )));
        }
    }
    if data_dir.join(DB_FILE).exists() {
        return Err(BackupError::Refused(format!(
            "{} already holds a database; restore into a new data dir",
            data_dir.display()
        )));
    }
    create_private_dir(data_dir)?;
    for rel in manifest.files.keys() {
        copy_private(&from.join(rel), &data_dir.join(rel))?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sase-backup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn backup_restores_into_a_fresh_dir_and_refuses_tampering() {
        let data = temp("data");
        std::fs::create_dir_all(data.join("tls")).expect("dir");
        std::fs::write(data.join("tls/ca.pem"), "CA").expect("write");
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            data.join(DB_FILE).display()
        ))
        .await
        .expect("store");
        store.setting_init("marker", "42").await.expect("setting");
        let out = temp("out");
        let manifest = backup(&store, &data, &out).await.expect("backup");
        assert_eq!(manifest.database, "sqlite");
        assert!(manifest.files.contains_key("tls/ca.pem"));
        assert!(manifest.files.contains_key(DB_FILE));
        // A second backup into the same directory is refused.
        assert!(backup(&store, &data, &out).await.is_err());

        let fresh = temp("fresh");
        restore(&out, &fresh).expect("restore");
        let restored = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            fresh.join(DB_FILE).display()
        ))
        .await
        .expect("restored store");
        assert_eq!(
            restored.setting("marker").await.expect("read").as_deref(),
            Some("42")
        );
        // Restoring over a database is refused.
        assert!(matches!(
            restore(&out, &fresh),
            Err(BackupError::Refused(_))
        ));
        // A changed file is refused before anything is written.
        std::fs::write(out.join("tls/ca.pem"), "EVIL").expect("tamper");
        let other = temp("other");
        assert!(matches!(
            restore(&out, &other),
            Err(BackupError::Refused(_))
        ));
        assert!(!other.join(DB_FILE).exists());
        for d in [data, out, fresh, other] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
