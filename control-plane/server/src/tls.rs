//! TLS for the control plane: its server certificate (generated under a local CA at first start,
//! or supplied by the operator), the verifier of device client certificates (roots = every
//! tenant CA, reloaded when tenants are added), and the accept loop that hands each HTTP request
//! the verified client certificate of its connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::pki;

/// What the accept loop knows about a connection; inserted into every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// DER of the client certificate, verified against the tenant CAs, when one was presented.
    pub client_cert: Option<Vec<u8>>,
}

/// Client-certificate verifier whose roots can be replaced at run time. Client certificates are
/// optional at the TLS layer (admins and enrolling devices have none); the edge channel refuses
/// connections without one.
#[derive(Debug)]
pub struct DeviceCertVerifier {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(crate::tls_reload::modern_provider())
}

fn build_verifier(ca_pems: &[String]) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for pem in ca_pems {
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            roots.add(cert.context("tenant CA PEM")?)?;
        }
    }
    if roots.is_empty() {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()?,
    )
}

impl DeviceCertVerifier {
    /// A verifier trusting these CA certificates (PEM).
    ///
    /// # Errors
    /// When a PEM does not parse.
    pub fn new(ca_pems: &[String]) -> anyhow::Result<DeviceCertVerifier> {
        Ok(DeviceCertVerifier {
            current: RwLock::new(build_verifier(ca_pems)?),
        })
    }

    /// Replaces the trusted CAs.
    ///
    /// # Errors
    /// When a PEM does not parse (the old roots stay in force).
    pub fn reload(&self, ca_pems: &[String]) -> anyhow::Result<()> {
        let verifier = build_verifier(ca_pems)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
        Ok(())
    }

    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; edges present their one certificate regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Loads the server certificate from `dir` (`server.pem`, `server.key`), creating a local CA
/// (`ca.pem`, which clients trust) and a certificate for `names` on first start.
///
/// # Errors
/// File or generation failures.
pub fn load_or_create_server_identity(
    dir: &Path,
    names: &[String],
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    if !cert_path.exists() || !key_path.exists() {
        let ca = pki::new_ca("SASE control plane local CA")?;
        let server = pki::new_server_cert(&ca, names)?;
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem)?;
        write_private(&dir.join("ca.key"), &ca.key_pem)?;
        std::fs::write(&cert_path, format!("{}{}", server.cert_pem, ca.cert_pem))?;
        write_private(&key_path, &server.key_pem)?;
    }
    let chain = rustls_pemfile::certs(&mut std::fs::read(&cert_path)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("server.pem")?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(&key_path)?.as_slice())
        .context("server.key")?
        .context("server.key holds no private key")?;
    Ok((chain, key))
}

/// Builds the rustls server configuration with a fixed certificate (TLS 1.3 and 1.2, modern
/// suites: `crate::tls_reload`, whose `server_config` reloads the certificate; HTTP/1.1).
///
/// # Errors
/// When the certificate and key do not match.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<DeviceCertVerifier>,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(crate::tls_reload::PROTOCOLS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TLS connections forever and serves `app` on each, with [`ConnInfo`] attached to
/// every request.
pub async fn serve(listener: TcpListener, config: rustls::ServerConfig, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| c.as_ref().to_vec());
            let info = ConnInfo { peer, client_cert };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    app.clone().oneshot(req)
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, %err, "connection ended with error");
            }
        });
    }
}
