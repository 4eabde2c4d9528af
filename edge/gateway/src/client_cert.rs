//! mTLS client certificates per resource: the listener accepts any certificate a client proves
//! it holds the key of (the TLS layer checks the handshake signature only, since which CA to
//! trust depends on the resource a request is for); here the chain is verified against the
//! resource's CA(s) with webpki (validity at `now`, client-auth usage), and the caller's
//! identity is read from the configured subject alternative name (first URI, DNS or e-mail
//! SAN). With `mode: alternative` a valid certificate stands in for the token; with
//! `additional` both are required.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use sase_model::upstream_trust::{ClientCertMode, ClientCertificates, SanKind};
use sase_model::Reason;

/// A resource's client certificate settings, compiled (the CA parsed once per policy).
pub(crate) struct ClientCertCheck {
    verifier: Arc<dyn ClientCertVerifier>,
    identity: SanKind,
    pub(crate) mode: ClientCertMode,
}

impl std::fmt::Debug for ClientCertCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertCheck")
            .field("identity", &self.identity)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ClientCertCheck {
    /// Parses the CA(s) and builds the verifier.
    pub(crate) fn compile(settings: &ClientCertificates) -> Result<ClientCertCheck, String> {
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile_certs(settings.ca_pem.as_bytes())? {
            roots
                .add(cert)
                .map_err(|e| format!("client CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate in ca_pem".into());
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| format!("client CA: {e}"))?;
        Ok(ClientCertCheck {
            verifier,
            identity: settings.identity,
            mode: settings.mode,
        })
    }

    /// Verifies a client's chain (end entity first) at `now_ms`; returns the identity from
    /// its SAN.
    ///
    /// # Errors
    /// [`Reason::ClientCertMissing`] for an empty chain, [`Reason::ClientCertInvalid`] when the
    /// chain does not verify or carries no SAN of the configured kind.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now_ms: i64,
    ) -> Result<String, Reason> {
        let (end_entity, intermediates) = chain.split_first().ok_or(Reason::ClientCertMissing)?;
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(
            u64::try_from(now_ms).unwrap_or(0),
        ));
        self.verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|_| Reason::ClientCertInvalid)?;
        san_identity(end_entity, self.identity).ok_or(Reason::ClientCertInvalid)
    }
}

/// Whether a PEM text holds CA certificates a verifier can be built from (the control plane
/// refuses a policy whose CA the edge could not load).
pub(crate) fn check_ca_pem(pem: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile_certs(pem.as_bytes())? {
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate does not parse: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no CA certificate".into());
    }
    Ok(())
}

/// The first SAN of `kind` in a certificate.
fn san_identity(cert: &CertificateDer<'_>, kind: SanKind) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .find_map(|name| match (kind, name) {
            (SanKind::Uri, GeneralName::URI(v))
            | (SanKind::Dns, GeneralName::DNSName(v))
            | (SanKind::Email, GeneralName::RFC822Name(v)) => Some((*v).to_string()),
            _ => None,
        })
}

/// The DER certificates of a PEM text.
fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_pem: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    };

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).expect("ca"),
            key,
        }
    }

    fn client(ca: &Ca, sans: Vec<SanType>) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&key, &ca.cert, &ca.key)
            .expect("cert")
            .der()
            .clone()
    }

    fn check(ca: &Ca, identity: SanKind) -> ClientCertCheck {
        ClientCertCheck::compile(&ClientCertificates {
            ca_pem: ca.cert.pem(),
            identity,
            mode: ClientCertMode::Additional,
        })
        .expect("compiles")
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    #[test]
    fn identity_comes_from_the_configured_san() {
        let ca = ca();
        let cert = client(
            &ca,
            vec![
                SanType::DnsName("svc.example".try_into().expect("dns")),
                SanType::URI("spiffe://acme/ns/app".try_into().expect("uri")),
                SanType::Rfc822Name("ops@example.com".try_into().expect("email")),
            ],
        );
        let chain = [cert];
        assert_eq!(
            check(&ca, SanKind::Uri).verify(&chain, now_ms()),
            Ok("spiffe://acme/ns/app".into())
        );
        assert_eq!(
            check(&ca, SanKind::Dns).verify(&chain, now_ms()),
            Ok("svc.example".into())
        );
        assert_eq!(
            check(&ca, SanKind::Email).verify(&chain, now_ms()),
            Ok("ops@example.com".into())
        );
    }

    #[test]
    fn other_cas_missing_sans_and_empty_chains_are_refused() {
        let ca_a = ca();
        let ca_b = ca();
        let from_b = client(
            &ca_b,
            vec![SanType::URI("spiffe://b".try_into().expect("uri"))],
        );
        assert_eq!(
            check(&ca_a, SanKind::Uri).verify(&[from_b], now_ms()),
            Err(Reason::ClientCertInvalid)
        );
        let no_uri = client(
            &ca_a,
            vec![SanType::DnsName("x.example".try_into().expect("dns"))],
        );
        assert_eq!(
            check(&ca_a, SanKind::Uri).verify(std::slice::from_ref(&no_uri), now_ms()),
            Err(Reason::ClientCertInvalid)
        );
        // Far in the future the certificate has expired.
        assert_eq!(
            check(&ca_a, SanKind::Dns).verify(&[no_uri], now_ms() + 50 * 365 * 86_400_000),
            Err(Reason::ClientCertInvalid)
        );
        assert_eq!(
            check(&ca_a, SanKind::Uri).verify(&[], now_ms()),
            Err(Reason::ClientCertMissing)
        );
        assert!(check_ca_pem(&ca_a.cert.pem()).is_ok());
        assert!(
            check_ca_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert!(ClientCertCheck::compile(&ClientCertificates {
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            identity: SanKind::Uri,
            mode: ClientCertMode::Alternative,
        })
        .is_err());
    }
}
