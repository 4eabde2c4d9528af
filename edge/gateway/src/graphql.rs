//! GraphQL limits: a GraphQL request (JSON `{"query", "operationName", "variables"}` body,
//! `application/graphql` body or `GET ?query=`) is parsed with `apollo-parser` under the
//! API's token and recursion limits, and the operation that would run is measured with its
//! fragments inlined: depth, aliases (whole document), root fields, complexity (each field 1;
//! a `first` / `last` / `limit` integer argument, literal or variable, multiplies its
//! selection's cost) and introspection (`__schema`, `__type`). Any parse error, a batched
//! request, an unknown or ambiguous operation, a fragment cycle or a limit exceeded refuses the
//! request with `graphql_refused` and a detail naming the limit (never the query).

use std::collections::BTreeMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::Parser;
use serde_json::{Map, Value};

use sase_model::graphql::GraphqlLimits;

use crate::ownership::percent_decode;

/// Why a GraphQL request was refused (the detail of a `graphql_refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlViolation(pub String);

impl std::fmt::Display for GraphqlViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(why: impl Into<String>) -> Result<T, GraphqlViolation> {
    Err(GraphqlViolation(why.into()))
}

/// What was measured of an accepted operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphqlCost {
    /// Deepest selection nesting.
    pub depth: u32,
    /// Aliased fields in the document.
    pub aliases: u32,
    /// Fields at the operation's root.
    pub root_fields: u32,
    /// Complexity.
    pub complexity: u64,
}

/// The GraphQL limits of a resource, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphqlCheck {
    limits: GraphqlLimits,
}

/// Multipliers above this count as this (a `first: 1000000000` is refused anyway).
const MAX_MULTIPLIER: u64 = 1_000_000;

impl GraphqlCheck {
    pub(crate) fn new(limits: &GraphqlLimits) -> GraphqlCheck {
        GraphqlCheck {
            limits: limits.clone(),
        }
    }

    /// Whether the limits apply to `route`.
    pub(crate) fn covers(&self, route: &str) -> bool {
        self.limits.routes.is_empty() || self.limits.routes.iter().any(|r| r == route)
    }

    /// Extracts the GraphQL request from an HTTP request and checks it.
    pub(crate) fn check_http(
        &self,
        method: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<GraphqlCost, GraphqlViolation> {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        let (document, operation, variables) = if method == "GET" {
            let mut document = None;
            let mut operation = None;
            let mut variables = Map::new();
            for pair in query.unwrap_or("").split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_decode(v, true);
                match percent_decode(k, true).as_deref() {
                    Some("query") if document.is_some() => {
                        return refuse("more than one `query` parameter")
                    }
                    Some("query") => document = v,
                    Some("operationName") => operation = v,
                    Some("variables") => {
                        if let Some(Value::Object(m)) =
                            v.and_then(|v| serde_json::from_str::<Value>(&v).ok())
                        {
                            variables = m;
                        }
                    }
                    _ => {}
                }
            }
            (document, operation, variables)
        } else if query.unwrap_or("").split('&').any(|p| {
            percent_decode(p.split('=').next().unwrap_or(""), true).as_deref() == Some("query")
        }) {
            // Some servers read `?query=` on a POST too, before the body: the edge would judge
            // one document and the server run another.
            return refuse("a `query` parameter in the URL of a POST");
        } else if media.as_deref() == Some("application/graphql") {
            let text = std::str::from_utf8(body)
                .map_err(|_| GraphqlViolation("the document is not UTF-8".into()))?;
            (Some(text.to_string()), None, Map::new())
        } else {
            match crate::strict_json::parse(body) {
                Some(Value::Object(mut m)) => {
                    let document = match m.remove("query") {
                        Some(Value::String(q)) => Some(q),
                        _ => None,
                    };
                    let operation = match m.remove("operationName") {
                        Some(Value::String(o)) => Some(o),
                        _ => None,
                    };
                    let variables = match m.remove("variables") {
                        Some(Value::Object(v)) => v,
                        _ => Map::new(),
                    };
                    (document, operation, variables)
                }
                Some(Value::Array(_)) => return refuse("batched requests are not allowed"),
                _ => {
                    return refuse(
                        "the body is not a GraphQL request (JSON without repeated members)",
                    )
                }
            }
        };
        let Some(document) = document else {
            return refuse("no `query` in the request");
        };
        self.check(&document, operation.as_deref(), &variables)
    }

