//! Object-level authorization (OWASP API1): a route's ownership rules, compiled once per policy
//! and checked against each request once its body is read. A rule takes one field of the
//! request — a path template parameter (percent-decoded), every occurrence of a query
//! parameter (form-decoded) or a JSON body field (a string or a number) — and requires it to
//! equal a claim of the caller's token (a string or a number), or to be one of its members
//! when the claim is an array. A missing field breaks the rule unless the rule is `optional`.
//! A refusal names the field and the claim, never their values.

use serde_json::{Map, Value};

use sase_model::ownership::{FieldLocation, OwnershipRule};
use sase_model::policy::PathTemplate;

/// Why a request breaks an ownership rule: the names of the field and the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipViolation {
    /// The field, e.g. ``path parameter `accountId` ``.
    pub field: String,
    /// The claim it had to equal.
    pub claim: String,
}

impl std::fmt::Display for OwnershipViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} does not match claim `{}`", self.field, self.claim)
    }
}

/// The ownership rules of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnershipRules {
    rules: Vec<OwnershipRule>,
    template: PathTemplate,
}

impl OwnershipRules {
    /// Compiles a route's rules; `None` when it has none.
    pub(crate) fn compile(rules: &[OwnershipRule], template: &PathTemplate) -> Option<Self> {
        (!rules.is_empty()).then(|| OwnershipRules {
            rules: rules.to_vec(),
            template: template.clone(),
        })
    }

    /// Whether some rule reads the body.
    pub(crate) fn reads_body(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.location(), FieldLocation::Body(_)))
    }

    /// Checks every rule. `body` is the parsed JSON body (`None` when the body is empty or not
    /// JSON); `claims` the caller's (`None`: no token, every rule fails).
    pub(crate) fn check(
        &self,
        path: &str,
        query: Option<&str>,
        body: Option<&Value>,
        claims: Option<&Map<String, Value>>,
    ) -> Result<(), OwnershipViolation> {
        for rule in &self.rules {
            let location = rule.location();
            let violation = || OwnershipViolation {
                field: location.to_string(),
                claim: rule.claim.clone(),
            };
            let claim = claims.and_then(|c| c.get(&rule.claim));
            let values: Vec<String> = match location {
                FieldLocation::Path(name) => {
                    let params = self.template.matches(path).ok_or_else(violation)?;
                    let raw = params.get(name).ok_or_else(violation)?;
                    vec![percent_decode(raw, false).ok_or_else(violation)?]
                }
                FieldLocation::Query(name) => {
                    let mut values = Vec::new();
                    for pair in query.unwrap_or("").split('&') {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        if percent_decode(k, true).as_deref() == Some(name) {
                            values.push(percent_decode(v, true).ok_or_else(violation)?);
                        }
                    }
                    values
                }
                FieldLocation::Body(pointer) => match body.and_then(|b| b.pointer(pointer)) {
                    None => Vec::new(),
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Number(n)) => vec![n.to_string()],
                    // An object, array, boolean or null cannot name an object the caller owns.
                    Some(_) => return Err(violation()),
                },
            };
            if values.is_empty() {
                if rule.optional {
                    continue;
                }
                return Err(violation());
            }
            if !values.iter().all(|v| claim_matches(claim, v)) {
                return Err(violation());
            }
        }
        Ok(())
    }
}

/// Whether `value` equals the claim (string or number) or is a member of it (array).
fn claim_matches(claim: Option<&Value>, value: &str) -> bool {
    let scalar = |c: &Value| match c {
        Value::String(s) => s == value,
        Value::Number(n) => n.to_string() == value,
        _ => false,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(scalar),
        Some(c) => scalar(c),
        None => false,
    }
}

