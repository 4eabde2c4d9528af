//! The control plane's enrolment: the CSR an unauthenticated client posts with its claim code
//! (`POST /api/enroll`) goes through `pki::issue_device_cert`, which parses the PEM, checks the
//! CSR's self-signature and issues a client certificate. Compiled here from
//! `control-plane/server/src/pki.rs` itself (the fuzz crate does not link the whole control
//! plane: sqlx, axum, libmodsecurity), so this is the production code.
//!
//! Never panics; a refusal is an error with a message; an issued certificate chains to the tenant CA, names
//! the device (whatever the CSR asked for) and is not a CA.
//!
//! Input: the first byte picks the form. Even: the rest is the request body's `csr_pem` as
//! sent. Odd: the rest is DER, wrapped in a `CERTIFICATE REQUEST` PEM block (reaches the ASN.1
//! and signature checks behind the PEM decoder).
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

#[path = "../../control-plane/server/src/pki.rs"]
#[allow(dead_code)]
mod pki;

fn tenant_ca() -> &'static pki::CertAndKey {
    static CA: OnceLock<pki::CertAndKey> = OnceLock::new();
    CA.get_or_init(|| pki::new_ca("fuzz tenant CA").expect("CA"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return; // the JSON body is a string: never anything but UTF-8
        };
        text.to_string()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
        let mut pem = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE REQUEST-----\n");
        pem
    };
    match pki::issue_device_cert(tenant_ca(), &pem, "dev-fuzz") {
        Ok((cert_pem, fingerprint)) => {
            assert_eq!(fingerprint.len(), 64, "SHA-256 hex fingerprint");
            let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
                .expect("issued certificate is PEM");
            let cert = block.parse_x509().expect("issued certificate parses");
            let cn: Vec<_> = cert
                .subject()
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect();
            assert_eq!(cn, ["dev-fuzz"], "the certificate names the device only");
            assert!(!cert.is_ca(), "a device certificate is never a CA");
            let (_, ca_block) =
                x509_parser::pem::parse_x509_pem(tenant_ca().cert_pem.as_bytes()).expect("CA PEM");
            let ca = ca_block.parse_x509().expect("CA parses");
            assert_eq!(cert.issuer(), ca.subject(), "issued by the tenant CA");
            cert.verify_signature(Some(ca.public_key()))
                .expect("signed by the tenant CA");
        }
        // The API answers 400 with this text (BadCsr, or Generate for a CSR whose key rcgen
        // cannot certify).
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
