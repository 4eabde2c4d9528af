//! Signed bundles from an untrusted source.
//!
//! 1. The input as a bundle's JSON text: `SignedBundle::from_json`, then `verify` and
//!    `verify_for_device` with a fixed pinned key. Must never panic; only a genuinely signed
//!    bundle (one of the seeds) may verify, and then the version / tenant / digest rules must
//!    hold.
//! 2. The input as the payload bytes of a bundle signed with the pinned key (what a compromised
//!    or buggy control plane could send): reaches the payload parsing and policy validation that
//!    sit behind the signature check and that path 1 cannot get past.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use sase_model::{BundleError, SignedBundle};

const KEY_SEED: [u8; 32] = [7; 32];
const TENANT: &str = "t1";

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&KEY_SEED);
    let vk = key.verifying_key();

    // 1. Bundle text.
    if let Ok(bundle) = SignedBundle::from_json(data) {
        let _ = bundle.digest();
        let again = SignedBundle::from_json(bundle.to_json().as_bytes())
            .expect("a decoded bundle re-encodes to a decodable bundle");
        assert_eq!(again, bundle, "bundle JSON round trip changed the bundle");
        check_bundle(&bundle, &vk);
    }

    // 2. Payload bytes behind a valid signature.
    let bundle = SignedBundle {
        payload: B64.encode(data),
        signature: B64.encode(key.sign(data).to_bytes()),
        key_id: sase_model::bundle::key_id(&vk),
    };
    match bundle.verify(&vk) {
        Ok(_) => check_bundle(&bundle, &vk),
        Err(BundleError::InvalidPayload(_)) => {}
        Err(other) => panic!("correctly signed bundle refused for the wrong reason: {other:?}"),
    }
});

/// Checks a bundle against the pinned key: no panic anywhere, and when it verifies the
/// edge-side acceptance rules hold.
fn check_bundle(bundle: &SignedBundle, vk: &VerifyingKey) {
    let verified = bundle.verify(vk);
    let for_device = bundle.verify_for_device(vk, TENANT, Some((3, "0123456789abcdef")));
    let _ = bundle.verify_for_device(vk, TENANT, None);
    let Ok(payload) = verified else {
        assert!(
            for_device.is_err(),
            "verify_for_device accepted what verify refused"
        );
        return;
    };
    assert!(
        payload.policy.validate().is_ok(),
        "verified payload has an invalid policy"
    );

    let digest = bundle.digest();
    let tenant = payload.tenant_id.as_str();
    let version = payload.version;
    assert_eq!(
        bundle.verify_for_device(vk, tenant, None).as_ref(),
        Ok(&payload)
    );
    assert_eq!(
        bundle
            .verify_for_device(vk, tenant, Some((version, &digest)))
            .as_ref(),
        Ok(&payload),
        "the applied bundle itself must be accepted again"
    );
    assert_eq!(
        bundle.verify_for_device(vk, tenant, Some((version, "not-the-digest"))),
        Err(BundleError::Conflict(version))
    );
    if let Some(newer) = version.checked_add(1) {
        assert_eq!(
            bundle.verify_for_device(vk, tenant, Some((newer, &digest))),
            Err(BundleError::Stale {
                applied: newer,
                got: version
            })
        );
    }
    if version > 0 {
        assert_eq!(
            bundle
                .verify_for_device(vk, tenant, Some((version - 1, "x")))
                .as_ref(),
            Ok(&payload)
        );
    }
    let other = format!("{tenant}-other");
    assert!(matches!(
        bundle.verify_for_device(vk, &other, None),
        Err(BundleError::WrongTenant { .. })
    ));
    match &for_device {
        Ok(p) => assert_eq!(p, &payload),
        Err(BundleError::WrongTenant { .. }) => assert_ne!(tenant, TENANT),
        Err(BundleError::Stale { .. }) => assert!(version < 3),
        Err(BundleError::Conflict(_)) => assert_eq!(version, 3),
        Err(e) => panic!("verified bundle refused by verify_for_device: {e:?}"),
    }
}
