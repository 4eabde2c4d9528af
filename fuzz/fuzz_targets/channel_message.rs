//! Channel frames in both directions (`EdgeMessage` up, `ControlMessage` down), as the control
//! plane and the edge decode them with serde_json. Never panics; a decoded message re-encodes to
//! the same message. Audit batches also go through the chain verifier, bundles through `verify`.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use sase_model::audit::verify_chain;
use sase_model::channel::{ControlMessage, EdgeMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<EdgeMessage>(data) {
        let bytes = serde_json::to_vec(&message).expect("a decoded message re-encodes");
        let again: EdgeMessage = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded EdgeMessage refused: {e}"));
        assert_eq!(again, message, "EdgeMessage round trip changed the message");
        if let EdgeMessage::AuditBatch { events, .. } = &message {
            for event in events {
                let _ = event.hash();
            }
            if let Some(first) = events.first() {
                if let Err(e) = verify_chain(&first.device_id, events) {
                    let _ = e.to_string();
                }
            }
        }
    }

    if let Ok(message) = serde_json::from_slice::<ControlMessage>(data) {
        let bytes = serde_json::to_vec(&message).expect("a decoded message re-encodes");
        let again: ControlMessage = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded ControlMessage refused: {e}"));
        assert_eq!(
            again, message,
            "ControlMessage round trip changed the message"
        );
        if let ControlMessage::Policy { bundle } = &message {
            let vk = SigningKey::from_bytes(&[7; 32]).verifying_key();
            if let Err(e) = bundle.verify_for_device(&vk, "t1", Some((1, "d"))) {
                let _ = e.to_string();
            }
        }
    }
});
