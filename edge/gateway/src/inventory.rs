//! API inventory at the edge (OWASP API9), without I/O: counts of the requests handled by
//! (resource, route, method, path template), bounded, drained by the shell for each periodic
//! report to the control plane. Requests that matched no route are counted under their path
//! made into a template ([`sase_model::inventory::path_template`]), so that probing for
//! undocumented (shadow) endpoints shows up as a few rows, not one per id.

use std::collections::HashMap;

use sase_model::inventory::{path_template, InventoryEntry, MAX_INVENTORY_ENTRIES};

/// Longest method kept (longer ones are counted as `?`).
const MAX_METHOD_BYTES: usize = 16;

#[derive(Debug)]
struct Counts {
    /// (resource, route, method, template).
    endpoint: (String, String, String, String),
    count: u64,
    denied: u64,
    last_seen_ms: i64,
}

/// Request counts since the last [`InventoryCounter::drain`].
#[derive(Debug)]
pub struct InventoryCounter {
    /// By the endpoint's fields joined with NUL.
    counts: HashMap<String, Counts>,
    /// The key being looked up, written into the same buffer for every request: a request to
    /// an endpoint already counted allocates nothing.
    key: String,
    dropped: u64,
    max_entries: usize,
}

impl Default for InventoryCounter {
    fn default() -> Self {
        InventoryCounter::new(MAX_INVENTORY_ENTRIES)
    }
}

impl InventoryCounter {
    /// A counter that keeps at most `max_entries` distinct endpoints between reports.
    pub fn new(max_entries: usize) -> InventoryCounter {
        InventoryCounter {
            counts: HashMap::new(),
            key: String::new(),
            dropped: 0,
            max_entries: max_entries.min(MAX_INVENTORY_ENTRIES),
        }
    }

    /// Counts one request. `route` is `""` when no route matched; `path` is the request path
    /// (only used then).
    pub fn record(
        &mut self,
        resource: &str,
        route: &str,
        method: &str,
        path: &str,
        denied: bool,
        now_ms: i64,
    ) {
        let method = if method.len() <= MAX_METHOD_BYTES
            && method.bytes().all(|b| b.is_ascii_alphabetic())
        {
            method
        } else {
            "?"
        };
        let template = if route.is_empty() {
            path_template(path)
        } else {
            String::new()
        };
        self.key.clear();
        for (i, part) in [resource, route, method, &template].into_iter().enumerate() {
            if i > 0 {
                self.key.push('\0');
            }
            self.key.push_str(part);
        }
        let full = self.counts.len() >= self.max_entries;
        let entry = match self.counts.get_mut(self.key.as_str()) {
            Some(entry) => entry,
            None if full => {
                self.dropped += 1;
                return;
            }
            None => self.counts.entry(self.key.clone()).or_insert(Counts {
                endpoint: (
                    resource.to_string(),
                    route.to_string(),
                    method.to_string(),
                    template,
                ),
                count: 0,
                denied: 0,
                last_seen_ms: now_ms,
            }),
        };
        entry.count += 1;
        if denied {
            entry.denied += 1;
        }
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
    }

    /// Whether nothing was counted since the last drain.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.dropped == 0
    }

    /// The counts since the last drain (sorted), and how many requests to new endpoints were
    /// not counted because the table was full; starts a new period.
    pub fn drain(&mut self) -> (Vec<InventoryEntry>, u64) {
        let mut entries: Vec<InventoryEntry> = self
            .counts
            .drain()
            .map(|(_, c)| (c.endpoint, c.count, c.denied, c.last_seen_ms))
            .map(
                |((resource, route, method, template), count, denied, last_seen_ms)| {
                    InventoryEntry {
                        resource,
                        route,
                        method,
                        template,
                        count,
                        denied,
                        last_seen_ms,
                    }
                },
            )
            .collect();
        entries.sort_by(|a, b| {
            (&a.resource, &a.route, &a.template, &a.method).cmp(&(
                &b.resource,
                &b.route,
                &b.template,
                &b.method,
            ))
        });
        (entries, std::mem::take(&mut self.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_aggregated_by_route_or_template() {
        let mut c = InventoryCounter::new(10);
        c.record("users", "list", "GET", "/users", false, 5);
        c.record("users", "list", "GET", "/users", true, 7);
        c.record("", "", "GET", "/api/v1/users/17", true, 8);
        c.record("", "", "GET", "/api/v1/users/18", true, 9);
        c.record("", "", "G\u{0}T", "/x", true, 9);
        let (entries, dropped) = c.drain();
        assert_eq!(dropped, 0);
        assert_eq!(entries.len(), 3);
        let shadow = entries
            .iter()
            .find(|e| e.template == "/api/v1/users/{id}")
            .cloned();
        assert_eq!(
            shadow.map(|e| (e.count, e.denied, e.last_seen_ms)),
            Some((2, 2, 9))
        );
        let list = entries.iter().find(|e| e.route == "list").cloned();
        assert_eq!(
            list.map(|e| (e.count, e.denied, e.template)),
            Some((2, 1, String::new()))
        );
        assert!(entries.iter().any(|e| e.method == "?"));
        assert!(c.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut c = InventoryCounter::new(2);
        c.record("", "", "GET", "/a", true, 1);
        c.record("", "", "GET", "/b", true, 1);
        c.record("", "", "GET", "/c", true, 1);
        c.record("", "", "GET", "/a", true, 1);
        let (entries, dropped) = c.drain();
        assert_eq!(entries.len(), 2);
        assert_eq!(dropped, 1);
        assert_eq!(entries.iter().map(|e| e.count).sum::<u64>(), 3);
    }
}
