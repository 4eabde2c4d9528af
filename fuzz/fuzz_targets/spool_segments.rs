//! The edge's audit spool read back after a crash: `Spool::open` on segment files holding
//! arbitrary bytes (a torn write, a disk error, a hand edit), then the operations the daemon
//! runs next (append, read back, acknowledge). Compiled here from
//! `edge/appliance/src/spool.rs` itself (the fuzz crate does not link the edge daemon:
//! libmodsecurity, quinn, redis), so this is the production code.
//!
//! Never panics; a damaged spool is refused with an error (the edge does not start and says
//! which file and line); a spool that opens continues its chain: the appended event gets the
//! next sequence number and reads back linked to the head.
//!
//! Input: split at `0xff` bytes (never in UTF-8 text) into up to three segment files, written
//! as `seg-<n>.jsonl` in a scratch directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sase_model::AuditEvent;

#[path = "../../edge/appliance/src/spool.rs"]
#[allow(dead_code)]
mod spool;

fn event() -> AuditEvent {
    // From JSON rather than a struct literal: fields added to the model later with serde
    // defaults do not break the target.
    serde_json::from_str(
        r#"{"seq":0,"prev_hash":"","ts_ms":1,"tenant_id":"t","device_id":"d",
            "kind":"http_request","decision":"allow","reason":"allowed","reference":"fuzz",
            "policy_version":1,"identity":null,"http":null,"detail":null}"#,
    )
    .expect("a fixed, valid event")
}

/// The run's scratch directory, removed when an input is done (whichever way it ends).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("sase-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let _scratch = Scratch(dir.clone());
    for (i, part) in data.split(|b| *b == 0xff).take(3).enumerate() {
        let name = format!("seg-{:020}.jsonl", 1 + 1000 * i as u64);
        std::fs::write(dir.join(name), part).expect("segment written");
    }
    let spool = match spool::Spool::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let head = spool.head_seq();
    let before = spool.read_after(head.saturating_sub(1), 1);
    match spool.append(event()) {
        Ok(seq) => {
            assert_eq!(seq, head + 1, "the chain continues from the head on disk");
            let back = spool
                .read_after(head, 10)
                .expect("the new event reads back");
            let last = back.last().expect("one event after the head");
            assert_eq!(last.seq, seq);
            if let Ok(prev) = before {
                if let Some(p) = prev.last().filter(|p| p.seq == head) {
                    assert_eq!(last.prev_hash, p.hash(), "linked to the head");
                }
            }
            let _ = spool.ack(seq);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = spool.pending();
});
