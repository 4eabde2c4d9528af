//! The device's identity on disk and enrolment.
//!
//! Layout of the edge data dir (0700; key files 0600):
//!
//! ```text
//! device.json      ids, control-plane URLs, pinned policy signing key
//! device.key       the device's private key (generated here, never leaves the box)
//! device.pem       device certificate issued by the tenant CA
//! tenant-ca.pem    the tenant CA (for upstreams that require the device certificate)
//! control-ca.pem   CA that the control plane's TLS certificate chains to
//! bundle.json      last verified policy bundle (enforced while the control plane is away)
//! spool/           audit events not yet acknowledged by the control plane
//! tls/             the published listener's certificate (generated if none is given)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use sase_model::fleet::{EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};

/// What `device.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Device id assigned at enrolment.
    pub device_id: String,
    /// Tenant of the device.
    pub tenant_id: String,
    /// Site of the device.
    pub site_id: String,
    /// Control-plane base URL.
    pub control_plane_url: String,
    /// WebSocket URL of the edge channel.
    pub channel_url: String,
    /// Pinned policy signing key (Ed25519, base64).
    pub policy_signing_key: String,
}

/// Paths inside the data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Wraps a directory path.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `device.json`.
    pub fn identity(&self) -> PathBuf {
        self.root.join("device.json")
    }
    /// `device.key`.
    pub fn key(&self) -> PathBuf {
        self.root.join("device.key")
    }
    /// `device.pem`.
    pub fn cert(&self) -> PathBuf {
        self.root.join("device.pem")
    }
    /// `control-ca.pem`.
    pub fn control_ca(&self) -> PathBuf {
        self.root.join("control-ca.pem")
    }
    /// `bundle.json`.
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle.json")
    }
    /// `spool/`.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }
    /// `tls/`.
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename) with `mode`.
///
/// # Errors
/// I/O failures.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Creates the data dir with mode 0700 (or tightens it).
///
/// # Errors
/// I/O failures.
pub fn prepare_data_dir(dir: &DataDir) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("creating {}", dir.root().display()))?;
    std::fs::set_permissions(dir.root(), std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Loads the identity written by enrolment.
///
/// # Errors
/// When the device has not enrolled or the file is damaged.
pub fn load_identity(dir: &DataDir) -> anyhow::Result<DeviceIdentity> {
    let text = std::fs::read(dir.identity()).with_context(|| {
        format!(
            "{} not found: enrol first with `sase-edge enroll --control-plane URL --claim CODE`",
            dir.identity().display()
        )
    })?;
    serde_json::from_slice(&text).context("device.json is damaged")
}

/// A rustls client configuration presenting the device certificate and trusting only the
/// control plane's CA.
///
/// # Errors
/// When the files are missing or do not parse.
pub fn channel_tls_config(dir: &DataDir) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = root_store(&dir.control_ca())?;
    let certs = rustls_pemfile::certs(&mut std::fs::read(dir.cert())?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("device.pem")?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(dir.key())?.as_slice())
        .context("device.key")?
        .context("device.key holds no key")?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn root_store(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(roots)
}

/// Signs audit batches with the device's TLS key (the key the tenant CA certified at
/// enrolment; ECDSA P-256 for every device enrolled by this software).
pub struct BatchSigner {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for BatchSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchSigner(ecdsa-p256-sha256)")
    }
}

impl BatchSigner {
    /// Loads `device.key`.
    ///
    /// # Errors
    /// When the key is missing or is not an ECDSA P-256 PKCS#8 key.
    pub fn load(dir: &DataDir) -> anyhow::Result<BatchSigner> {
        let pem = std::fs::read(dir.key()).with_context(|| dir.key().display().to_string())?;
        let der = match rustls_pemfile::private_key(&mut pem.as_slice())
            .context("device.key")?
            .context("device.key holds no key")?
        {
            rustls::pki_types::PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            _ => bail!("device.key is not a PKCS#8 key; audit batches cannot be signed"),
        };
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &der,
            &rng,
        )
        .map_err(|e| anyhow::anyhow!("device.key is not an ECDSA P-256 key: {e}"))?;
        Ok(BatchSigner { key, rng })
    }

    /// Signs a batch of this device's chain (see `sase_model::audit::batch_signing_bytes`).
    ///
    /// # Errors
    /// When the signing primitive fails (it does not for a valid key).
    pub fn sign(
        &self,
        identity: &DeviceIdentity,
        events: &[sase_model::AuditEvent],
    ) -> anyhow::Result<Option<sase_model::audit::BatchSignature>> {
        use base64::Engine as _;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(None);
        };
        let message = sase_model::audit::batch_signing_bytes(
            &identity.tenant_id,
            &identity.device_id,
            first.seq,
            last.seq,
            &last.hash(),
        );
        let sig = self
            .key
            .sign(&self.rng, &message)
            .map_err(|_| anyhow::anyhow!("signing the audit batch failed"))?;
        Ok(Some(sase_model::audit::BatchSignature {
            alg: sase_model::audit::ALG_ECDSA_P256_SHA256.to_string(),
            sig: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        }))
    }
}

/// Enrols this device: generates its key pair, sends a CSR with the claim code, and stores
/// what comes back. Refuses to overwrite an existing enrolment.
///
/// # Errors
/// Network, TLS or refusal by the control plane (with its message).
pub async fn enroll(
    dir: &DataDir,
    control_plane_url: &str,
    claim_code: &str,
    ca_cert: &Path,
    name: &str,
) -> anyhow::Result<DeviceIdentity> {
    prepare_data_dir(dir)?;
    if dir.identity().exists() {
        bail!(
            "{} already holds an enrolment ({}); use another --data-dir or remove it to re-enrol",
            dir.root().display(),
            dir.identity().display()
        );
    }
    let base = control_plane_url.trim_end_matches('/');
    if !base.starts_with("https://") {
        bail!("--control-plane must be an https:// URL");
    }
    let ca_pem = std::fs::read(ca_cert)
        .with_context(|| format!("reading the control-plane CA {}", ca_cert.display()))?;
    let key = KeyPair::generate().context("generating the device key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let request = EnrollRequest {
        claim_code: claim_code.trim().to_string(),
        csr_pem,
        name: name.to_string(),
        edge_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let response = client
        .post(format!("{base}/api/enroll"))
        .json(&request)
        .send()
        .await
        .with_context(|| format!("contacting the control plane at {base}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(body);
        bail!("enrolment refused ({status}): {message}");
    }
    let enrolled: EnrollResponse = response.json().await.context("enrolment answer")?;
    sase_model::bundle::verifying_key_from_b64(&enrolled.policy_signing_key)
        .context("the control plane sent an invalid policy signing key")?;
    let identity = DeviceIdentity {
        device_id: enrolled.device_id,
        tenant_id: enrolled.tenant_id,
        site_id: enrolled.site_id,
        control_plane_url: base.to_string(),
        channel_url: enrolled.channel_url,
        policy_signing_key: enrolled.policy_signing_key,
    };
    write_atomic(&dir.key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.cert(), enrolled.certificate_pem.as_bytes(), 0o644)?;
    // The CA of the device certificate: what an upstream that requires the edge's client
    // certificate (`upstream_tls.client_certificate: device`) trusts.
    write_atomic(
        &dir.root().join("tenant-ca.pem"),
        enrolled.tenant_ca_pem.as_bytes(),
        0o644,
    )?;
    write_atomic(&dir.control_ca(), &ca_pem, 0o644)?;
    write_atomic(
        &dir.identity(),
        serde_json::to_string_pretty(&identity)?.as_bytes(),
        0o600,
    )?;
    Ok(identity)
}
