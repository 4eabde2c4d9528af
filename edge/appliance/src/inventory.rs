//! The I/O half of the API inventory (OWASP API9): the request path counts every audited
//! request here ([`Inventory::record`]); the channel drains the counts every
//! [`REPORT_INTERVAL`] and sends them to the control plane as an `inventory` message. Counts
//! are telemetry, not audit: a report lost with a dropped channel loses that period's counts
//! (the audit trail still has every request), and counting never blocks a request.

use std::sync::Mutex;
use std::time::Duration;

use sase_gateway::inventory::InventoryCounter;
use sase_model::inventory::InventoryEntry;

/// How often the edge reports its inventory counts.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// Request counts since the last report.
#[derive(Default)]
pub struct Inventory {
    counter: Mutex<InventoryCounter>,
}

impl Inventory {
    /// Counts one request (see [`InventoryCounter::record`]).
    pub fn record(
        &self,
        resource: &str,
        route: &str,
        method: &str,
        path: &str,
        denied: bool,
        now_ms: i64,
    ) {
        let mut counter = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        counter.record(resource, route, method, path, denied, now_ms);
    }

    /// The counts since the last call, or `None` when there are none.
    pub fn take_report(&self) -> Option<(Vec<InventoryEntry>, u64)> {
        let mut counter = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        if counter.is_empty() {
            return None;
        }
        Some(counter.drain())
    }
}
