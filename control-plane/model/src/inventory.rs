//! API inventory (OWASP API9): what each edge saw, as it reports it over the channel, and how
//! the control plane classifies it.
//!
//! An edge aggregates the requests it handled by (resource, route, method, path template) and
//! sends the counts periodically ([`InventoryEntry`], at most [`MAX_INVENTORY_ENTRIES`] per
//! report). A request that matched a route is reported with the route's id (the control plane
//! knows its template); one that matched none with its path turned into a template by
//! [`path_template`] (identifier-like segments become `{id}`), so that `/api/v1/users/17` and
//! `/api/v1/users/18` count as one shadow endpoint.

use serde::{Deserialize, Serialize};

/// Most entries in one inventory report.
pub const MAX_INVENTORY_ENTRIES: usize = 1000;
/// Longest path template reported, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 256;
/// Most path segments kept in a template (deeper paths end in `/...`).
pub const MAX_TEMPLATE_SEGMENTS: usize = 12;

/// Requests an edge saw for one (resource, route, method, template) since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    /// Resource name (`""` when no resource matched).
    pub resource: String,
    /// Route id (`""` when no route matched).
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Path template: the route's template is resolved by the control plane when `route` is
    /// set; otherwise the request path made into a template by [`path_template`].
    pub template: String,
    /// Requests counted.
    pub count: u64,
    /// Of which refused.
    pub denied: u64,
    /// Last time one was seen (Unix ms).
    pub last_seen_ms: i64,
}

/// How the control plane classifies an observed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    /// A declared route that is documented (or whose resource has no OpenAPI document).
    Documented,
    /// Seen but undocumented: matches no declared route, or a route with no operation in its
    /// resource's OpenAPI document.
    Shadow,
    /// Documented but retired (`retired: true` on the route or `deprecated: true` on the
    /// OpenAPI operation) and still called.
    Zombie,
}

/// The template of a path for the inventory: identifier-like segments (numbers, UUIDs, long
/// hexadecimal or token-like strings, e-mail addresses) become `{id}`; at most
/// [`MAX_TEMPLATE_SEGMENTS`] segments and [`MAX_TEMPLATE_BYTES`] bytes; other bytes than
/// visible ASCII are replaced with `?`.
pub fn path_template(path: &str) -> String {
    let mut out = String::new();
    let mut segments = path.split('/').skip(1);
    for (i, segment) in segments.by_ref().enumerate() {
        if i == MAX_TEMPLATE_SEGMENTS {
            out.push_str("/...");
            break;
        }
        out.push('/');
        if is_identifier(segment) {
            out.push_str("{id}");
        } else {
            out.extend(
                segment
                    .chars()
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' }),
            );
        }
        if out.len() > MAX_TEMPLATE_BYTES {
            let mut cut = MAX_TEMPLATE_BYTES;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let hex = segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    segment.bytes().all(|b| b.is_ascii_digit())
        || (hex && segment.len() >= 16)
        || (segment.contains('@') && segment.contains('.'))
        || (segment.len() >= 20 && digits >= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_placeholders() {
        assert_eq!(path_template("/api/v1/users/17"), "/api/v1/users/{id}");
        assert_eq!(
            path_template("/orders/3f2a9c1e-0d4b-4c5e-9a7b-1c2d3e4f5a6b/items"),
            "/orders/{id}/items"
        );
        assert_eq!(path_template("/u/a@b.example"), "/u/{id}");
        assert_eq!(path_template("/"), "/");
        assert_eq!(path_template(""), "/");
        assert_eq!(path_template("/v2/health"), "/v2/health");
    }

    #[test]
    fn templates_are_bounded() {
        let deep = "/a".repeat(40);
        let t = path_template(&deep);
        assert!(t.ends_with("/..."), "{t}");
        assert_eq!(t.matches('/').count(), MAX_TEMPLATE_SEGMENTS + 1);
        let long = format!("/{}", "x".repeat(5000));
        assert!(path_template(&long).len() <= MAX_TEMPLATE_BYTES + 3);
        assert_eq!(path_template("/caf\u{e9}"), "/caf?");
    }
}
