//! The store: every read and write of control-plane state, through sqlx's `Any` driver so the
//! same code and the same migrations run on the embedded SQLite file (default) and on
//! PostgreSQL. SQL here is portable (`$N` parameters, TEXT/BIGINT columns, no autoincrement).

use sase_model::audit::AuditEvent;
use sase_model::fleet::{Device, DeviceStatus, Site, Tenant};
use sase_model::merkle::SignedTreeHead;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Handle on the database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Seals secret columns (`secrets`); `None` reads and writes them as they are.
    pub(crate) sealer: Option<std::sync::Arc<crate::secrets::Sealer>>,
}

/// A stored credential joined with its admin.
#[derive(Debug, Clone)]
pub struct CredentialOwner {
    /// Admin id.
    pub admin_id: String,
    /// Admin user name.
    pub username: String,
    /// When the credential stops working.
    pub expires_at_ms: i64,
}

/// A stored policy version.
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    /// Tenant.
    pub tenant_id: String,
    /// Version number.
    pub version: u64,
    /// The validated policy, canonical JSON.
    pub policy_json: String,
    /// The signed bundle, JSON.
    pub bundle_json: String,
    /// Who made the change.
    pub created_by: String,
    /// When.
    pub created_at_ms: i64,
}

/// Filters for audit queries; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Tenant id.
    pub tenant_id: Option<String>,
    /// Only these tenants (the caller's subtree); `Some(empty)` matches nothing.
    pub tenant_ids: Option<Vec<String>>,
    /// Device id.
    pub device_id: Option<String>,
    /// Earliest event time (inclusive, Unix ms).
    pub from_ms: Option<i64>,
    /// Latest event time (exclusive, Unix ms).
    pub to_ms: Option<i64>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// Exact identity.
    pub identity: Option<String>,
    /// Resource name.
    pub resource: Option<String>,
    /// Reason code.
    pub reason: Option<String>,
    /// Reference id.
    pub reference: Option<String>,
    /// Most rows to return.
    pub limit: i64,
}

/// An alert row.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Alert id.
    pub id: String,
    /// Tenant, when known.
    pub tenant_id: Option<String>,
    /// Device, when known.
    pub device_id: Option<String>,
    /// Machine-readable kind (`audit_chain_gap`, `channel_protocol_error`, …).
    pub kind: String,
    /// What happened.
    pub detail: String,
    /// When (Unix ms).
    pub created_at_ms: i64,
}

/// A device's signature over an uploaded batch, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// First seq of the batch as uploaded.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// Chain hash of the last event, as signed.
    pub last_hash: String,
    /// Signature algorithm.
    pub alg: String,
    /// Signature, base64.
    pub signature: String,
}

/// Outcome of storing a batch of audit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored.
    pub stored: usize,
    /// Events already stored before (idempotent re-delivery).
    pub duplicates: usize,
    /// Highest stored sequence number of the device after the batch.
    pub head_seq: u64,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_u64(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative counter {v}")))
}

fn to_i64(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| corrupt(format!("counter {v} out of range")))
}

