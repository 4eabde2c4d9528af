//! `sase-audit verify` on arbitrary input: parsing an export and verifying it must never
//! panic, whatever the file holds (an export is evidence handed around between parties and
//! read by auditors' machines: untrusted input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sase_audit::verify::{parse, verify, Options};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = parse(text) else {
        return;
    };
    // A fixed, valid control-plane key: the signatures in the input will not match it, which
    // exercises the refusal paths as well as everything before them.
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    for allow_unsigned in [false, true] {
        let report = verify(
            &records,
            &Options {
                control_plane_key: key,
                allow_unsigned,
            },
        );
        let _ = format!("{report:?}");
    }
});