/// Percent-decodes `s` (and `+` as a space for form-encoded query parts); `None` when an
/// escape is malformed or the result is not UTF-8 (such a field never matches).
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(yaml: &str, template: &str) -> OwnershipRules {
        let rules: Vec<OwnershipRule> = serde_yaml_like(yaml);
        OwnershipRules::compile(&rules, &PathTemplate::parse(template).expect("template"))
            .expect("rules")
    }

    fn serde_yaml_like(json_text: &str) -> Vec<OwnershipRule> {
        serde_json::from_str(json_text).expect("rules json")
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn path_parameter_must_equal_the_claim() {
        let r = rules(
            r#"[{"path": "accountId", "claim": "sub"}]"#,
            "/accounts/{accountId}",
        );
        let alice = claims(json!({"sub": "alice"}));
        assert_eq!(r.check("/accounts/alice", None, None, Some(&alice)), Ok(()));
        // Percent-encoding does not hide the value.
        assert_eq!(
            r.check("/accounts/al%69ce", None, None, Some(&alice)),
            Ok(())
        );
        let err = r
            .check("/accounts/bob", None, None, Some(&alice))
            .expect_err("not owned");
        assert_eq!(
            err.to_string(),
            "path parameter `accountId` does not match claim `sub`"
        );
        assert!(!err.to_string().contains("bob") && !err.to_string().contains("alice"));
        // No token, no claim, a malformed escape: refused.
        assert!(r.check("/accounts/alice", None, None, None).is_err());
        assert!(r
            .check(
                "/accounts/alice",
                None,
                None,
                Some(&claims(json!({"tenant": "alice"})))
            )
            .is_err());
        assert!(r.check("/accounts/%zz", None, None, Some(&alice)).is_err());
    }

    #[test]
    fn query_parameters_all_occurrences_must_match() {
        let r = rules(r#"[{"query": "tenant", "claim": "tenant"}]"#, "/orders");
        let c = claims(json!({"sub": "alice", "tenant": "acme corp"}));
        assert_eq!(
            r.check("/orders", Some("tenant=acme+corp&x=1"), None, Some(&c)),
            Ok(())
        );
        assert_eq!(
            r.check("/orders", Some("tenant=acme%20corp"), None, Some(&c)),
            Ok(())
        );
        // Parameter pollution: a second occurrence naming someone else.
        assert!(r
            .check(
                "/orders",
                Some("tenant=acme+corp&tenant=globex"),
                None,
                Some(&c)
            )
            .is_err());
        // Missing (required by default).
        assert!(r.check("/orders", Some("x=1"), None, Some(&c)).is_err());
        assert!(r.check("/orders", None, None, Some(&c)).is_err());
        // An encoded parameter name is the same parameter.
        assert!(r
            .check("/orders", Some("tenan%74=globex"), None, Some(&c))
            .is_err());
    }

    #[test]
    fn body_fields_numbers_arrays_and_optional_rules() {
        let r = rules(
            r#"[{"body": "/owner/id", "claim": "uid"}, {"body": "/team", "claim": "teams", "optional": true}]"#,
            "/things",
        );
        let c = claims(json!({"sub": "alice", "uid": 42, "teams": ["red", "blue"]}));
        let body = json!({"owner": {"id": 42}, "team": "blue"});
        assert_eq!(r.check("/things", None, Some(&body), Some(&c)), Ok(()));
        let body = json!({"owner": {"id": "42"}});
        assert_eq!(
            r.check("/things", None, Some(&body), Some(&c)),
            Ok(()),
            "optional team"
        );
        let err = r
            .check(
                "/things",
                None,
                Some(&json!({"owner": {"id": 42}, "team": "green"})),
                Some(&c),
            )
            .expect_err("not a member");
        assert_eq!(err.field, "body field `/team`");
        assert_eq!(err.claim, "teams");
        assert!(r
            .check(
                "/things",
                None,
                Some(&json!({"owner": {"id": 7}})),
                Some(&c)
            )
            .is_err());
        assert!(r
            .check(
                "/things",
                None,
                Some(&json!({"owner": {"id": [42]}})),
                Some(&c)
            )
            .is_err());
        assert!(
            r.check("/things", None, Some(&json!({})), Some(&c))
                .is_err(),
            "required"
        );
        assert!(
            r.check("/things", None, None, Some(&c)).is_err(),
            "no JSON body"
        );
        assert!(r.reads_body());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c", false).as_deref(), Some("a/b+c"));
        assert_eq!(percent_decode("a%2fb+c", true).as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%", false), None);
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
        assert_eq!(percent_decode("%e2%82%ac", false).as_deref(), Some("€"));
    }
}
