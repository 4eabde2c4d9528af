//! Secrets at rest: every private key and seed the control plane keeps in its database (tenant
//! CA private keys, the policy signing keys, admins' and remote users' TOTP seeds) is sealed with the operator's
//! secrets key before it is written and opened when it is read.
//!
//! * AEAD: AES-256-GCM (ring), a fresh random 96-bit nonce per value.
//! * Stored form: `sase-enc:v1:<kid>:<base64url(nonce ‖ ciphertext ‖ tag)>`. `kid` is the first
//!   16 hex digits of SHA-256 over a fixed label and the key, so a wrong key is recognised by
//!   its id and reported at start, never decrypted into garbage.
//! * Associated data: the prefix plus the value's *purpose* (`tenants.ca_key_pem:<tenant>`,
//!   `admins.totp_secret:<admin>`, `ztna_users.totp_secret:<user>`, `settings:<key>`), so a ciphertext moved to another row or
//!   column does not open.
//! * The key: `--secrets-key-file PATH` or env `SASE_SECRETS_KEY` (32 bytes, base64 or hex);
//!   without either, `<data-dir>/secrets.key` (created 0600 on first start, with a warning:
//!   the database alone then reveals nothing, the database together with the data dir does).
//! * Plaintext values left by an older version are sealed at start ([`seal_existing`]); on
//!   SQLite the file is then vacuumed so the old pages do not keep them.
//!
//! Values are opened where they are used (enrolment, sign-in, start-up), none of which is a
//! request hot path; the policy signing key is opened once at start and kept in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Backend, Store, StoreError, StoreResult};

/// Prefix of every sealed value (format version 1).
pub const PREFIX: &str = "sase-enc:v1:";
/// Name of the generated key file in the data dir (demo / development default).
pub const DEFAULT_KEY_FILE: &str = "secrets.key";
/// Environment variable that may hold the key itself.
pub const KEY_ENV: &str = "SASE_SECRETS_KEY";
/// Settings whose values are secret (sealed with purpose `settings:<key>`).
pub const SECRET_SETTINGS: &[&str] = &[
    "policy_signing_key",
    "policy_signing_key_active",
    "policy_signing_key_next",
];

/// Secrets failures.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key text is not 32 bytes of base64 or hex.
    #[error("secrets key: {0} (expected 32 random bytes, base64 or hex; generate one with `head -c 32 /dev/urandom | base64`)")]
    BadKey(String),
    /// The values were sealed with another key.
    #[error("the secrets key does not match the database: values are sealed with key id {found}, the key given has id {expected}. Start with the key the database was sealed with (--secrets-key-file or SASE_SECRETS_KEY)")]
    WrongKey {
        /// Id of the key given.
        expected: String,
        /// Id found on a stored value.
        found: String,
    },
    /// The database holds sealed values but no key was supplied and none is in the data dir.
    #[error("the database holds secrets sealed with key id {found} but no secrets key was given (--secrets-key-file, SASE_SECRETS_KEY) and {path} does not exist")]
    MissingKey {
        /// Key id found on a stored value.
        found: String,
        /// The default key file looked for.
        path: String,
    },
    /// A sealed value does not open (altered, truncated or moved to another row).
    #[error("sealed value for {0} does not open: altered or moved")]
    Corrupt(String),
    /// Reading or writing the key file.
    #[error("secrets key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operator's key, ready to seal and open values.
pub struct Sealer {
    key: LessSafeKey,
    kid: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("kid", &self.kid).finish()
    }
}

/// The key id of raw key bytes: 16 hex digits of SHA-256 over a label and the key.
fn key_id(bytes: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"sase-secrets-key-id\0");
    h.update(bytes);
    hex::encode(&h.finalize()[..8])
}

