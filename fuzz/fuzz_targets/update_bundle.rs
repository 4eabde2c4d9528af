//! Firmware update bundles from an untrusted source (what the edge downloads, what the control
//! plane accepts on upload).
//!
//! 1. The input as a bundle file: `decode_header`, then `verify` with a fixed vendor key, then
//!    the applicability and payload checks. Must never panic; only a genuinely signed bundle
//!    (the seed) may verify, and then its payload must match the manifest.
//! 2. The input as the manifest bytes of a header signed with the vendor key (what a leaked key
//!    could sign): reaches the manifest parsing behind the signature check.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use sase_model::update::{decode_header, RunningImage, SignedManifest, UpdateError};

const VENDOR_SEED: [u8; 32] = [7; 32];

fn running() -> RunningImage {
    RunningImage {
        version: 1,
        arch: "x86_64".into(),
        kernel_release: "6.1.0-test".into(),
        slot_bytes: 1 << 20,
    }
}

fuzz_target!(|data: &[u8]| {
    let vendor = SigningKey::from_bytes(&VENDOR_SEED);
    let key = vendor.verifying_key();

    // 1. As a bundle file.
    if let Ok((header, offset)) = decode_header(data) {
        let _ = header.unverified();
        if let Ok(manifest) = header.verify(&key) {
            let _ = manifest.check_applicable(&running());
            let payload = data.get(offset..).unwrap_or_default();
            let digest = {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(payload))
            };
            let checked = manifest.check_payload(payload.len() as u64, &digest);
            if let Err(err) = &checked {
                assert!(err.is_tampering(), "a payload mismatch is tampering: {err}");
            }
        }
    }

    // 2. As signed manifest bytes.
    let signed = SignedManifest {
        manifest: B64.encode(data),
        signature: B64.encode(vendor.sign(data).to_bytes()),
        key_id: String::new(),
    };
    match signed.verify(&key) {
        Ok(manifest) => {
            let _ = manifest.check_applicable(&running());
            let _ = manifest.check_payload(0, "");
        }
        Err(UpdateError::BadSignature) => {
            panic!("a signature made with the vendor key must verify")
        }
        Err(_) => {}
    }
    if let Ok(prefix) = signed.encode_prefix() {
        let (round, _) = decode_header(&prefix).expect("an encoded header decodes");
        assert_eq!(round, signed);
    }
});
