//! The control plane's TLS settings and certificate reload without restart.
//!
//! * Protocols: TLS 1.3 and TLS 1.2 only ([`PROTOCOLS`]); suites: AEAD with ephemeral key
//!   exchange only ([`modern_provider`]: the three TLS 1.3 suites, and for TLS 1.2 ECDHE with
//!   AES-GCM or ChaCha20-Poly1305; no CBC, no RSA key exchange, no SHA-1 MACs); groups X25519,
//!   P-256, P-384. rustls' defaults are close to this; it is spelled out here so that a
//!   dependency update cannot widen it silently, and tested.
//! * [`ReloadingCert`] resolves the server certificate for each new handshake from the latest
//!   good pair of PEM files (`server.pem`, `server.key`). [`watch`] looks at the files every few
//!   seconds (content digest, so a copy with an old mtime counts too) and at once on `SIGHUP`. A
//!   pair that does not load (bad PEM, key not matching the certificate, half-written) is logged
//!   and the certificate in use is kept; it is tried again when the files change. Connections
//!   already established keep the certificate they were opened with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SupportedProtocolVersion;
use sha2::{Digest, Sha256};

/// The protocol versions the control plane speaks: TLS 1.3 (preferred) and TLS 1.2.
pub static PROTOCOLS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ring's provider narrowed to modern suites and groups (see the module docs).
pub fn modern_provider() -> CryptoProvider {
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
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..rustls::crypto::ring::default_provider()
    }
}

/// The server certificate, reloadable.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    inner: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    /// Digest of the files behind `key`, or of the last pair that failed to load.
    seen: [u8; 32],
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

fn load_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("certificate PEM")?;
    if chain.is_empty() {
        anyhow::bail!("the certificate file holds no certificate");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("key PEM")?
        .context("the key file holds no private key")?;
    let certified = CertifiedKey::from_der(chain, key, provider).context("certificate and key")?;
    // from_der accepts keys whose public half it cannot derive; insist on a match here.
    certified
        .keys_match()
        .context("the key does not match the certificate")?;
    Ok(certified)
}

/// What a reload attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are those already in use (or already refused).
    Unchanged,
    /// A new certificate is in use.
    Reloaded,
    /// The new files do not load; the old certificate stays.
    Refused,
}