/// Parses key text: 32 bytes as base64 (standard or URL-safe, padded or not) or 64 hex digits.
///
/// # Errors
/// [`SecretsError::BadKey`] for anything else.
pub fn parse_key(text: &str) -> Result<[u8; 32], SecretsError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| SecretsError::BadKey(e.to_string()))?
    } else {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|e| e.decode(text).ok())
            .ok_or_else(|| SecretsError::BadKey("neither base64 nor hex".into()))?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| SecretsError::BadKey(format!("{} bytes", b.len())))
}

impl Sealer {
    /// A sealer over raw key bytes.
    pub fn new(bytes: &[u8; 32]) -> Sealer {
        // AES-256 accepts any 32-byte key; the length is fixed by the type.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key");
        Sealer {
            key: LessSafeKey::new(unbound),
            kid: key_id(bytes),
        }
    }

    /// The key id carried by every value this sealer writes.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn aad(kid: &str, purpose: &str) -> Vec<u8> {
        format!("{PREFIX}{kid}:{purpose}").into_bytes()
    }

    /// Seals `plaintext` for `purpose` (fresh random nonce).
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut buf = plaintext.to_vec();
        // Sealing fails only when the input exceeds GCM's ~64 GB limit; values are a few KiB.
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(&self.kid, purpose)),
                &mut buf,
            )
            .expect("AES-GCM seal of a small value");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}:{}",
            self.kid,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Opens a sealed value written for `purpose`.
    ///
    /// # Errors
    /// [`SecretsError::WrongKey`] when it was sealed with another key, [`SecretsError::Corrupt`]
    /// when it does not open (altered, truncated, or another row's value).
    pub fn open(&self, purpose: &str, stored: &str) -> Result<Vec<u8>, SecretsError> {
        let (kid, body) = split_sealed(stored).ok_or_else(|| corrupt(purpose))?;
        if kid != self.kid {
            return Err(SecretsError::WrongKey {
                expected: self.kid.clone(),
                found: kid.to_string(),
            });
        }
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| corrupt(purpose))?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(corrupt(purpose));
        }
        let mut ciphertext = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| corrupt(purpose))?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(kid, purpose)), &mut ciphertext)
            .map_err(|_| corrupt(purpose))?;
        Ok(plain.to_vec())
    }
}

fn corrupt(purpose: &str) -> SecretsError {
    SecretsError::Corrupt(purpose.to_string())
}

/// `(kid, body)` of a sealed value, `None` when `stored` is not one.
fn split_sealed(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(PREFIX)?.split_once(':')
}

/// Whether a stored value is sealed (as opposed to legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key id of a sealed value.
pub fn sealed_kid(stored: &str) -> Option<&str> {
    split_sealed(stored).map(|(kid, _)| kid)
}

/// Purpose of a tenant's CA private key.
pub fn tenant_ca_purpose(tenant_id: &str) -> String {
    format!("tenants.ca_key_pem:{tenant_id}")
}

/// Purpose of an admin's TOTP seed.
pub fn totp_purpose(admin_id: &str) -> String {
    format!("admins.totp_secret:{admin_id}")
}

/// Purpose of a remote (ZTNA) user's TOTP seed.
pub fn ztna_totp_purpose(user_id: &str) -> String {
    format!("ztna_users.totp_secret:{user_id}")
}

/// Purpose of a secret setting.
pub fn setting_purpose(key: &str) -> String {
    format!("settings:{key}")
}

impl Store {
    /// This store, sealing secret columns with `sealer` from now on.
    #[must_use]
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Store {
        self.sealer = Some(sealer);
        self
    }

