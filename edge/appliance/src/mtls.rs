//! mTLS client certificates on the published HTTPS listener, the shell side. The listener's
//! TLS layer asks for a client certificate (optionally: clients without one still connect)
//! while the policy in force has a resource with `client_certificates`, and checks only that
//! the client holds the certificate's key (the handshake signature). Which CA to trust depends
//! on the resource a request is for, so the chain is handed to each request of the connection
//! ([`PeerCertificates`] in the request extensions) and verified by
//! [`sase_gateway::decide_with_client_cert`] against that resource's CA.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Whether the policy in force has a resource taking client certificates (set when a policy
/// is applied; read at each handshake).
static WANTED: AtomicBool = AtomicBool::new(false);

/// Records whether the listener should ask clients for a certificate.
pub fn set_wanted(wanted: bool) {
    WANTED.store(wanted, Ordering::Relaxed);
}

/// The certificate chain a client presented on its connection (end entity first).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The chain a TLS connection's client presented, if any.
pub fn peer_certificates(conn: &rustls::ServerConnection) -> Option<PeerCertificates> {
    let chain = conn.peer_certificates()?;
    (!chain.is_empty()).then(|| {
        PeerCertificates(Arc::new(
            chain.iter().map(|c| c.clone().into_owned()).collect(),
        ))
    })
}

/// The listener's client certificate verifier (see the module docs).
#[derive(Debug)]
pub struct DeferredClientCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl DeferredClientCertVerifier {
    /// A verifier using the ring provider's signature algorithms.
    pub fn new() -> Arc<DeferredClientCertVerifier> {
        Arc::new(DeferredClientCertVerifier {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for DeferredClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        WANTED.load(Ordering::Relaxed)
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain is verified per request against the resource's CA.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