impl ReloadingCert {
    /// Loads the pair at start.
    ///
    /// # Errors
    /// When the files cannot be read or do not load.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<ReloadingCert> {
        let provider = Arc::new(modern_provider());
        let cert =
            std::fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
        let key =
            std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let certified = load_pair(&cert, &key, &provider)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            inner: RwLock::new(Current {
                key: Arc::new(certified),
                seen: digest(&cert, &key),
            }),
        })
    }

    /// Reads the files again and switches to them when they changed and load.
    pub fn reload(&self) -> Reload {
        let (cert, key) = match (
            std::fs::read(&self.cert_path),
            std::fs::read(&self.key_path),
        ) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(%err, "TLS certificate reload: cannot read the files; keeping the current certificate");
                return Reload::Refused;
            }
        };
        let seen = digest(&cert, &key);
        if self.inner.read().unwrap_or_else(|p| p.into_inner()).seen == seen {
            return Reload::Unchanged;
        }
        let outcome = match load_pair(&cert, &key, &self.provider) {
            Ok(certified) => {
                let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
                inner.key = Arc::new(certified);
                inner.seen = seen;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                Reload::Reloaded
            }
            Err(err) => {
                tracing::error!(cert = %self.cert_path.display(), err = format!("{err:#}"),
                    "TLS certificate reload refused; keeping the current certificate");
                self.inner.write().unwrap_or_else(|p| p.into_inner()).seen = seen;
                Reload::Refused
            }
        };
        outcome
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .key
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls server configuration: [`PROTOCOLS`], [`modern_provider`], the reloadable
/// certificate, the device-certificate verifier, HTTP/1.1.
///
/// # Errors
/// Only when the provider and versions are inconsistent (a bug).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    verifier: Arc<crate::tls::DeviceCertVerifier>,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(modern_provider()))
        .with_protocol_versions(PROTOCOLS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads the certificate every `every` and on `SIGHUP`, forever.
pub async fn watch(cert: Arc<ReloadingCert>, every: Duration) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        {
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                () = hangup => tracing::info!("SIGHUP: reloading the TLS certificate"),
            }
        }
        #[cfg(not(unix))]
        tick.tick().await;
        let cert = cert.clone();
        let _ = tokio::task::spawn_blocking(move || cert.reload()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn dir() -> PathBuf {
        let mut bytes = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        let d = std::env::temp_dir().join(format!("sase-tls-reload-{}", hex::encode(bytes)));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn only_tls12_and_13_with_aead_ecdhe_suites() {
        let p = modern_provider();
        for suite in &p.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
        assert_eq!(p.cipher_suites.len(), 9);
        let versions: Vec<_> = PROTOCOLS.iter().map(|v| v.version).collect();
        assert_eq!(
            versions,
            vec![
                rustls::ProtocolVersion::TLSv1_3,
                rustls::ProtocolVersion::TLSv1_2
            ]
        );
    }

    #[test]
    fn a_good_new_pair_is_used_a_bad_one_is_refused_and_the_old_kept() {
        let d = dir();
        let (cert_path, key_path) = (d.join("server.pem"), d.join("server.key"));
        let (c1, k1) = pair("one.example");
        std::fs::write(&cert_path, &c1).expect("write");
        std::fs::write(&key_path, &k1).expect("write");
        let r = ReloadingCert::load(&cert_path, &key_path).expect("load");
        let first = r.current().cert[0].clone();
        assert_eq!(r.reload(), Reload::Unchanged);

        // A certificate with someone else's key: refused, old one kept, not retried until the
        // files change again.
        let (c2, k2) = pair("two.example");
        std::fs::write(&cert_path, &c2).expect("write");
        assert_eq!(r.reload(), Reload::Refused);
        assert_eq!(r.current().cert[0], first);
        assert_eq!(r.reload(), Reload::Unchanged);
        std::fs::write(&cert_path, "garbage").expect("write");
        assert_eq!(r.reload(), Reload::Refused);
        assert_eq!(r.current().cert[0], first);

        // The matching key arrives: switched.
        std::fs::write(&cert_path, &c2).expect("write");
        std::fs::write(&key_path, &k2).expect("write");
        assert_eq!(r.reload(), Reload::Reloaded);
        assert_ne!(r.current().cert[0], first);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn new_handshakes_see_the_new_certificate_old_connections_keep_theirs() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let d = dir();
        let (cert_path, key_path) = (d.join("server.pem"), d.join("server.key"));
        let (c1, k1) = pair("localhost");
        std::fs::write(&cert_path, &c1).expect("write");
        std::fs::write(&key_path, &k1).expect("write");
        let resolver = Arc::new(ReloadingCert::load(&cert_path, &key_path).expect("load"));
        let verifier = Arc::new(crate::tls::DeviceCertVerifier::new(&[]).expect("verifier"));
        let config = server_config(resolver.clone(), verifier).expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1];
                    // Echo bytes until the client closes.
                    while let Ok(1) = tls.read(&mut buf).await {
                        if tls.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });

        async fn connect(
            addr: std::net::SocketAddr,
            root: &str,
        ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut root.as_bytes()) {
                roots.add(c.expect("pem")).expect("root");
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(modern_provider()))
                .with_protocol_versions(PROTOCOLS)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            connector.connect(name, tcp).await.expect("handshake")
        }

        let mut old = connect(addr, &c1).await;
        old.write_all(b"a").await.expect("write");
        let mut b = [0u8; 1];
        old.read_exact(&mut b).await.expect("echo");

        let (c2, k2) = pair("localhost");
        std::fs::write(&cert_path, &c2).expect("write");
        std::fs::write(&key_path, &k2).expect("write");
        assert_eq!(resolver.reload(), Reload::Reloaded);

        // A new connection only verifies against the new certificate.
        let new = connect(addr, &c2).await;
        let seen = new.get_ref().1.peer_certificates().expect("certs")[0].clone();
        assert_eq!(seen, resolver.current().cert[0]);
        // The old connection still works, on the old certificate.
        old.write_all(b"b").await.expect("write");
        old.read_exact(&mut b).await.expect("echo");
        assert_eq!(&b, b"b");
        let old_cert = old.get_ref().1.peer_certificates().expect("certs")[0].clone();
        assert_ne!(old_cert, seen);
        let _ = std::fs::remove_dir_all(d);
    }
}