    /// The sealer in use, if any (a store opened without one reads and writes plaintext: unit
    /// tests, and the moment before [`seal_existing`] runs).
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_deref()
    }

    /// Seals a secret value for writing (unchanged when the store has no sealer).
    pub(crate) fn seal_text(&self, purpose: &str, plaintext: &str) -> String {
        match &self.sealer {
            Some(s) => s.seal(purpose, plaintext.as_bytes()),
            None => plaintext.to_string(),
        }
    }

    /// Opens a stored secret value (legacy plaintext passes through).
    pub(crate) fn open_text(&self, purpose: &str, stored: String) -> StoreResult<String> {
        if !is_sealed(&stored) {
            return Ok(stored);
        }
        let sealer = self.sealer.as_ref().ok_or_else(|| {
            StoreError::Corrupt(format!("{purpose} is sealed and no secrets key is loaded"))
        })?;
        let plain = sealer
            .open(purpose, &stored)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        String::from_utf8(plain).map_err(|_| StoreError::Corrupt(format!("{purpose}: not UTF-8")))
    }

    /// Reads a secret setting, opened.
    ///
    /// # Errors
    /// Database failure, or a value that does not open.
    pub async fn secret_setting(&self, key: &str) -> StoreResult<Option<String>> {
        match self.setting(key).await? {
            Some(v) => Ok(Some(self.open_text(&setting_purpose(key), v)?)),
            None => Ok(None),
        }
    }

    /// Writes (inserts or replaces) a secret setting, sealed; `None` deletes it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_secret_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()> {
        match value {
            Some(v) => {
                let sealed = self.seal_text(&setting_purpose(key), v);
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(sealed)
                .execute(self.pool())
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(key)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes a secret setting only if it is not set yet; returns the value in force, opened.
    ///
    /// # Errors
    /// Database failure, or a stored value that does not open.
    pub async fn secret_setting_init(&self, key: &str, value: &str) -> StoreResult<String> {
        let sealed = self.seal_text(&setting_purpose(key), value);
        let stored = self.setting_init(key, &sealed).await?;
        self.open_text(&setting_purpose(key), stored)
    }
}

/// One stored secret: where it is, its purpose and its stored text.
struct StoredSecret {
    table: &'static str,
    column: &'static str,
    id_column: &'static str,
    id: String,
    purpose: String,
    value: String,
}

/// The purpose of a sealed value, from its row's id.
type Purpose = fn(&str) -> String;

async fn stored_secrets(store: &Store) -> StoreResult<Vec<StoredSecret>> {
    let mut out = Vec::new();
    // The sealed columns of rows keyed by `id`, with the purpose each value is sealed for.
    let columns: [(&str, &str, Purpose); 3] = [
        ("tenants", "ca_key_pem", tenant_ca_purpose),
        ("admins", "totp_secret", totp_purpose),
        ("ztna_users", "totp_secret", ztna_totp_purpose),
    ];
    for (table, column, purpose) in columns {
        for row in sqlx::query(&format!(
            "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL"
        ))
        .fetch_all(store.pool())
        .await?
        {
            let id: String = row.try_get("id")?;
            out.push(StoredSecret {
                table,
                column,
                id_column: "id",
                purpose: purpose(&id),
                value: row.try_get(column)?,
                id,
            });
        }
    }
    for key in SECRET_SETTINGS {
        if let Some(value) = store.setting(key).await? {
            out.push(StoredSecret {
                table: "settings",
                column: "value",
                id_column: "key",
                id: (*key).to_string(),
                purpose: setting_purpose(key),
                value,
            });
        }
    }
    Ok(out)
}

/// The key id of the first sealed value in the database, if any.
///
/// # Errors
/// Database failure.
pub async fn first_sealed_kid(store: &Store) -> StoreResult<Option<String>> {
    Ok(stored_secrets(store)
        .await?
        .iter()
        .find_map(|s| sealed_kid(&s.value).map(str::to_string)))
}

/// What [`seal_existing`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SealReport {
    /// Values already sealed with this key (and checked to open).
    pub sealed: usize,
    /// Plaintext values sealed now.
    pub migrated: usize,
}