impl Store {
    /// Connects and applies the embedded migrations.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(database_url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if database_url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let mut options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(database_url).await?;
        crate::migrations::migrator().await?.run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            sealer: None,
        })
    }

    /// The connection pool, for store extensions kept in their feature's module (`siem`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks the database answers.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- settings -------------------------------------------------------------------------

    /// Reads a setting.
    ///
    /// # Errors
    /// Database failure.
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>("value")).transpose()?)
    }

    /// Writes a setting only if it is not set yet; returns the value in force.
    ///
    /// # Errors
    /// Database failure.
    pub async fn setting_init(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        self.setting(key)
            .await?
            .ok_or_else(|| corrupt(format!("setting {key} vanished")))
    }

    // ---- tenants and sites ----------------------------------------------------------------

    /// Creates a tenant with its CA.
    ///
    /// # Errors
    /// Database failure, including a duplicate name.
    pub async fn create_tenant(
        &self,
        tenant: &Tenant,
        ca_cert_pem: &str,
        ca_key_pem: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tenants (id, name, ca_cert_pem, ca_key_pem, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(ca_cert_pem)
        .bind(self.seal_text(&crate::secrets::tenant_ca_purpose(&tenant.id), ca_key_pem))
        .bind(tenant.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates a customer tenant of an MSP, with its CA.
    ///
    /// # Errors
    /// Database failure, including a duplicate name.
    pub async fn create_tenant_in(
        &self,
        tenant: &Tenant,
        msp_id: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tenants (id, name, ca_cert_pem, ca_key_pem, created_at_ms, msp_id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(ca_cert_pem)
        .bind(self.seal_text(&crate::secrets::tenant_ca_purpose(&tenant.id), ca_key_pem))
        .bind(tenant.created_at_ms)
        .bind(msp_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn tenant_from(row: &AnyRow) -> StoreResult<Tenant> {
        Ok(Tenant {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            created_at_ms: row.try_get("created_at_ms")?,
        })
    }

    /// All tenants, by name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name, created_at_ms FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::tenant_from).collect()
    }

    /// One tenant.
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let row = sqlx::query("SELECT id, name, created_at_ms FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::tenant_from).transpose()
    }

    /// A tenant's CA certificate and key (PEM).
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenant_ca(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT ca_cert_pem, ca_key_pem FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let key = r.try_get("ca_key_pem")?;
            Ok((
                r.try_get("ca_cert_pem")?,
                self.open_text(&crate::secrets::tenant_ca_purpose(id), key)?,
            ))
        })
        .transpose()
    }

    /// Every tenant CA certificate (PEM): the roots for device client certificates.
    ///
    /// # Errors
    /// Database failure.
    pub async fn all_tenant_ca_certs(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT ca_cert_pem FROM tenants")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("ca_cert_pem")?)).collect()
    }

    /// Creates a site.
    ///
    /// # Errors
    /// Database failure, including a duplicate name within the tenant.
    pub async fn create_site(&self, site: &Site) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sites (id, tenant_id, name, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&site.id)
        .bind(&site.tenant_id)
        .bind(&site.name)
        .bind(site.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn site_from(row: &AnyRow) -> StoreResult<Site> {
        Ok(Site {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            created_at_ms: row.try_get("created_at_ms")?,
        })
    }

    /// A tenant's sites, by name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn sites(&self, tenant_id: &str) -> StoreResult<Vec<Site>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, created_at_ms FROM sites WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::site_from).collect()
    }

    /// One site.
    ///
    /// # Errors
    /// Database failure.
    pub async fn site(&self, id: &str) -> StoreResult<Option<Site>> {
        let row = sqlx::query("SELECT id, tenant_id, name, created_at_ms FROM sites WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::site_from).transpose()
    }

    // ---- admins and credentials -----------------------------------------------------------

    /// Number of admins.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin_count(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM admins")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates an admin.
    ///
    /// # Errors
    /// Database failure, including a duplicate user name.
    pub async fn create_admin(
        &self,
        id: &str,
        username: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admins (id, username, password_hash, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(username)
        .bind(password_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `(admin id, password hash)` for a user name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin_by_username(&self, username: &str) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query("SELECT id, password_hash FROM admins WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("password_hash")?)))
            .transpose()
    }

    /// Stores a credential (session or API token) by the hash of its secret.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_credential(
        &self,
        token_hash: &str,
        admin_id: &str,
        kind: &str,
        name: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credentials (token_hash, admin_id, kind, name, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(admin_id)
        .bind(kind)
        .bind(name)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The admin behind a credential hash, if it exists and has not expired.
    ///
    /// # Errors
    /// Database failure.
    pub async fn credential(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<CredentialOwner>> {
        let row = sqlx::query(
            "SELECT c.admin_id, a.username, c.expires_at_ms FROM credentials c JOIN admins a ON a.id = c.admin_id WHERE c.token_hash = $1 AND c.expires_at_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(CredentialOwner {
                admin_id: r.try_get("admin_id")?,
                username: r.try_get("username")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
            })
        })
        .transpose()
    }

    /// Deletes a credential.
    ///
    /// # Errors
    /// Database failure.
    pub async fn delete_credential(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM credentials WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- claim codes and devices ----------------------------------------------------------

    /// Stores a claim code by its hash.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_claim_code(
        &self,
        code_hash: &str,
        site: &Site,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO claim_codes (code_hash, tenant_id, site_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(code_hash)
        .bind(&site.tenant_id)
        .bind(&site.id)
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Atomically consumes a claim code and records the device it enrolled, in one
    /// transaction with the device row. Returns `false` (and stores nothing) when the code is
    /// unknown, used or expired.
    ///
    /// # Errors
    /// Database failure.
    pub async fn enroll_device(
        &self,
        code_hash: &str,
        device: &Device,
        cert_pem: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE claim_codes SET used_at_ms = $1, device_id = $2 WHERE code_hash = $3 AND used_at_ms IS NULL AND expires_at_ms > $4 AND tenant_id = $5 AND site_id = $6",
        )
        .bind(now_ms)
        .bind(&device.id)
        .bind(code_hash)
        .bind(now_ms)
        .bind(&device.tenant_id)
        .bind(&device.site_id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO devices (id, tenant_id, site_id, name, status, cert_pem, cert_sha256, enrolled_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&device.id)
        .bind(&device.tenant_id)
        .bind(&device.site_id)
        .bind(&device.name)
        .bind("active")
        .bind(cert_pem)
        .bind(&device.cert_sha256)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// `(tenant, site)` of a live claim code, without consuming it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn claim_code_target(
        &self,
        code_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT tenant_id, site_id FROM claim_codes WHERE code_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(code_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("tenant_id")?, r.try_get("site_id")?)))
            .transpose()
    }

    fn device_from(row: &AnyRow) -> StoreResult<Device> {
        let status: String = row.try_get("status")?;
        let applied: Option<i64> = row.try_get("applied_version")?;
        Ok(Device {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            site_id: row.try_get("site_id")?,
            name: row.try_get("name")?,
            status: match status.as_str() {
                "active" => DeviceStatus::Active,
                "revoked" => DeviceStatus::Revoked,
                other => return Err(corrupt(format!("device status {other}"))),
            },
            cert_sha256: row.try_get("cert_sha256")?,
            enrolled_at_ms: row.try_get("enrolled_at_ms")?,
            last_seen_ms: row.try_get("last_seen_ms")?,
            applied_version: applied.map(to_u64).transpose()?,
            edge_version: row.try_get("edge_version")?,
        })
    }

    const DEVICE_COLUMNS: &'static str = "id, tenant_id, site_id, name, status, cert_sha256, enrolled_at_ms, last_seen_ms, applied_version, edge_version";

    /// A tenant's devices, by name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn devices(&self, tenant_id: &str) -> StoreResult<Vec<Device>> {
        let sql = format!(
            "SELECT {} FROM devices WHERE tenant_id = $1 ORDER BY name, id",
            Self::DEVICE_COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::device_from).collect()
    }

    /// The device holding the certificate with this SHA-256.
    ///
    /// # Errors
    /// Database failure.
    pub async fn device_by_cert(&self, cert_sha256: &str) -> StoreResult<Option<Device>> {
        let sql = format!(
            "SELECT {} FROM devices WHERE cert_sha256 = $1",
            Self::DEVICE_COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(cert_sha256)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::device_from).transpose()
    }

    /// Records what a device reported on the channel.
    ///
    /// # Errors
    /// Database failure.
    pub async fn device_seen(
        &self,
        device_id: &str,
        now_ms: i64,
        applied_version: Option<u64>,
        edge_version: Option<&str>,
    ) -> StoreResult<()> {
        let applied = applied_version.map(to_i64).transpose()?;
        let mut sql = String::from("UPDATE devices SET last_seen_ms = $1");
        let mut next = 2;
        if applied.is_some() {
            sql.push_str(&format!(", applied_version = ${next}"));
            next += 1;
        }
        if edge_version.is_some() {
            sql.push_str(&format!(", edge_version = ${next}"));
            next += 1;
        }
        sql.push_str(&format!(" WHERE id = ${next}"));
        let mut query = sqlx::query(&sql).bind(now_ms);
        if let Some(v) = applied {
            query = query.bind(v);
        }
        if let Some(v) = edge_version {
            query = query.bind(v.to_string());
        }
        query.bind(device_id).execute(&self.pool).await?;
        Ok(())
    }

    // ---- policy ---------------------------------------------------------------------------

    fn policy_from(row: &AnyRow) -> StoreResult<PolicyVersion> {
        Ok(PolicyVersion {
            tenant_id: row.try_get("tenant_id")?,
            version: to_u64(row.try_get("version")?)?,
            policy_json: row.try_get("policy_json")?,
            bundle_json: row.try_get("bundle_json")?,
            created_by: row.try_get("created_by")?,
            created_at_ms: row.try_get("created_at_ms")?,
        })
    }

    /// The newest policy version of a tenant.
    ///
    /// # Errors
    /// Database failure.
    pub async fn latest_policy(&self, tenant_id: &str) -> StoreResult<Option<PolicyVersion>> {
        let row = sqlx::query(
            "SELECT tenant_id, version, policy_json, bundle_json, created_by, created_at_ms FROM policy_versions WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::policy_from).transpose()
    }

    /// All versions of a tenant's policy, newest first (without the bundle text).
    ///
    /// # Errors
    /// Database failure.
    pub async fn policy_versions(&self, tenant_id: &str) -> StoreResult<Vec<PolicyVersion>> {
        let rows = sqlx::query(
            "SELECT tenant_id, version, policy_json, '' AS bundle_json, created_by, created_at_ms FROM policy_versions WHERE tenant_id = $1 ORDER BY version DESC",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::policy_from).collect()
    }

    /// Inserts a policy version; returns `false` if that version already exists (a concurrent
    /// writer won; the caller retries with the next number).
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_policy(&self, version: &PolicyVersion) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO policy_versions (tenant_id, version, policy_json, bundle_json, created_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, version) DO NOTHING",
        )
        .bind(&version.tenant_id)
        .bind(to_i64(version.version)?)
        .bind(&version.policy_json)
        .bind(&version.bundle_json)
        .bind(&version.created_by)
        .bind(version.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    // ---- audit ----------------------------------------------------------------------------

    /// Last verified `(seq, hash)` of a device's chain.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_head(&self, device_id: &str) -> StoreResult<Option<(u64, String)>> {
        let row = sqlx::query("SELECT last_seq, last_hash FROM audit_heads WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((to_u64(r.try_get("last_seq")?)?, r.try_get("last_hash")?)))
            .transpose()
    }

    /// Stores verified events (each with its hash) and moves the device's head, in one
    /// transaction; gives the events the next positions in their tenant's Merkle log and, when
    /// the batch was signed by the device, records the signature. The caller has verified that
    /// `events` continue the chain from the head it read; the head update is conditional on
    /// that head so that a concurrent writer cannot fork the stored chain.
    ///
    /// # Errors
    /// Database failure, or [`StoreError::Corrupt`] if the head moved underneath.
    pub async fn store_audit_batch(
        &self,
        device_id: &str,
        expected_head: Option<(u64, String)>,
        events: &[(AuditEvent, String)],
        batch: Option<&StoredBatch>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let (Some((first, _)), Some((last, last_hash))) = (events.first(), events.last()) else {
            return Ok(());
        };
        let tenant_id = first.tenant_id.clone();
        let last = last.seq;
        let mut tx = self.pool.begin().await?;
        let moved = match expected_head {
            None => {
                sqlx::query(
                    "INSERT INTO audit_heads (device_id, last_seq, last_hash) VALUES ($1, $2, $3) ON CONFLICT (device_id) DO NOTHING",
                )
                .bind(device_id)
                .bind(to_i64(last)?)
                .bind(last_hash)
                .execute(&mut *tx)
                .await?
            }
            Some((seq, hash)) => {
                sqlx::query(
                    "UPDATE audit_heads SET last_seq = $1, last_hash = $2 WHERE device_id = $3 AND last_seq = $4 AND last_hash = $5",
                )
                .bind(to_i64(last)?)
                .bind(last_hash)
                .bind(device_id)
                .bind(to_i64(seq)?)
                .bind(hash)
                .execute(&mut *tx)
                .await?
            }
        };
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(corrupt("audit head moved during ingest"));
        }
        // Reserve the next log positions of the tenant (the row lock serialises writers of
        // one tenant until commit).
        let n = to_i64(events.len() as u64)?;
        let size: i64 = sqlx::query(
            "INSERT INTO audit_logs (tenant_id, size) VALUES ($1, $2) ON CONFLICT (tenant_id) DO UPDATE SET size = audit_logs.size + excluded.size RETURNING size",
        )
        .bind(&tenant_id)
        .bind(n)
        .fetch_one(&mut *tx)
        .await?
        .try_get("size")?;
        let base = size - n;
        // Multi-row inserts: one statement per chunk instead of one per event.
        const COLUMNS: usize = 18;
        const CHUNK: usize = 64;
        let mut index = base;
        for chunk in events.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO audit_events (device_id, seq, tenant_id, ts_ms, kind, decision, reason, identity, resource, route, method, path, status, reference, hash, event_json, received_at_ms, log_index) VALUES ",
            );
            for row in 0..chunk.len() {
                if row > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for col in 0..COLUMNS {
                    if col > 0 {
                        sql.push(',');
                    }
                    // SQLite resolves every `$N` by a linear scan of the statement's parameter
                    // names (quadratic in a 1,000-parameter insert: it was half of the ingest
                    // CPU); anonymous `?` parameters bind by position in the same order.
                    match self.backend {
                        Backend::Sqlite => sql.push('?'),
                        Backend::Postgres => sql.push_str(&format!("${}", row * COLUMNS + col + 1)),
                    }
                }
                sql.push(')');
            }
            let mut query = sqlx::query(&sql);
            for (event, hash) in chunk {
                let http = event.http.as_ref();
                query = query
                    .bind(event.device_id.clone())
                    .bind(to_i64(event.seq)?)
                    .bind(event.tenant_id.clone())
                    .bind(event.ts_ms)
                    .bind(event.kind.as_str())
                    .bind(event.decision.as_str())
                    .bind(event.reason.as_str())
                    .bind(event.identity.clone())
                    .bind(http.map(|h| h.resource.clone()))
                    .bind(http.map(|h| h.route.clone()))
                    .bind(http.map(|h| h.method.clone()))
                    .bind(http.map(|h| h.path.clone()))
                    .bind(http.map(|h| i64::from(h.status)))
                    .bind(event.reference.clone())
                    .bind(hash.clone())
                    .bind(serde_json::to_string(event).map_err(corrupt)?)
                    .bind(now_ms)
                    .bind(index);
                index += 1;
            }
            query.execute(&mut *tx).await?;
        }
        if let Some(b) = batch {
            sqlx::query(
                "INSERT INTO audit_batches (device_id, last_seq, first_seq, tenant_id, last_hash, alg, signature, received_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (device_id, last_seq) DO NOTHING",
            )
            .bind(device_id)
            .bind(to_i64(b.last_seq)?)
            .bind(to_i64(b.first_seq)?)
            .bind(&tenant_id)
            .bind(&b.last_hash)
            .bind(&b.alg)
            .bind(&b.signature)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every leaf of a tenant's Merkle log: `(log index, event hash)` in log order.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_log_leaves(&self, tenant_id: &str) -> StoreResult<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT log_index, hash FROM audit_events WHERE tenant_id = $1 AND log_index IS NOT NULL ORDER BY log_index",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((to_u64(r.try_get("log_index")?)?, r.try_get("hash")?)))
            .collect()
    }

    /// Tenants that have an audit log.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_log_tenants(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT tenant_id FROM audit_logs ORDER BY tenant_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("tenant_id")?)).collect()
    }

    fn checkpoint_from(row: &AnyRow) -> StoreResult<SignedTreeHead> {
        Ok(SignedTreeHead {
            tenant_id: row.try_get("tenant_id")?,
            tree_size: to_u64(row.try_get("tree_size")?)?,
            root_hash: row.try_get("root_hash")?,
            timestamp_ms: row.try_get("timestamp_ms")?,
            signature: row.try_get("signature")?,
        })
    }

    /// The newest (largest) signed tree head of a tenant.
    ///
    /// # Errors
    /// Database failure.
    pub async fn latest_checkpoint(&self, tenant_id: &str) -> StoreResult<Option<SignedTreeHead>> {
        let row = sqlx::query(
            "SELECT tenant_id, tree_size, root_hash, timestamp_ms, signature FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::checkpoint_from).transpose()
    }

    /// Stores a signed tree head (a concurrent replica may have stored the same size first).
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_checkpoint(&self, head: &SignedTreeHead) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (tenant_id, tree_size, root_hash, timestamp_ms, signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, tree_size) DO NOTHING",
        )
        .bind(&head.tenant_id)
        .bind(to_i64(head.tree_size)?)
        .bind(&head.root_hash)
        .bind(head.timestamp_ms)
        .bind(&head.signature)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A device's certificate (PEM), as issued at enrolment.
    ///
    /// # Errors
    /// Database failure.
    pub async fn device_cert_pem(&self, device_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT cert_pem FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>("cert_pem"))
            .transpose()?)
    }

    /// Per device of a tenant: the first and last seq of its events matching the filter.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_export_ranges(
        &self,
        tenant_id: &str,
        device_id: Option<&str>,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> StoreResult<Vec<(String, u64, u64)>> {
        let mut sql = String::from(
            "SELECT device_id, MIN(seq) AS lo, MAX(seq) AS hi FROM audit_events WHERE tenant_id = $1",
        );
        let mut n = 1;
        if device_id.is_some() {
            n += 1;
            sql.push_str(&format!(" AND device_id = ${n}"));
        }
        if from_ms.is_some() {
            n += 1;
            sql.push_str(&format!(" AND ts_ms >= ${n}"));
        }
        if to_ms.is_some() {
            n += 1;
            sql.push_str(&format!(" AND ts_ms < ${n}"));
        }
        sql.push_str(" GROUP BY device_id ORDER BY device_id");
        let mut query = sqlx::query(&sql).bind(tenant_id);
        if let Some(d) = device_id {
            query = query.bind(d);
        }
        if let Some(v) = from_ms {
            query = query.bind(v);
        }
        if let Some(v) = to_ms {
            query = query.bind(v);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("device_id")?,
                    to_u64(r.try_get("lo")?)?,
                    to_u64(r.try_get("hi")?)?,
                ))
            })
            .collect()
    }

    /// The device's signed batches with `from <= last_seq <= to`, and the smallest `last_seq`
    /// at or beyond `to` (the batch whose signature covers event `to`).
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_batches(
        &self,
        device_id: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<StoredBatch>> {
        let rows = sqlx::query(
            "SELECT first_seq, last_seq, last_hash, alg, signature FROM audit_batches WHERE device_id = $1 AND last_seq >= $2 AND last_seq <= $3 ORDER BY last_seq",
        )
        .bind(device_id)
        .bind(to_i64(from)?)
        .bind(to_i64(to)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredBatch {
                    first_seq: to_u64(r.try_get("first_seq")?)?,
                    last_seq: to_u64(r.try_get("last_seq")?)?,
                    last_hash: r.try_get("last_hash")?,
                    alg: r.try_get("alg")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect()
    }

    /// The `last_seq` of the first signed batch ending at or after `seq`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_covering_batch(
        &self,
        device_id: &str,
        seq: u64,
    ) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "SELECT MIN(last_seq) AS s FROM audit_batches WHERE device_id = $1 AND last_seq >= $2",
        )
        .bind(device_id)
        .bind(to_i64(seq)?)
        .fetch_one(&self.pool)
        .await?;
        let s: Option<i64> = row.try_get("s")?;
        s.map(to_u64).transpose()
    }

    /// A device's stored events with `from <= seq <= to` as exported: `(seq, hash, log index,
    /// event JSON)`, by seq.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_export_events(
        &self,
        device_id: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, String, Option<u64>, String)>> {
        let rows = sqlx::query(
            "SELECT seq, hash, log_index, event_json FROM audit_events WHERE device_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(device_id)
        .bind(to_i64(from)?)
        .bind(to_i64(to)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let index: Option<i64> = r.try_get("log_index")?;
                Ok((
                    to_u64(r.try_get("seq")?)?,
                    r.try_get("hash")?,
                    index.map(to_u64).transpose()?,
                    r.try_get("event_json")?,
                ))
            })
            .collect()
    }

    /// Stored hashes of a device's events with `from <= seq <= to`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_hashes(
        &self,
        device_id: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<std::collections::BTreeMap<u64, String>> {
        let rows = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE device_id = $1 AND seq >= $2 AND seq <= $3",
        )
        .bind(device_id)
        .bind(to_i64(from)?)
        .bind(to_i64(to)?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((to_u64(r.try_get("seq")?)?, r.try_get("hash")?)))
            .collect()
    }

    /// Events matching a filter, newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        // Events deleted by retention (empty content) are not listed.
        let mut sql = String::from("SELECT event_json FROM audit_events WHERE event_json <> ''");
        let mut text_binds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut add_text = |sql: &mut String, column: &str, value: &Option<String>| {
            if let Some(v) = value {
                n += 1;
                sql.push_str(&format!(" AND {column} = ${n}"));
                text_binds.push(v.clone());
            }
        };
        add_text(&mut sql, "tenant_id", &filter.tenant_id);
        add_text(&mut sql, "device_id", &filter.device_id);
        add_text(&mut sql, "decision", &filter.decision);
        add_text(&mut sql, "identity", &filter.identity);
        add_text(&mut sql, "resource", &filter.resource);
        add_text(&mut sql, "reason", &filter.reason);
        add_text(&mut sql, "reference", &filter.reference);
        if let Some(ids) = &filter.tenant_ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut list = Vec::with_capacity(ids.len());
            for id in ids {
                n += 1;
                list.push(format!("${n}"));
                text_binds.push(id.clone());
            }
            sql.push_str(&format!(" AND tenant_id IN ({})", list.join(", ")));
        }
        let mut int_binds = Vec::new();
        if let Some(from) = filter.from_ms {
            n += 1;
            sql.push_str(&format!(" AND ts_ms >= ${n}"));
            int_binds.push(from);
        }
        if let Some(to) = filter.to_ms {
            n += 1;
            sql.push_str(&format!(" AND ts_ms < ${n}"));
            int_binds.push(to);
        }
        n += 1;
        sql.push_str(&format!(
            " ORDER BY ts_ms DESC, device_id, seq DESC LIMIT ${n}"
        ));
        let mut query = sqlx::query(&sql);
        for v in text_binds {
            query = query.bind(v);
        }
        for v in int_binds {
            query = query.bind(v);
        }
        let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event_json")?;
                serde_json::from_str(&text).map_err(corrupt)
            })
            .collect()
    }

    /// A device's stored events with their stored hashes, in chain order, from `after_seq`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn device_chain(
        &self,
        device_id: &str,
        after_seq: u64,
        limit: i64,
    ) -> StoreResult<Vec<(AuditEvent, String)>> {
        let rows = sqlx::query(
            "SELECT event_json, hash FROM audit_events WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(device_id)
        .bind(to_i64(after_seq)?)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event_json")?;
                let event = serde_json::from_str(&text).map_err(corrupt)?;
                Ok((event, r.try_get("hash")?))
            })
            .collect()
    }

    // ---- alerts ---------------------------------------------------------------------------

    /// Records an alert.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_alert(&self, alert: &Alert) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO alerts (id, tenant_id, device_id, kind, detail, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&alert.id)
        .bind(alert.tenant_id.clone())
        .bind(alert.device_id.clone())
        .bind(&alert.kind)
        .bind(&alert.detail)
        .bind(alert.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest alerts first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn alerts(&self, limit: i64) -> StoreResult<Vec<Alert>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, device_id, kind, detail, created_at_ms FROM alerts ORDER BY created_at_ms DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Alert {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    device_id: r.try_get("device_id")?,
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}

// ---- MSP tenancy, admins with roles, scoped tokens, admin actions (issue 6) -----------------

/// The id of the MSP that migration 0003 creates and that owns pre-existing tenants and admins.
pub const DEFAULT_MSP: &str = "msp_default";

/// An admin as stored, with role, place in the hierarchy and MFA state.
#[derive(Debug, Clone)]
pub struct AdminRecord {
    /// Admin id.
    pub id: String,
    /// User name.
    pub username: String,
    /// Argon2 hash.
    pub password_hash: String,
    /// Role name (see [`crate::rbac::Role`]).
    pub role: String,
    /// Owning MSP.
    pub msp_id: String,
    /// Customer tenant (customer roles only).
    pub tenant_id: Option<String>,
    /// Who created it (admin id), if not bootstrapped.
    pub created_by: Option<String>,
    /// When.
    pub created_at_ms: i64,
    /// When it was disabled.
    pub disabled_at_ms: Option<i64>,
    /// TOTP seed (base32), once enrolment started.
    pub totp_secret: Option<String>,
    /// When MFA was confirmed; MFA is enforced from then on.
    pub totp_enabled_at_ms: Option<i64>,
    /// Last accepted TOTP step.
    pub totp_last_step: Option<i64>,
}

/// A credential with everything needed to build the principal.
#[derive(Debug, Clone)]
pub struct CredentialRecord {
    /// The admin.
    pub admin: AdminRecord,
    /// `session` or `api`.
    pub kind: String,
    /// Space-separated scopes of an API token (`None`: the role).
    pub scopes: Option<String>,
    /// Expiry (Unix ms).
    pub expires_at_ms: i64,
}

/// One recorded admin action.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AdminAction {
    /// Position in the global trail (1, 2, …).
    pub seq: i64,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// Admin id of the actor.
    pub actor_id: String,
    /// User name of the actor.
    pub actor: String,
    /// Role of the actor.
    pub actor_role: String,
    /// MSP the action belongs to.
    pub msp_id: String,
    /// Customer tenant, when the action concerns one.
    pub tenant_id: Option<String>,
    /// What (`tenant.create`, `policy.update`, `admin.disable`, …).
    pub action: String,
    /// The object acted on (id).
    pub target: String,
    /// Before/after: `{"before": …, "after": …, "changes": [{"path", "before", "after"}]}`.
    #[schema(value_type = Object)]
    pub diff: serde_json::Value,
    /// Hash of the previous record (hex; 64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this record's canonical JSON (hex).
    pub hash: String,
}

