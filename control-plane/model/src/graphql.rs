//! GraphQL limits of a resource: the edge parses each GraphQL request (a hardened parser with
//! token and recursion limits) and refuses operations deeper, wider or costlier than allowed,
//! and introspection when it is off, with 400 `graphql_refused` and a detail naming the limit.
//!
//! ```yaml
//! graphql:
//!   routes: [graphql]          # route ids carrying GraphQL (empty: every route)
//!   max_depth: 8
//!   max_aliases: 10
//!   max_root_fields: 5
//!   max_complexity: 500        # fields counted, multiplied by `first`/`last`/`limit` arguments
//!   introspection: false
//! ```

use serde::{Deserialize, Serialize};

/// GraphQL limits of a resource (each defaulted when omitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlLimits {
    /// Ids of the resource's routes that carry GraphQL (`POST` with a JSON body
    /// `{"query": ...}` or `application/graphql`, `GET ?query=`). Empty: every route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Deepest selection set nesting, fragments inlined (default 10).
    #[serde(default = "default_depth")]
    pub max_depth: u32,
    /// Most aliased fields in a document (default 20).
    #[serde(default = "default_aliases")]
    pub max_aliases: u32,
    /// Most fields at the root of the executed operation (default 10).
    #[serde(default = "default_root_fields")]
    pub max_root_fields: u32,
    /// Largest cost (default 1000): each field costs 1, and a field with a `first`, `last` or
    /// `limit` integer argument multiplies the cost of its selection by it.
    #[serde(default = "default_complexity")]
    pub max_complexity: u32,
    /// Whether `__schema` / `__type` queries are allowed (default false).
    #[serde(default)]
    pub introspection: bool,
    /// Most lexical tokens the parser reads (default 15000).
    #[serde(default = "default_tokens")]
    pub max_tokens: u32,
    /// Deepest parser recursion (default 64).
    #[serde(default = "default_recursion")]
    pub max_recursion: u32,
}

fn default_depth() -> u32 {
    10
}
fn default_aliases() -> u32 {
    20
}
fn default_root_fields() -> u32 {
    10
}
fn default_complexity() -> u32 {
    1000
}
fn default_tokens() -> u32 {
    15_000
}
fn default_recursion() -> u32 {
    64
}

impl Default for GraphqlLimits {
    fn default() -> GraphqlLimits {
        GraphqlLimits {
            routes: Vec::new(),
            max_depth: default_depth(),
            max_aliases: default_aliases(),
            max_root_fields: default_root_fields(),
            max_complexity: default_complexity(),
            introspection: false,
            max_tokens: default_tokens(),
            max_recursion: default_recursion(),
        }
    }
}

/// Checks a resource's `graphql` block (`at` is its field path; `route_ids` the resource's).
pub fn check(
    at: &str,
    limits: &GraphqlLimits,
    route_ids: &[&str],
    push: &mut dyn FnMut(String, &str),
) {
    for (i, id) in limits.routes.iter().enumerate() {
        if !route_ids.contains(&id.as_str()) {
            push(
                format!("{at}.routes[{i}]"),
                "names no route of this resource",
            );
        }
    }
    let ranges: [(&str, u32, u32, u32); 6] = [
        ("max_depth", limits.max_depth, 1, 100),
        ("max_aliases", limits.max_aliases, 0, 1000),
        ("max_root_fields", limits.max_root_fields, 1, 1000),
        ("max_complexity", limits.max_complexity, 1, 1_000_000),
        ("max_tokens", limits.max_tokens, 10, 1_000_000),
        ("max_recursion", limits.max_recursion, 4, 500),
    ];
    for (name, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            push(
                format!("{at}.{name}"),
                &format!("must be between {min} and {max}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_validated() {
        let limits: GraphqlLimits = serde_json::from_str("{}").expect("defaults");
        assert_eq!(limits, GraphqlLimits::default());
        let bad = GraphqlLimits {
            routes: vec!["gql".into(), "nope".into()],
            max_depth: 0,
            max_recursion: 1000,
            ..GraphqlLimits::default()
        };
        let mut paths = Vec::new();
        check("resources[0].graphql", &bad, &["gql"], &mut |p, _| {
            paths.push(p)
        });
        assert_eq!(
            paths,
            [
                "resources[0].graphql.routes[1]",
                "resources[0].graphql.max_depth",
                "resources[0].graphql.max_recursion"
            ]
        );
        assert!(serde_json::from_str::<GraphqlLimits>(r#"{"depth": 3}"#).is_err());
    }
}