/// Checks every stored secret against the store's key and seals the plaintext ones.
///
/// Every sealed value must carry this key's id and open; the first that does not stops the
/// start with [`SecretsError::WrongKey`] or [`SecretsError::Corrupt`] (nothing is written
/// before all are checked). When values were sealed now, SQLite's file is checkpointed and
/// vacuumed (PostgreSQL: `VACUUM` on the tables) so freed pages do not keep the plaintext.
///
/// # Errors
/// As above, or database failure. A store without a sealer is an error (`Corrupt`).
pub async fn seal_existing(store: &Store) -> Result<SealReport, SecretsError> {
    let Some(sealer) = store.sealer() else {
        return Err(SecretsError::Corrupt("no secrets key loaded".into()));
    };
    let secrets = stored_secrets(store).await?;
    let mut report = SealReport::default();
    for s in secrets.iter().filter(|s| is_sealed(&s.value)) {
        sealer.open(&s.purpose, &s.value)?;
        report.sealed += 1;
    }
    for s in secrets.iter().filter(|s| !is_sealed(&s.value)) {
        let sealed = sealer.seal(&s.purpose, s.value.as_bytes());
        let sql = format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2 AND {} = $3",
            s.table, s.column, s.id_column, s.column
        );
        sqlx::query(&sql)
            .bind(sealed)
            .bind(&s.id)
            .bind(&s.value)
            .execute(store.pool())
            .await
            .map_err(StoreError::from)?;
        report.migrated += 1;
    }
    if report.migrated > 0 {
        match store.backend() {
            Backend::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(store.pool())
                    .await
                    .map_err(StoreError::from)?;
                sqlx::query("VACUUM")
                    .execute(store.pool())
                    .await
                    .map_err(StoreError::from)?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(store.pool())
                    .await
                    .map_err(StoreError::from)?;
            }
            Backend::Postgres => {
                for table in ["tenants", "admins", "ztna_users", "settings"] {
                    sqlx::query(&format!("VACUUM FULL {table}"))
                        .execute(store.pool())
                        .await
                        .map_err(StoreError::from)?;
                }
            }
        }
    }
    Ok(report)
}

/// Where the key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secrets-key-file`.
    File(PathBuf),
    /// Env `SASE_SECRETS_KEY`.
    Env,
    /// `<data-dir>/secrets.key`, already there.
    DataDir(PathBuf),
    /// `<data-dir>/secrets.key`, created now.
    Generated(PathBuf),
}

impl KeySource {
    /// Whether the key lives next to the database (the development default).
    pub fn in_data_dir(&self) -> bool {
        matches!(self, KeySource::DataDir(_) | KeySource::Generated(_))
    }
}

fn read_key_file(path: &Path) -> Result<[u8; 32], SecretsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_key(&text)
}

/// Writes a new random key (base64, mode 0600; never overwrites).
///
/// # Errors
/// File errors, including an existing file.
pub fn generate_key_file(path: &Path) -> Result<[u8; 32], SecretsError> {
    use std::io::Write as _;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let io = |source| SecretsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(
        format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
        .as_bytes(),
    )
    .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(key)
}

/// Finds the secrets key: `key_file`, else `env_key` (the value of `SASE_SECRETS_KEY`), else
/// `<data-dir>/secrets.key`, else — only when the database holds nothing sealed yet — a new
/// key written there.
///
/// # Errors
/// Unreadable or malformed key, or a sealed database and no key.
pub async fn resolve_key(
    store: &Store,
    data_dir: &Path,
    key_file: Option<&Path>,
    env_key: Option<&str>,
) -> Result<(Sealer, KeySource), SecretsError> {
    if let Some(path) = key_file {
        return Ok((
            Sealer::new(&read_key_file(path)?),
            KeySource::File(path.to_path_buf()),
        ));
    }
    if let Some(text) = env_key.filter(|t| !t.trim().is_empty()) {
        return Ok((Sealer::new(&parse_key(text)?), KeySource::Env));
    }
    let path = data_dir.join(DEFAULT_KEY_FILE);
    if path.exists() {
        return Ok((
            Sealer::new(&read_key_file(&path)?),
            KeySource::DataDir(path),
        ));
    }
    if let Some(found) = first_sealed_kid(store).await? {
        return Err(SecretsError::MissingKey {
            found,
            path: path.display().to_string(),
        });
    }
    let key = generate_key_file(&path)?;
    Ok((Sealer::new(&key), KeySource::Generated(path)))
}