    /// Checks one document.
    pub(crate) fn check(
        &self,
        document: &str,
        operation_name: Option<&str>,
        variables: &Map<String, Value>,
    ) -> Result<GraphqlCost, GraphqlViolation> {
        let limits = &self.limits;
        let tree = Parser::new(document)
            .token_limit(usize::try_from(limits.max_tokens).unwrap_or(usize::MAX))
            .recursion_limit(usize::try_from(limits.max_recursion).unwrap_or(usize::MAX))
            .parse();
        if let Some(err) = tree.errors().next() {
            if err.is_limit() {
                return refuse(format!(
                    "parser limit reached ({}; max_tokens {}, max_recursion {})",
                    err.message(),
                    limits.max_tokens,
                    limits.max_recursion
                ));
            }
            return refuse("the document does not parse");
        }
        let doc = tree.document();
        let mut operations = Vec::new();
        let mut fragments = BTreeMap::new();
        let mut aliases: u32 = 0;
        for definition in doc.definitions() {
            match definition {
                cst::Definition::OperationDefinition(op) => operations.push(op),
                cst::Definition::FragmentDefinition(f) => {
                    let name = f
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| text(&n))
                        .unwrap_or_default();
                    if fragments.insert(name, f).is_some() {
                        return refuse("a fragment is defined twice");
                    }
                }
                // Type system definitions have no place in a request.
                _ => return refuse("the document defines types or directives"),
            }
        }
        for node in doc.syntax().descendants() {
            if let Some(field) = cst::Field::cast(node) {
                if field.alias().is_some() {
                    aliases = aliases.saturating_add(1);
                }
            }
        }
        if aliases > limits.max_aliases {
            return refuse(format!(
                "{aliases} aliases exceed max_aliases {}",
                limits.max_aliases
            ));
        }
        let op = match operation_name {
            Some(wanted) => operations
                .into_iter()
                .find(|op| op.name().is_some_and(|n| text(&n) == wanted)),
            None if operations.len() == 1 => operations.pop(),
            None => return refuse("several operations and no operationName"),
        };
        let Some(op) = op else {
            return refuse("no such operation");
        };
        let Some(selection) = op.selection_set() else {
            return refuse("the operation selects nothing");
        };
        let mut walker = Walker {
            fragments: &fragments,
            variables,
            limits,
            memo: BTreeMap::new(),
            frames: 0,
        };
        let root = walker.selection_set(&selection, &mut Vec::new())?;
        if root.depth > limits.max_depth {
            return refuse(format!(
                "depth {} exceeds max_depth {}",
                root.depth, limits.max_depth
            ));
        }
        if root.root_fields > limits.max_root_fields {
            return refuse(format!(
                "{} root fields exceed max_root_fields {}",
                root.root_fields, limits.max_root_fields
            ));
        }
        if root.cost > u64::from(limits.max_complexity) {
            return refuse(format!(
                "complexity {} exceeds max_complexity {}",
                root.cost, limits.max_complexity
            ));
        }
        if root.introspection && !limits.introspection {
            return refuse("introspection is disabled");
        }
        Ok(GraphqlCost {
            depth: root.depth,
            aliases,
            root_fields: root.root_fields,
            complexity: root.cost,
        })
    }
}

fn text(name: &cst::Name) -> String {
    name.syntax().text().to_string()
}

/// The measure of a selection set.
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    depth: u32,
    cost: u64,
    root_fields: u32,
    introspection: bool,
}

struct Walker<'a> {
    fragments: &'a BTreeMap<String, cst::FragmentDefinition>,
    variables: &'a Map<String, Value>,
    limits: &'a GraphqlLimits,
    /// Fragments already measured (each is measured once, however often it is spread).
    memo: BTreeMap<String, Measure>,
    /// Nesting of this walk (fields and fragment spreads), bounded like the parser.
    frames: u32,
}

