//! Continuous access evaluation and API inventory on arbitrary input: the claims of a SET
//! (after its signature, the claims are still the transmitter's text) turned into revocations,
//! revocation lists as read back from an edge's `revocations.json`, merged into the edge's
//! table, and request paths made into inventory templates and counted. None may panic; the
//! templates stay within their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sase_gateway::inventory::InventoryCounter;
use sase_gateway::revocation::RevocationTable;
use sase_model::caep::{revocations_from_set, Revocation};
use sase_model::inventory::{path_template, MAX_TEMPLATE_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(claims) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data) {
        if let Ok(revocations) = revocations_from_set(&claims, 1_700_000_000_000, 86_400_000) {
            let mut table = RevocationTable::new();
            table.extend(revocations, 1_700_000_000_000);
            table.prune(i64::MAX);
            assert!(table.is_empty());
        }
    }
    if let Ok(list) = serde_json::from_slice::<Vec<Revocation>>(data) {
        let mut table = RevocationTable::new();
        table.extend(list, 0);
        table.prune(0);
    }
    let path = String::from_utf8_lossy(data);
    let template = path_template(&path);
    assert!(template.len() <= MAX_TEMPLATE_BYTES + 8, "{}", template.len());
    let mut counter = InventoryCounter::new(4);
    for part in path.split('\n').take(16) {
        counter.record("r", "", part, part, true, 0);
    }
    let (entries, _) = counter.drain();
    assert!(entries.len() <= 4);
});
