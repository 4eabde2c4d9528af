//! Certificates: the control plane's own TLS identity, one CA per tenant, and device
//! certificates issued from a device's CSR at enrolment (`rcgen`).
//!
//! Device keys never leave the device: the control plane only sees a CSR, checks its
//! self-signature (proof of possession), and issues a client certificate whose common name is
//! the device id, whatever the CSR asked for.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The CSR is malformed or its signature does not verify.
    #[error("certificate signing request is invalid: {0}")]
    BadCsr(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, days: u64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + Duration::from_secs(days * 86_400);
}

fn ca_params(common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "SASE edge");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 3650);
    Ok(params)
}

/// A new self-signed CA (tenant CA or the control plane's TLS CA).
///
/// # Errors
/// Key or certificate generation failure.
pub fn new_ca(common_name: &str) -> Result<CertAndKey, PkiError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(common_name)?.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn load_issuer(ca: &CertAndKey) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem)?;
    let params = CertificateParams::from_ca_cert_pem(&ca.cert_pem)?;
    // Re-signing the parsed parameters gives an issuer object with the same subject and key,
    // which is all rcgen needs to issue under it.
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

/// A TLS server certificate for `names` (DNS names or IP addresses) issued by `ca`.
///
/// # Errors
/// Key or certificate generation failure.
pub fn new_server_cert(ca: &CertAndKey, names: &[String]) -> Result<CertAndKey, PkiError> {
    let (issuer, issuer_key) = load_issuer(ca)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 825);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer, &issuer_key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a device client certificate from its CSR. Returns the certificate PEM and the
/// SHA-256 (hex) of its DER, which identifies the device on the channel.
///
/// # Errors
/// [`PkiError::BadCsr`] when the CSR does not parse or its signature does not verify.
pub fn issue_device_cert(
    tenant_ca: &CertAndKey,
    csr_pem: &str,
    device_id: &str,
) -> Result<(String, String), PkiError> {
    if csr_pem.len() > 16 * 1024 {
        return Err(PkiError::BadCsr("CSR larger than 16 KiB".into()));
    }
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    let (issuer, issuer_key) = load_issuer(tenant_ca)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device_id);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        format!("urn:sase:device:{device_id}").try_into()?,
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    validity(&mut params, 365);
    csr.params = params;
    let cert = csr.signed_by(&issuer, &issuer_key)?;
    let fingerprint = hex::encode(Sha256::digest(cert.der()));
    Ok((cert.pem(), fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_cert_is_issued_from_a_csr_with_the_device_id_as_common_name() {
        let ca = new_ca("tenant t1 CA").expect("ca");
        let device_key = KeyPair::generate().expect("key");
        let csr = CertificateParams::new(vec!["ignored.example".to_string()])
            .expect("params")
            .serialize_request(&device_key)
            .expect("csr")
            .pem()
            .expect("pem");
        let (pem, fingerprint) = issue_device_cert(&ca, &csr, "dev-1").expect("issue");
        assert_eq!(fingerprint.len(), 64);
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("one cert")
            .expect("pem");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok());
        assert_eq!(cn, Some("dev-1"));
        assert_eq!(
            parsed.public_key().raw,
            device_key.public_key_der().as_slice()
        );
    }

    #[test]
    fn garbage_and_tampered_csrs_are_refused() {
        let ca = new_ca("tenant t1 CA").expect("ca");
        assert!(matches!(
            issue_device_cert(&ca, "not a csr", "d"),
            Err(PkiError::BadCsr(_))
        ));
        let key = KeyPair::generate().expect("key");
        let csr = CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .serialize_request(&key)
            .expect("csr");
        let mut der = csr.der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        assert!(matches!(
            issue_device_cert(&ca, &pem, "d"),
            Err(PkiError::BadCsr(_))
        ));
    }
}