const ADMIN_COLUMNS: &str = "id, username, password_hash, role, msp_id, tenant_id, created_by, created_at_ms, disabled_at_ms, totp_secret, totp_enabled_at_ms, totp_last_step";

impl Store {
    fn admin_from(&self, row: &AnyRow) -> StoreResult<AdminRecord> {
        let id: String = row.try_get("id")?;
        let totp_secret = row
            .try_get::<Option<String>, _>("totp_secret")?
            .map(|t| self.open_text(&crate::secrets::totp_purpose(&id), t))
            .transpose()?;
        Ok(AdminRecord {
            id,
            username: row.try_get("username")?,
            password_hash: row.try_get("password_hash")?,
            role: row
                .try_get::<Option<String>, _>("role")?
                .unwrap_or_else(|| "msp_owner".into()),
            msp_id: row
                .try_get::<Option<String>, _>("msp_id")?
                .unwrap_or_else(|| DEFAULT_MSP.into()),
            tenant_id: row.try_get("tenant_id")?,
            created_by: row.try_get("created_by")?,
            created_at_ms: row.try_get("created_at_ms")?,
            disabled_at_ms: row.try_get("disabled_at_ms")?,
            totp_secret,
            totp_enabled_at_ms: row.try_get("totp_enabled_at_ms")?,
            totp_last_step: row.try_get("totp_last_step")?,
        })
    }

