//! TLS settings of the published HTTPS listener (and the QUIC listener built from the same
//! configuration) and certificate reload without restart.
//!
//! * Versions: TLS 1.3 and 1.2 only. Suites: the AEAD ones with forward secrecy — TLS 1.3
//!   AES-128/256-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE-ECDSA/RSA with AES-GCM or
//!   ChaCha20-Poly1305. No CBC, no RSA key exchange, no SHA-1 MACs, no TLS 1.0/1.1 (rustls has
//!   none of these; the list is spelled out so that a provider upgrade cannot widen it).
//! * Reload: the certificate and key are served through [`ReloadingCert`], a
//!   `ResolvesServerCert` holding the current pair. A watcher task looks at both files' size and
//!   modification time every [`WATCH_EVERY`]; a change is loaded and, when the chain parses and
//!   the key matches it, used for every new handshake (connections already open keep theirs).
//!   A file that does not load (half-written, wrong key, garbage) leaves the old pair in force
//!   and is logged at ERROR once per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::ring as ring_provider;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the watcher looks at the certificate files.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The crypto provider of the published listeners: ring with the modern suites only.
pub fn provider() -> CryptoProvider {
    use ring_provider::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..ring_provider::default_provider()
    }
}

/// Reads a certificate chain and its private key (PEM) into a checked pair.
///
/// # Errors
/// Unreadable files, no certificate, no key, or a key that is not the certificate's.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = rustls_pemfile::certs(&mut std::fs::read(cert_path)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert_path.display());
    }
    let key = rustls_pemfile::private_key(&mut std::fs::read(key_path)?.as_slice())?
        .with_context(|| format!("{} holds no key", key_path.display()))?;
    let pair = CertifiedKey::from_der(chain, key, &provider())
        .with_context(|| format!("{} / {}", cert_path.display(), key_path.display()))?;
    Ok(pair)
}

type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.len(), m.modified().ok()?)))
}

/// The listener's certificate, replaced when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<(Stamp, Stamp)>,
}

impl ReloadingCert {
    /// Loads the pair now.
    ///
    /// # Errors
    /// As [`load_pair`].
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<ReloadingCert> {
        let seen = (stamp(cert_path), stamp(key_path));
        let pair = load_pair(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            seen: RwLock::new(seen),
        })
    }

    /// Looks at the files once: reloads when they changed since the last look. Returns
    /// `Some(Ok(()))` after a reload, `Some(Err(_))` when changed files did not load (the old
    /// pair stays), `None` when nothing changed.
    pub fn poll(&self) -> Option<anyhow::Result<()>> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        {
            let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(load_pair(&self.cert_path, &self.key_path).map(|pair| {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        }))
    }

    /// Watches the files for as long as the process runs (see the module docs).
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.poll() {
                None => {}
                Some(Ok(())) => tracing::info!(
                    cert = %self.cert_path.display(),
                    "listener certificate reloaded; new handshakes use it"
                ),
                Some(Err(err)) => tracing::error!(
                    cert = %self.cert_path.display(),
                    err = %format!("{err:#}"),
                    "listener certificate changed but does not load; keeping the previous one"
                ),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The published listener's TLS configuration over reloading certificate files; starts the
/// watcher when called inside a Tokio runtime.
///
/// # Errors
/// Files that do not load.
pub fn server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert = Arc::new(ReloadingCert::load(cert_path, key_path)?);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(cert.clone().watch());
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        // Asks for a client certificate while a resource takes one (mTLS); see `crate::mtls`.
        .with_client_cert_verifier(crate::mtls::DeferredClientCertVerifier::new())
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> Result<(String, String), rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    #[test]
    fn changed_files_are_reloaded_and_broken_ones_keep_the_old_pair(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = crate::scratch::Scratch::new("tls-reload", "swap");
        std::fs::create_dir_all(&dir)?;
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("c.key"));
        let (c1, k1) = pair("one.example")?;
        std::fs::write(&cert_path, &c1)?;
        std::fs::write(&key_path, &k1)?;
        let r = ReloadingCert::load(&cert_path, &key_path)?;
        let first = r.current.read().map_err(|_| "poisoned")?.cert[0].clone();
        assert!(r.poll().is_none());
        // Garbage: refused, old pair kept.
        std::fs::write(&cert_path, b"-----BEGIN CERTIFICATE-----\nnope\n")?;
        assert!(matches!(r.poll(), Some(Err(_))));
        assert_eq!(r.current.read().map_err(|_| "poisoned")?.cert[0], first);
        // A certificate whose key is not the one on disk: refused too.
        let (c2, k2) = pair("two.example")?;
        std::fs::write(&cert_path, &c2)?;
        assert!(matches!(r.poll(), Some(Err(_))));
        // The matching key arrives: reloaded.
        std::fs::write(&key_path, &k2)?;
        assert!(matches!(r.poll(), Some(Ok(()))));
        assert_ne!(r.current.read().map_err(|_| "poisoned")?.cert[0], first);
        Ok(())
    }
}