/// Restricts the data dir to its owner (0700): it holds the database and, by default, the key.
///
/// # Errors
/// When the mode cannot be set.
pub fn restrict_data_dir(data_dir: &Path) -> Result<(), SecretsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |source| SecretsError::Io {
            path: data_dir.display().to_string(),
            source,
        };
        let mode = std::fs::metadata(data_dir)
            .map_err(io)?
            .permissions()
            .mode()
            & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io)?;
            tracing::info!(dir = %data_dir.display(), old_mode = format!("{mode:o}"), "data dir restricted to 0700");
        }
    }
    Ok(())
}

/// Start-up: restricts the data dir, finds the key ([`resolve_key`], env `SASE_SECRETS_KEY`),
/// checks every stored secret against it and seals plaintext ones ([`seal_existing`]).
/// Returns the store sealing with that key.
///
/// # Errors
/// A wrong, missing or malformed key; database failure.
pub async fn init(
    store: Store,
    data_dir: &Path,
    key_file: Option<&Path>,
) -> Result<Store, SecretsError> {
    restrict_data_dir(data_dir)?;
    let env_key = std::env::var(KEY_ENV).ok();
    let (sealer, source) = resolve_key(&store, data_dir, key_file, env_key.as_deref()).await?;
    if let KeySource::File(path) = &source {
        warn_if_readable_by_others(path);
    }
    if source.in_data_dir() {
        tracing::warn!(
            key_file = %data_dir.join(DEFAULT_KEY_FILE).display(),
            generated = matches!(source, KeySource::Generated(_)),
            "secrets key is in the data dir next to the database (development default): in production supply it separately with --secrets-key-file or SASE_SECRETS_KEY (a stolen database alone reveals no key; database and data dir together do)"
        );
    }
    let store = store.with_sealer(Arc::new(sealer));
    let report = seal_existing(&store).await?;
    tracing::info!(
        kid = store.sealer().map(Sealer::kid).unwrap_or_default(),
        sealed = report.sealed,
        migrated = report.migrated,
        "secrets at rest: key loaded"
    );
    Ok(store)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "secrets key file is readable by group or others; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_do_not_open_elsewhere() {
        let sealer = Sealer::new(&[7u8; 32]);
        let a = sealer.seal("tenants.ca_key_pem:t1", b"-----BEGIN PRIVATE KEY-----");
        let b = sealer.seal("tenants.ca_key_pem:t1", b"-----BEGIN PRIVATE KEY-----");
        assert_ne!(a, b, "fresh nonce per value");
        assert!(a.starts_with(&format!("{PREFIX}{}:", sealer.kid())));
        assert!(!a.contains("BEGIN"));
        assert_eq!(
            sealer.open("tenants.ca_key_pem:t1", &a).expect("opens"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // Moved to another row: refused.
        assert!(matches!(
            sealer.open("tenants.ca_key_pem:t2", &a),
            Err(SecretsError::Corrupt(_))
        ));
        // Altered: refused.
        let mut altered = a.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(sealer.open("tenants.ca_key_pem:t1", &altered).is_err());
        // Another key: named, not garbage.
        let other = Sealer::new(&[8u8; 32]);
        match other.open("tenants.ca_key_pem:t1", &a) {
            Err(SecretsError::WrongKey { expected, found }) => {
                assert_eq!(expected, other.kid());
                assert_eq!(found, sealer.kid());
            }
            other => panic!("expected WrongKey, got {other:?}"),
        }
    }

    #[test]
    fn keys_parse_from_base64_and_hex_only_at_32_bytes() {
        let raw = [0xabu8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_key(&format!("{b64}\n")).expect("b64"), raw);
        assert_eq!(parse_key(&hex::encode(raw)).expect("hex"), raw);
        assert!(parse_key("c2hvcnQ=").is_err());
        assert!(parse_key("not a key at all!").is_err());
    }

    /// A store on a new SQLite file; the directory to remove afterwards.
    async fn temp_store() -> (Store, std::path::PathBuf) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sase-secrets-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.join("control.db").display()
        ))
        .await
        .expect("store");
        (store, dir)
    }

    #[tokio::test]
    async fn plaintext_rows_are_sealed_at_start_and_a_wrong_key_is_refused() {
        let (plain, db_dir) = temp_store().await;
        let tenant = sase_model::fleet::Tenant {
            id: "t1".into(),
            name: "one".into(),
            created_at_ms: 1,
        };
        plain
            .create_tenant(&tenant, "CERT", "-----BEGIN PRIVATE KEY-----x")
            .await
            .expect("tenant");
        plain
            .setting_init("policy_signing_key", "c2VlZA==")
            .await
            .expect("setting");
        // A remote user's TOTP seed as an older version could have left it.
        sqlx::query(
            "INSERT INTO ztna_users (id, tenant_id, username, password_hash, totp_secret, disabled, created_at_ms) VALUES ('zu1', 't1', 'bob', 'x', 'JBSWY3DPEHPK3PXP', 0, 1)",
        )
        .execute(plain.pool())
        .await
        .expect("remote user");
        let sealer = Arc::new(Sealer::new(&[1u8; 32]));
        let store = plain.clone().with_sealer(sealer.clone());
        let report = seal_existing(&store).await.expect("seal");
        assert_eq!(report.migrated, 3);
        let seed: String = sqlx::query("SELECT totp_secret FROM ztna_users WHERE id = 'zu1'")
            .fetch_one(store.pool())
            .await
            .expect("row")
            .try_get("totp_secret")
            .expect("col");
        assert!(is_sealed(&seed));
        assert_eq!(
            store
                .open_text(&ztna_totp_purpose("zu1"), seed)
                .expect("opens"),
            "JBSWY3DPEHPK3PXP"
        );
        let raw: String = sqlx::query("SELECT ca_key_pem FROM tenants WHERE id = 't1'")
            .fetch_one(store.pool())
            .await
            .expect("row")
            .try_get("ca_key_pem")
            .expect("col");
        assert!(is_sealed(&raw) && !raw.contains("BEGIN"));
        let (_, key) = store.tenant_ca("t1").await.expect("read").expect("some");
        assert_eq!(key, "-----BEGIN PRIVATE KEY-----x");
        assert_eq!(
            store
                .secret_setting("policy_signing_key")
                .await
                .expect("read")
                .as_deref(),
            Some("c2VlZA==")
        );
        // Second start: nothing to migrate.
        assert_eq!(
            seal_existing(&store).await.expect("again"),
            SealReport {
                sealed: 3,
                migrated: 0
            }
        );
        // Wrong key: refused by id.
        let wrong = plain.with_sealer(Arc::new(Sealer::new(&[2u8; 32])));
        assert!(matches!(
            seal_existing(&wrong).await,
            Err(SecretsError::WrongKey { .. })
        ));
        std::fs::remove_dir_all(&db_dir).ok();
    }

    #[tokio::test]
    async fn a_sealed_database_without_a_key_is_refused_not_given_a_new_key() {
        let (store, db_dir) = temp_store().await;
        let sealed = store.clone().with_sealer(Arc::new(Sealer::new(&[3u8; 32])));
        sealed
            .secret_setting_init("policy_signing_key", "x")
            .await
            .expect("init");
        let dir = std::env::temp_dir().join(format!("sase-secrets-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let got = resolve_key(&store, &dir, None, None).await;
        assert!(matches!(got, Err(SecretsError::MissingKey { .. })));
        assert!(!dir.join(DEFAULT_KEY_FILE).exists());
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&db_dir).ok();
    }
}