    /// Creates an admin with a role in the hierarchy.
    ///
    /// # Errors
    /// Database failure, including a duplicate user name.
    pub async fn insert_admin(&self, admin: &AdminRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admins (id, username, password_hash, created_at_ms, role, msp_id, tenant_id, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&admin.id)
        .bind(&admin.username)
        .bind(&admin.password_hash)
        .bind(admin.created_at_ms)
        .bind(&admin.role)
        .bind(&admin.msp_id)
        .bind(admin.tenant_id.clone())
        .bind(admin.created_by.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One admin by id.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin(&self, id: &str) -> StoreResult<Option<AdminRecord>> {
        let row = sqlx::query(&format!("SELECT {ADMIN_COLUMNS} FROM admins WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| self.admin_from(r)).transpose()
    }

    /// One admin by user name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin_record_by_username(
        &self,
        username: &str,
    ) -> StoreResult<Option<AdminRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_COLUMNS} FROM admins WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|r| self.admin_from(r)).transpose()
    }

    /// Admins of an MSP (all of them, `tenant_id` `None`) or of one customer tenant.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admins_in(
        &self,
        msp_id: &str,
        tenant_id: Option<&str>,
    ) -> StoreResult<Vec<AdminRecord>> {
        let rows = match tenant_id {
            None => {
                sqlx::query(&format!(
                    "SELECT {ADMIN_COLUMNS} FROM admins WHERE COALESCE(msp_id, '{DEFAULT_MSP}') = $1 ORDER BY username"
                ))
                .bind(msp_id)
                .fetch_all(&self.pool)
                .await?
            }
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {ADMIN_COLUMNS} FROM admins WHERE COALESCE(msp_id, '{DEFAULT_MSP}') = $1 AND tenant_id = $2 ORDER BY username"
                ))
                .bind(msp_id)
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(|r| self.admin_from(r)).collect()
    }

    /// Disables an admin and deletes all of its sessions and tokens.
    ///
    /// # Errors
    /// Database failure.
    pub async fn disable_admin(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE admins SET disabled_at_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM credentials WHERE admin_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets (enrolment started: `enabled_at_ms` `None`), confirms or clears (`secret` `None`)
    /// an admin's TOTP seed.
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_totp(
        &self,
        id: &str,
        secret: Option<&str>,
        enabled_at_ms: Option<i64>,
        last_step: Option<i64>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE admins SET totp_secret = $1, totp_enabled_at_ms = $2, totp_last_step = $3 WHERE id = $4",
        )
        .bind(secret.map(|s| self.seal_text(&crate::secrets::totp_purpose(id), s)))
        .bind(enabled_at_ms)
        .bind(last_step)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an admin's used TOTP step if it is later than the last one; false when it is not
    /// (replay).
    ///
    /// # Errors
    /// Database failure.
    pub async fn use_totp_step(&self, id: &str, step: i64) -> StoreResult<bool> {
        self.claim_totp_step("admins", id, step).await
    }

    /// [`Store::use_totp_step`] for a remote (ZTNA) user.
    ///
    /// # Errors
    /// Database failure.
    pub async fn use_ztna_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
        self.claim_totp_step("ztna_users", user_id, step).await
    }

    /// The replay check of both: one conditional update of `table.totp_last_step`.
    async fn claim_totp_step(&self, table: &'static str, id: &str, step: i64) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "UPDATE {table} SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
        ))
        .bind(step)
        .bind(id)
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a credential with token scopes.
    ///
    /// # Errors
    /// Database failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_scoped_credential(
        &self,
        token_hash: &str,
        admin_id: &str,
        kind: &str,
        name: &str,
        scopes: Option<&str>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credentials (token_hash, admin_id, kind, name, created_at_ms, expires_at_ms, scopes) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash)
        .bind(admin_id)
        .bind(kind)
        .bind(name)
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(scopes.map(str::to_string))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A credential (expired or not) with its admin.
    ///
    /// # Errors
    /// Database failure.
    pub async fn credential_record(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<CredentialRecord>> {
        let Some(row) = sqlx::query(
            "SELECT admin_id, kind, scopes, expires_at_ms FROM credentials WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let admin_id: String = row.try_get("admin_id")?;
        let Some(admin) = self.admin(&admin_id).await? else {
            return Ok(None);
        };
        Ok(Some(CredentialRecord {
            admin,
            kind: row.try_get("kind")?,
            scopes: row.try_get("scopes")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
        }))
    }

    /// A tenant with the MSP that owns it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenant_with_msp(&self, id: &str) -> StoreResult<Option<(Tenant, String)>> {
        let row = sqlx::query(&format!(
            "SELECT id, name, created_at_ms, COALESCE(msp_id, '{DEFAULT_MSP}') AS msp FROM tenants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((Self::tenant_from(&r)?, r.try_get("msp")?)))
            .transpose()
    }

    /// The customer tenants of an MSP, by name.
    ///
    /// # Errors
    /// Database failure.
    pub async fn tenants_of_msp(&self, msp_id: &str) -> StoreResult<Vec<Tenant>> {
        let rows = sqlx::query(&format!(
            "SELECT id, name, created_at_ms FROM tenants WHERE COALESCE(msp_id, '{DEFAULT_MSP}') = $1 ORDER BY name"
        ))
        .bind(msp_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::tenant_from).collect()
    }

    /// Puts a tenant under an MSP.
    ///
    /// # Errors
    /// Database failure.
    pub async fn set_tenant_msp(&self, tenant_id: &str, msp_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET msp_id = $1 WHERE id = $2")
            .bind(msp_id)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The tenant of a device.
    ///
    /// # Errors
    /// Database failure.
    pub async fn device_tenant(&self, device_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT tenant_id FROM devices WHERE id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("tenant_id")?)).transpose()
    }

    /// Appends an admin action to the hash-chained trail (retrying when another writer took
    /// the same sequence number).
    ///
    /// # Errors
    /// Database failure.
    pub async fn append_admin_action(&self, action: &mut AdminAction) -> StoreResult<()> {
        let mut last_err = None;
        for _ in 0..20 {
            let mut tx = self.pool.begin().await?;
            let last = sqlx::query("SELECT seq, hash FROM admin_actions ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            let (seq, prev) = match last {
                Some(r) => (r.try_get::<i64, _>("seq")? + 1, r.try_get("hash")?),
                None => (1, "0".repeat(64)),
            };
            action.seq = seq;
            action.prev_hash = prev;
            action.hash = admin_action_hash(action);
            let inserted = sqlx::query(
                "INSERT INTO admin_actions (seq, ts_ms, actor_id, actor, actor_role, msp_id, tenant_id, action, target, diff_json, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(action.seq)
            .bind(action.ts_ms)
            .bind(&action.actor_id)
            .bind(&action.actor)
            .bind(&action.actor_role)
            .bind(&action.msp_id)
            .bind(action.tenant_id.clone())
            .bind(&action.action)
            .bind(&action.target)
            .bind(action.diff.to_string())
            .bind(&action.prev_hash)
            .bind(&action.hash)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(());
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.map_or_else(|| corrupt("admin action not stored"), StoreError::Db))
    }

    /// Admin actions of an MSP (`tenant_id` `None`: all of them) or of one tenant, newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn admin_actions(
        &self,
        msp_id: &str,
        tenant_id: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<AdminAction>> {
        const COLS: &str = "seq, ts_ms, actor_id, actor, actor_role, msp_id, tenant_id, action, target, diff_json, prev_hash, hash";
        let rows = match tenant_id {
            None => {
                sqlx::query(&format!(
                    "SELECT {COLS} FROM admin_actions WHERE msp_id = $1 ORDER BY seq DESC LIMIT $2"
                ))
                .bind(msp_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(t) => {
                sqlx::query(&format!(
                    "SELECT {COLS} FROM admin_actions WHERE msp_id = $1 AND tenant_id = $2 ORDER BY seq DESC LIMIT $3"
                ))
                .bind(msp_id)
                .bind(t)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let diff: String = r.try_get("diff_json")?;
                Ok(AdminAction {
                    seq: r.try_get("seq")?,
                    ts_ms: r.try_get("ts_ms")?,
                    actor_id: r.try_get("actor_id")?,
                    actor: r.try_get("actor")?,
                    actor_role: r.try_get("actor_role")?,
                    msp_id: r.try_get("msp_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    diff: serde_json::from_str(&diff).map_err(corrupt)?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    /// Re-checks the whole admin-action chain; the first broken sequence number, if any.
    ///
    /// # Errors
    /// Database failure.
    pub async fn verify_admin_actions(&self) -> StoreResult<Result<u64, i64>> {
        let mut all = self.admin_actions_all().await?;
        all.sort_by_key(|a| a.seq);
        let mut prev = "0".repeat(64);
        for (i, a) in all.iter().enumerate() {
            if a.seq != i as i64 + 1 || a.prev_hash != prev || admin_action_hash(a) != a.hash {
                return Ok(Err(a.seq));
            }
            prev = a.hash.clone();
        }
        Ok(Ok(all.len() as u64))
    }

    async fn admin_actions_all(&self) -> StoreResult<Vec<AdminAction>> {
        let msps = sqlx::query("SELECT DISTINCT msp_id FROM admin_actions")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in msps {
            let m: String = r.try_get("msp_id")?;
            out.extend(self.admin_actions(&m, None, i64::MAX).await?);
        }
        Ok(out)
    }
}

impl Store {
    /// One version of a tenant's policy.
    ///
    /// # Errors
    /// Database failure.
    pub async fn policy_version(
        &self,
        tenant_id: &str,
        version: u64,
    ) -> StoreResult<Option<PolicyVersion>> {
        let row = sqlx::query(
            "SELECT tenant_id, version, policy_json, bundle_json, created_by, created_at_ms FROM policy_versions WHERE tenant_id = $1 AND version = $2",
        )
        .bind(tenant_id)
        .bind(to_i64(version)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::policy_from).transpose()
    }
}

impl Store {
    /// Newest alerts first, of the given tenants (and those about no tenant when
    /// `include_unowned`).
    ///
    /// # Errors
    /// Database failure.
    pub async fn alerts_in(
        &self,
        tenant_ids: &[String],
        include_unowned: bool,
        limit: i64,
    ) -> StoreResult<Vec<Alert>> {
        let mut conditions = Vec::new();
        if !tenant_ids.is_empty() {
            let list: Vec<String> = (1..=tenant_ids.len()).map(|i| format!("${i}")).collect();
            conditions.push(format!("tenant_id IN ({})", list.join(", ")));
        }
        if include_unowned {
            conditions.push("tenant_id IS NULL".to_string());
        }
        if conditions.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id, tenant_id, device_id, kind, detail, created_at_ms FROM alerts WHERE {} ORDER BY created_at_ms DESC, id LIMIT ${}",
            conditions.join(" OR "),
            tenant_ids.len() + 1
        );
        let mut query = sqlx::query(&sql);
        for t in tenant_ids {
            query = query.bind(t.clone());
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Alert {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    device_id: r.try_get("device_id")?,
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// When sign-in with MFA is refused until (Unix ms), if locked.
    ///
    /// # Errors
    /// Database failure.
    pub async fn mfa_locked_until(&self, admin_id: &str) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT mfa_locked_until_ms FROM admins WHERE id = $1")
            .bind(admin_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("mfa_locked_until_ms")?,
            None => None,
        })
    }

    /// Counts a wrong TOTP code; at `max` consecutive ones, locks MFA sign-in until
    /// `lock_until_ms` and starts counting again. Returns true when this failure locked it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn mfa_failure(
        &self,
        admin_id: &str,
        max: i64,
        lock_until_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE admins SET mfa_failures = COALESCE(mfa_failures, 0) + 1 WHERE id = $1")
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT mfa_failures FROM admins WHERE id = $1")
            .bind(admin_id)
            .fetch_one(&mut *tx)
            .await?;
        let failures: Option<i64> = row.try_get("mfa_failures")?;
        let locked = failures.unwrap_or(0) >= max;
        if locked {
            sqlx::query(
                "UPDATE admins SET mfa_failures = 0, mfa_locked_until_ms = $1 WHERE id = $2",
            )
            .bind(lock_until_ms)
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(locked)
    }

    /// Clears the count of wrong TOTP codes and any lock (after a good code or an MFA reset).
    ///
    /// # Errors
    /// Database failure.
    pub async fn mfa_clear_failures(&self, admin_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE admins SET mfa_failures = 0, mfa_locked_until_ms = NULL WHERE id = $1")
            .bind(admin_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The chain hash of an admin action: SHA-256 over the previous hash, a newline and the
/// canonical JSON of the record's fields (without `hash`).
pub fn admin_action_hash(a: &AdminAction) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::json!({
        "seq": a.seq, "ts_ms": a.ts_ms, "actor_id": a.actor_id, "actor": a.actor,
        "actor_role": a.actor_role, "msp_id": a.msp_id, "tenant_id": a.tenant_id,
        "action": a.action, "target": a.target, "diff": a.diff,
    });
    let text = sase_model::canonical::to_canonical_json(&body)
        .unwrap_or_else(|_| body.to_string().into_bytes());
    let mut h = Sha256::new();
    h.update(a.prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&text);
    hex::encode(h.finalize())
}
