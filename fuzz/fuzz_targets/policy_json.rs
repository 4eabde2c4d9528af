//! `Policy::parse_json` on arbitrary text. Never panics; an accepted policy survives a
//! serde_json round trip and a canonical-JSON round trip (the byte form that is signed) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sase_model::canonical::to_canonical_json;
use sase_model::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse_json(text) else {
        return;
    };
    check_round_trips(&policy);
});

fn check_round_trips(policy: &Policy) {
    assert!(
        policy.validate().is_ok(),
        "accepted policy no longer validates"
    );

    let json = serde_json::to_string(policy).expect("an accepted policy serialises");
    let again = Policy::parse_json(&json)
        .unwrap_or_else(|e| panic!("re-serialised policy refused: {e}\n{json}"));
    assert_eq!(
        &again, policy,
        "serde_json round trip changed the policy\n{json}"
    );

    let canonical = to_canonical_json(policy).expect("canonical form");
    let canonical = String::from_utf8(canonical).expect("canonical JSON is UTF-8");
    let again = Policy::parse_json(&canonical)
        .unwrap_or_else(|e| panic!("canonical policy refused: {e}\n{canonical}"));
    assert_eq!(
        &again, policy,
        "canonical round trip changed the policy\n{canonical}"
    );
}