impl Walker<'_> {
    fn selection_set(
        &mut self,
        set: &cst::SelectionSet,
        stack: &mut Vec<String>,
    ) -> Result<Measure, GraphqlViolation> {
        self.frames += 1;
        if self.frames > self.limits.max_recursion || self.frames > 4 * self.limits.max_depth + 8 {
            return refuse(format!(
                "nesting exceeds max_depth {}",
                self.limits.max_depth
            ));
        }
        let mut total = Measure::default();
        for selection in set.selections() {
            let m = match selection {
                cst::Selection::Field(field) => {
                    let name = field.name().map(|n| text(&n)).unwrap_or_default();
                    let mut m = Measure {
                        depth: 1,
                        cost: 1,
                        root_fields: 1,
                        introspection: name == "__schema" || name == "__type",
                    };
                    if let Some(sub) = field.selection_set() {
                        let inner = self.selection_set(&sub, stack)?;
                        let factor = self.multiplier(&field);
                        m.depth = inner.depth.saturating_add(1);
                        m.cost = inner.cost.saturating_mul(factor).saturating_add(1);
                        m.introspection |= inner.introspection;
                    }
                    m
                }
                cst::Selection::InlineFragment(inline) => match inline.selection_set() {
                    Some(sub) => self.selection_set(&sub, stack)?,
                    None => Measure::default(),
                },
                cst::Selection::FragmentSpread(spread) => {
                    let name = spread
                        .fragment_name()
                        .and_then(|n| n.name())
                        .map(|n| text(&n))
                        .unwrap_or_default();
                    self.fragment(&name, stack)?
                }
            };
            total.depth = total.depth.max(m.depth);
            total.cost = total.cost.saturating_add(m.cost);
            total.root_fields = total.root_fields.saturating_add(m.root_fields);
            total.introspection |= m.introspection;
            if total.cost > u64::from(self.limits.max_complexity) {
                // Stop early: the answer is known.
                break;
            }
        }
        self.frames -= 1;
        Ok(total)
    }

    fn fragment(
        &mut self,
        name: &str,
        stack: &mut Vec<String>,
    ) -> Result<Measure, GraphqlViolation> {
        if let Some(m) = self.memo.get(name) {
            return Ok(*m);
        }
        if stack.iter().any(|s| s == name) {
            return refuse("fragments spread each other in a cycle");
        }
        let Some(set) = self
            .fragments
            .get(name)
            .and_then(cst::FragmentDefinition::selection_set)
        else {
            return refuse("a spread fragment is not defined");
        };
        stack.push(name.to_string());
        let m = self.selection_set(&set, stack)?;
        stack.pop();
        self.memo.insert(name.to_string(), m);
        Ok(m)
    }

    /// The list size a field asks for: its `first`, `last` or `limit` integer argument
    /// (literal or variable), 1 without one.
    fn multiplier(&self, field: &cst::Field) -> u64 {
        let Some(arguments) = field.arguments() else {
            return 1;
        };
        let mut factor = 1u64;
        for argument in arguments.arguments() {
            let name = argument.name().map(|n| text(&n)).unwrap_or_default();
            if !matches!(name.as_str(), "first" | "last" | "limit") {
                continue;
            }
            let n = match argument.value() {
                Some(cst::Value::IntValue(v)) => v.syntax().text().to_string().parse::<u64>().ok(),
                Some(cst::Value::Variable(v)) => v
                    .name()
                    .map(|n| text(&n))
                    .and_then(|n| self.variables.get(&n))
                    .and_then(Value::as_u64),
                _ => None,
            };
            factor = factor.max(n.unwrap_or(1).clamp(1, MAX_MULTIPLIER));
        }
        factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(limits: GraphqlLimits, doc: &str) -> Result<GraphqlCost, GraphqlViolation> {
        GraphqlCheck::new(&limits).check(doc, None, &Map::new())
    }

    fn limits() -> GraphqlLimits {
        GraphqlLimits {
            max_depth: 4,
            max_aliases: 2,
            max_root_fields: 3,
            max_complexity: 50,
            ..GraphqlLimits::default()
        }
    }

    #[test]
    fn a_plain_query_is_measured() {
        let cost = check(
            limits(),
            "{ user(id: 1) { name friends(first: 5) { name } } }",
        )
        .expect("fine");
        assert_eq!(
            cost,
            GraphqlCost {
                depth: 3,
                aliases: 0,
                root_fields: 1,
                complexity: 1 + (1 + (5 + 1))
            }
        );
    }

    #[test]
    fn each_limit_is_named_when_exceeded() {
        let deep = "{ a { b { c { d { e } } } } }";
        assert_eq!(
            check(limits(), deep).expect_err("deep").0,
            "depth 5 exceeds max_depth 4"
        );
        let aliases = "{ a: user { name } b: user { name } c: user { name } }";
        assert_eq!(
            check(limits(), aliases).expect_err("aliases").0,
            "3 aliases exceed max_aliases 2"
        );
        let wide = "{ a b c d }";
        assert_eq!(
            check(limits(), wide).expect_err("wide").0,
            "4 root fields exceed max_root_fields 3"
        );
        let costly = "{ users(first: 100) { name } }";
        assert!(check(limits(), costly)
            .expect_err("costly")
            .0
            .contains("exceeds max_complexity 50"));
        let intro = "{ __schema { types { name } } }";
        assert_eq!(
            check(limits(), intro).expect_err("introspection").0,
            "introspection is disabled"
        );
        let allowed = GraphqlLimits {
            introspection: true,
            ..limits()
        };
        assert!(check(allowed, intro).is_ok());
        assert!(check(limits(), "{ __typename }").is_ok());
    }

    #[test]
    fn fragments_are_inlined_and_cycles_refused() {
        let doc =
            "query Q { ...A } fragment A on Query { a { ...B } } fragment B on T { b { c { d } } }";
        assert_eq!(check(limits(), doc).expect("depth 4").depth, 4);
        let deeper = doc.replace("c { d }", "c { d { e } }");
        assert!(check(limits(), &deeper).is_err());
        let cycle = "{ ...A } fragment A on Query { a { ...B } } fragment B on T { ...A }";
        assert_eq!(
            check(limits(), cycle).expect_err("cycle").0,
            "fragments spread each other in a cycle"
        );
        let hidden = "{ ...I } fragment I on Query { __schema { types { name } } }";
        assert_eq!(
            check(limits(), hidden).expect_err("hidden introspection").0,
            "introspection is disabled"
        );
        assert!(check(limits(), "{ ...Missing }").is_err());
    }

    #[test]
    fn variables_count_in_complexity() {
        let c = GraphqlCheck::new(&limits());
        let doc = "query Q($n: Int) { users(first: $n) { name } }";
        let mut vars = Map::new();
        vars.insert("n".into(), Value::from(3));
        assert_eq!(c.check(doc, None, &vars).expect("small").complexity, 4);
        vars.insert("n".into(), Value::from(1_000_000_000u64));
        assert!(c.check(doc, None, &vars).is_err());
    }

    #[test]
    fn parser_limits_and_garbage() {
        let tight = GraphqlLimits {
            max_tokens: 20,
            ..GraphqlLimits::default()
        };
        let long = format!("{{ {} }}", "a ".repeat(100));
        assert!(check(tight, &long)
            .expect_err("tokens")
            .0
            .starts_with("parser limit reached"));
        let nested = format!("{}{}", "{ a ".repeat(200), "}".repeat(200));
        let err = check(GraphqlLimits::default(), &nested).expect_err("recursion");
        assert!(err.0.starts_with("parser limit reached"), "{err}");
        assert!(check(limits(), "{ a ").is_err());
        assert!(check(limits(), "type T { a: Int }").is_err());
        assert!(check(limits(), "query A { a } query B { b }").is_err());
    }

    #[test]
    fn http_forms() {
        let c = GraphqlCheck::new(&limits());
        let json = br#"{"query": "query Q { a }", "operationName": "Q"}"#;
        assert!(c
            .check_http("POST", None, Some("application/json"), json)
            .is_ok());
        assert!(c
            .check_http(
                "POST",
                None,
                Some("application/json"),
                br#"[{"query": "{ a }"}]"#
            )
            .is_err());
        assert!(c
            .check_http("POST", None, Some("application/json"), b"{}")
            .is_err());
        assert!(c
            .check_http(
                "POST",
                None,
                Some("application/graphql; charset=utf-8"),
                b"{ a b }"
            )
            .is_ok());
        assert!(c
            .check_http("GET", Some("query=%7B+a+%7D"), None, b"")
            .is_ok());
        // A second document where another server might look, or a repeated member.
        assert!(c
            .check_http(
                "POST",
                Some("query=%7B+a+%7D"),
                Some("application/json"),
                json
            )
            .is_err());
        assert!(c
            .check_http(
                "POST",
                None,
                Some("application/json"),
                br#"{"query": "{ a }", "query": "{ a { b { c { d { e } } } } }"}"#
            )
            .is_err());
        assert!(c
            .check_http("GET", Some("query=%7B+a+%7D&query=%7Bb%7D"), None, b"")
            .is_err());
        assert!(c.check_http("GET", Some("x=1"), None, b"").is_err());
    }
}
