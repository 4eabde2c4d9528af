//! The policy language: what a tenant's edges enforce.
//!
//! A policy lists JWT issuers and `http` resources. Each resource has an upstream, the issuers
//! it trusts and routes (methods + path template + required scopes and groups); anything not
//! listed is refused (deny by default). [`Policy::parse_json`] / [`Policy::parse_yaml`] turn text
//! into a validated value or a list of [`ValidationError`]s, each with the path of the offending
//! field (`resources[0].routes[1].path`) and why it is wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A whole tenant policy, as signed into a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// JWT issuers that resources may trust, by id.
    #[serde(default)]
    pub issuers: Vec<JwtIssuer>,
    /// Named groups of identities (subjects); routes may require membership.
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    /// Protected HTTP resources.
    #[serde(default)]
    pub resources: Vec<HttpResource>,
    /// Flow limits (API6) and the store of shared rate-limit budgets; see [`crate::limits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::PolicyLimits>,
    /// QUIC (HTTP/3) handling per site, resource or server name; see [`crate::quic`]
    /// (absent: no UDP listener, `Alt-Svc` untouched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic: Option<crate::quic::QuicPolicy>,
    /// ZTNA tunnel peers (WireGuard keys bound to identities, tunnel addresses, packet rules);
    /// see [`crate::tunnel`] (absent: no peer may connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::tunnel::TunnelPolicy>,
}

/// A group of identities, by subject (`sub` claim). Tokens may also carry group names in a
/// `groups` claim; either counts as membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Subjects that belong to the group.
    #[serde(default)]
    pub members: Vec<String>,
}

/// A trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// Identifier used by resources to refer to this issuer.
    pub id: String,
    /// Expected `iss` claim, exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer. The token's `alg` header never chooses the
    /// algorithm: it must be one of these, and `none` and HMAC algorithms cannot be listed.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where the verification keys come from.
    pub keys: KeySource,
    /// Clock leeway for `exp` and `nbf`, in seconds (default 30, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u32,
    /// Longest token accepted from this issuer, in bytes of the compact serialization
    /// (default [`DEFAULT_MAX_TOKEN_BYTES`], between [`MIN_TOKEN_BYTES_LIMIT`] and
    /// [`MAX_TOKEN_BYTES_LIMIT`]). Longer tokens are refused before their signature is checked.
    #[serde(
        default = "default_max_token_bytes",
        skip_serializing_if = "is_default_max_token_bytes"
    )]
    pub max_token_bytes: u32,
}

fn default_leeway() -> u32 {
    30
}

/// Default of [`JwtIssuer::max_token_bytes`].
pub const DEFAULT_MAX_TOKEN_BYTES: u32 = 8192;
/// Smallest value [`JwtIssuer::max_token_bytes`] may take.
pub const MIN_TOKEN_BYTES_LIMIT: u32 = 256;
/// Largest value [`JwtIssuer::max_token_bytes`] may take (the edge refuses longer bearer
/// tokens whatever the issuer).
pub const MAX_TOKEN_BYTES_LIMIT: u32 = 65_536;

fn default_max_token_bytes() -> u32 {
    DEFAULT_MAX_TOKEN_BYTES
}

fn is_default_max_token_bytes(v: &u32) -> bool {
    *v == DEFAULT_MAX_TOKEN_BYTES
}

/// The asymmetric JWS algorithms the gateway accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// Verification keys of an issuer: exactly one of `jwks_url` or `jwks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// Fetch a JWK set over HTTPS (or HTTP on loopback) and cache it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Keys written into the policy as a JWK set (`{"keys": [...]}`), kept as JSON so that the
    /// policy stays independent of any JWK library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// With `jwks_url`: how often the edge fetches the JWK set again in the background, in
    /// seconds (default [`DEFAULT_JWKS_REFRESH_SECONDS`], between 30 and 86400). A failed
    /// refresh is retried every 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_seconds: Option<u32>,
    /// With `jwks_url`: how long the keys of the last successful fetch may still be used once a
    /// refresh is due and the JWKS endpoint cannot be reached, in seconds (default
    /// [`DEFAULT_JWKS_MAX_STALE_SECONDS`], at most [`MAX_JWKS_MAX_STALE_SECONDS`]). After that,
    /// tokens of the issuer are refused (`token_keys_unavailable`) until a fetch succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale_seconds: Option<u32>,
}

/// Default of [`KeySource::refresh_seconds`] (5 minutes).
pub const DEFAULT_JWKS_REFRESH_SECONDS: u32 = 300;
/// Default of [`KeySource::max_stale_seconds`] (1 hour).
pub const DEFAULT_JWKS_MAX_STALE_SECONDS: u32 = 3600;
/// Largest value of [`KeySource::max_stale_seconds`] (24 hours).
pub const MAX_JWKS_MAX_STALE_SECONDS: u32 = 86_400;

impl KeySource {
    /// The background refresh interval in effect, in seconds.
    pub fn refresh_interval_seconds(&self) -> u32 {
        self.refresh_seconds.unwrap_or(DEFAULT_JWKS_REFRESH_SECONDS)
    }

    /// How long fetched keys may be served past a due refresh, in seconds.
    pub fn max_stale(&self) -> u32 {
        self.max_stale_seconds
            .unwrap_or(DEFAULT_JWKS_MAX_STALE_SECONDS)
    }
}

/// A protected HTTP resource published by the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpResource {
    /// Unique name, used in audit events.
    pub name: String,
    /// Host names (the `Host` header without port) this resource answers; empty means any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Upstream base URL (`http://host:port` or `https://…`).
    pub upstream: String,
    /// Ids of issuers whose tokens this resource accepts.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Routes; a request matching none is refused with 404.
    pub routes: Vec<Route>,
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: u64,
    /// Web application firewall (OWASP CRS) settings; on in `block` mode at paranoia level 1
    /// when omitted.
    #[serde(default)]
    pub waf: WafSettings,
    /// The API's contract (an inline OpenAPI document) and response hardening (scrubbing,
    /// error rewriting, security headers, CORS); see [`crate::api_contract`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<crate::api_contract::ApiSettings>,
    /// Rate limits, size limits and timeouts (API4); see [`crate::limits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// Egress allowlist for the upstream and URL-valued fields; see [`crate::egress`] (without
    /// it the upstream is trusted as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressPolicy>,
    /// GraphQL limits; see [`crate::graphql`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<crate::graphql::GraphqlLimits>,
    /// Internal token sent upstream instead of the client's; see [`crate::upstream_trust`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_translation: Option<crate::upstream_trust::TokenTranslation>,
    /// TLS (and mTLS) towards an `https://` upstream; see [`crate::upstream_trust`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<crate::upstream_trust::UpstreamTls>,
    /// mTLS client certificates on the listener; see [`crate::upstream_trust`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificates: Option<crate::upstream_trust::ClientCertificates>,
}

fn default_body_limit() -> u64 {
    1024 * 1024
}

/// One operation (or set of operations) on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Identifier unique within the resource, used in audit events.
    pub id: String,
    /// Methods this route allows (explicit; there is no wildcard).
    pub methods: Vec<Method>,
    /// Path template: `/literal/{param}/literal`. A `{param}` matches one non-empty segment.
    pub path: String,
    /// Scopes the token must carry (all of them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Groups the caller must belong to (all of them).
    #[serde(default)]
    pub groups: Vec<String>,
    /// When true no token is needed (and `scopes` / `groups` must be empty).
    #[serde(default)]
    pub public: bool,
    /// Retired (OWASP API9): still served, but calls to it are listed as zombie endpoints in
    /// the API inventory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// WAF settings for this route, overriding the resource's field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waf: Option<WafOverride>,
    /// Rate limits, size limits and timeouts of this route (API4); see [`crate::limits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::Limits>,
    /// Object ownership rules (OWASP API1); see [`crate::ownership`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner: Vec<crate::ownership::OwnershipRule>,
    /// Request fields holding URLs the upstream fetches, checked against the egress allowlist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url_fields: Vec<crate::ownership::UrlField>,
}

/// What the WAF does with a request that reaches the anomaly threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WafMode {
    /// No inspection.
    Off,
    /// Inspect and record findings, never block.
    Detect,
    /// Inspect and refuse (403) requests over the threshold.
    #[default]
    Block,
}

/// What happens when the WAF cannot keep up (its bounded pool is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverloadAction {
    /// Refuse with 503 (default).
    #[default]
    FailClosed,
    /// Forward uninspected (audited as such).
    FailOpen,
}

/// One rule exclusion. Exactly one of `rule_id` or `tag`; `target` (with `rule_id` only)
/// removes a single variable from that rule instead of the whole rule, e.g.
/// `ARGS:password` or `REQUEST_COOKIES:session`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleExclusion {
    /// CRS rule id, e.g. 942100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    /// CRS rule tag, e.g. `attack-sqli`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Variable to exclude from the rule (`COLLECTION:name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// WAF settings of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafSettings {
    /// `off`, `detect` or `block` (default `block`).
    #[serde(default)]
    pub mode: WafMode,
    /// CRS paranoia level 1-4 (default 1).
    #[serde(default = "default_paranoia")]
    pub paranoia_level: u8,
    /// Inbound anomaly score at which a request is blocked (default 5).
    #[serde(default = "default_inbound_threshold")]
    pub inbound_threshold: u32,
    /// Outbound anomaly score at which a response is blocked (default 4).
    #[serde(default = "default_outbound_threshold")]
    pub outbound_threshold: u32,
    /// Rules or targets removed for this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<RuleExclusion>,
    /// Bytes of request body the WAF inspects (default 1 MiB); a longer body is refused (413).
    #[serde(default = "default_waf_body_limit")]
    pub request_body_limit: u64,
    /// Inspect response headers and bodies too (default false).
    #[serde(default)]
    pub inspect_responses: bool,
    /// What to do when the WAF is overloaded (default `fail_closed`).
    #[serde(default)]
    pub on_overload: OverloadAction,
    /// The methods the route accepts: never written in a policy, filled in by
    /// [`Policy::waf_scopes`] from the route. The CRS method rule (911100) then allows exactly
    /// these (the gateway refuses any other method with 405 first); empty leaves the CRS
    /// default (GET, HEAD, POST, OPTIONS), which would refuse a REST route's PUT or DELETE.
    #[serde(skip)]
    pub route_methods: Vec<Method>,
}

impl Default for WafSettings {
    fn default() -> WafSettings {
        WafSettings {
            mode: WafMode::Block,
            paranoia_level: default_paranoia(),
            inbound_threshold: default_inbound_threshold(),
            outbound_threshold: default_outbound_threshold(),
            exclusions: Vec::new(),
            request_body_limit: default_waf_body_limit(),
            inspect_responses: false,
            on_overload: OverloadAction::FailClosed,
            route_methods: Vec::new(),
        }
    }
}

fn default_paranoia() -> u8 {
    1
}
fn default_inbound_threshold() -> u32 {
    5
}
fn default_outbound_threshold() -> u32 {
    4
}
fn default_waf_body_limit() -> u64 {
    1024 * 1024
}

/// Route-level WAF overrides; unset fields inherit the resource's settings. Exclusions add to
/// the resource's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WafOverride {
    /// Mode for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WafMode>,
    /// Paranoia level for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paranoia_level: Option<u8>,
    /// Inbound threshold for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_threshold: Option<u32>,
    /// Outbound threshold for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_threshold: Option<u32>,
    /// Extra exclusions for this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<RuleExclusion>,
    /// Response inspection for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect_responses: Option<bool>,
}

impl WafSettings {
    /// The settings in force for a route: the resource's, overridden by the route's.
    pub fn for_route(&self, route: Option<&WafOverride>) -> WafSettings {
        let Some(o) = route else {
            return self.clone();
        };
        let mut out = self.clone();
        if let Some(v) = o.mode {
            out.mode = v;
        }
        if let Some(v) = o.paranoia_level {
            out.paranoia_level = v;
        }
        if let Some(v) = o.inbound_threshold {
            out.inbound_threshold = v;
        }
        if let Some(v) = o.outbound_threshold {
            out.outbound_threshold = v;
        }
        if let Some(v) = o.inspect_responses {
            out.inspect_responses = v;
        }
        out.exclusions.extend(o.exclusions.iter().cloned());
        out
    }
}

fn check_waf_values(
    at: &str,
    paranoia: Option<u8>,
    inbound: Option<u32>,
    outbound: Option<u32>,
    exclusions: &[RuleExclusion],
    push: &mut dyn FnMut(String, &str),
) {
    if paranoia.is_some_and(|p| !(1..=4).contains(&p)) {
        push(format!("{at}.paranoia_level"), "must be 1, 2, 3 or 4");
    }
    if inbound.is_some_and(|t| t == 0 || t > 10_000) {
        push(
            format!("{at}.inbound_threshold"),
            "must be between 1 and 10000",
        );
    }
    if outbound.is_some_and(|t| t == 0 || t > 10_000) {
        push(
            format!("{at}.outbound_threshold"),
            "must be between 1 and 10000",
        );
    }
    for (x, ex) in exclusions.iter().enumerate() {
        let at = format!("{at}.exclusions[{x}]");
        match (&ex.rule_id, &ex.tag, &ex.target) {
            (Some(id), None, _) if *id == 0 || *id > 9_999_999 => push(
                format!("{at}.rule_id"),
                "must be a rule id between 1 and 9999999",
            ),
            (Some(_), None, Some(target)) => {
                let ok = !target.is_empty()
                    && target.len() <= 256
                    && target.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'_' | b':' | b'-' | b'.' | b'[' | b']')
                    });
                if !ok {
                    push(
                        format!("{at}.target"),
                        "must be a variable such as ARGS:name or REQUEST_COOKIES:name",
                    );
                }
            }
            (Some(_), None, None) => {}
            (None, Some(tag), None) => {
                if tag.is_empty()
                    || tag.len() > 128
                    || !tag.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'.')
                    })
                {
                    push(format!("{at}.tag"), "must be a CRS tag such as attack-sqli");
                }
            }
            (None, Some(_), Some(_)) => push(
                format!("{at}.target"),
                "a target needs a rule_id, not a tag",
            ),
            (Some(_), Some(_), _) => push(at, "set either rule_id or tag, not both"),
            (None, None, _) => push(at, "set rule_id or tag"),
        }
    }
}

/// HTTP methods that routes can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl Method {
    /// The HTTP method token.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Parses an HTTP method token (case-sensitive, as HTTP says).
    pub fn from_http(method: &str) -> Option<Method> {
        Some(match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }
}

/// One problem found in a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// Path to the offending field, e.g. `resources[0].routes[1].path` (`.` for the document).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PolicyError(pub Vec<ValidationError>);

/// Largest policy document accepted, in bytes (2 MiB: room for inline OpenAPI documents; the
/// signed bundle, at most [`crate::bundle::MAX_BUNDLE_BYTES`], still holds it).
pub const MAX_POLICY_BYTES: usize = 2 * 1024 * 1024;

impl Policy {
    /// Parses and validates a JSON policy document.
    ///
    /// # Errors
    /// Every problem found, each with its field path.
    pub fn parse_json(text: &str) -> Result<Policy, PolicyError> {
        check_size(text)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let policy: Policy = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        de.end().map_err(|e| single(".", e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parses and validates a YAML policy document.
    ///
    /// # Errors
    /// Every problem found, each with its field path.
    pub fn parse_yaml(text: &str) -> Result<Policy, PolicyError> {
        check_size(text)?;
        let de = serde_yaml::Deserializer::from_str(text);
        let policy: Policy = serde_path_to_error::deserialize(de).map_err(path_error)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every rule that types alone cannot express.
    ///
    /// # Errors
    /// Every problem found, each with its field path.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut errors = Vec::new();
        let mut push = |path: String, message: &str| {
            errors.push(ValidationError {
                path,
                message: message.to_string(),
            })
        };

        let mut issuer_ids = BTreeSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let at = format!("issuers[{i}]");
            if !is_identifier(&issuer.id) {
                push(
                    format!("{at}.id"),
                    "must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
                );
            } else if !issuer_ids.insert(issuer.id.as_str()) {
                push(format!("{at}.id"), "duplicate issuer id");
            }
            if issuer.issuer.trim().is_empty() {
                push(format!("{at}.issuer"), "must not be empty");
            }
            if issuer.audiences.is_empty() {
                push(format!("{at}.audiences"), "must name at least one audience");
            }
            for (a, aud) in issuer.audiences.iter().enumerate() {
                if aud.trim().is_empty() {
                    push(format!("{at}.audiences[{a}]"), "must not be empty");
                }
            }
            if issuer.algorithms.is_empty() {
                push(
                    format!("{at}.algorithms"),
                    "must allow at least one algorithm",
                );
            }
            if issuer.leeway_seconds > 300 {
                push(format!("{at}.leeway_seconds"), "must be at most 300");
            }
            if !(MIN_TOKEN_BYTES_LIMIT..=MAX_TOKEN_BYTES_LIMIT).contains(&issuer.max_token_bytes) {
                push(
                    format!("{at}.max_token_bytes"),
                    "must be between 256 and 65536",
                );
            }
            if issuer.keys.jwks_url.is_none() {
                if issuer.keys.refresh_seconds.is_some() {
                    push(
                        format!("{at}.keys.refresh_seconds"),
                        "only applies to keys fetched from `jwks_url`",
                    );
                }
                if issuer.keys.max_stale_seconds.is_some() {
                    push(
                        format!("{at}.keys.max_stale_seconds"),
                        "only applies to keys fetched from `jwks_url`",
                    );
                }
            }
            if let Some(refresh) = issuer.keys.refresh_seconds {
                if !(30..=86_400).contains(&refresh) {
                    push(
                        format!("{at}.keys.refresh_seconds"),
                        "must be between 30 and 86400",
                    );
                }
            }
            if issuer.keys.max_stale() > MAX_JWKS_MAX_STALE_SECONDS {
                push(
                    format!("{at}.keys.max_stale_seconds"),
                    "must be at most 86400",
                );
            }
            match (&issuer.keys.jwks_url, &issuer.keys.jwks) {
                (Some(_), Some(_)) | (None, None) => push(
                    format!("{at}.keys"),
                    "set exactly one of `jwks_url` or `jwks`",
                ),
                (Some(url), None) => {
                    if !(url.starts_with("https://") || is_loopback_http(url)) {
                        push(
                            format!("{at}.keys.jwks_url"),
                            "must be an https:// URL (http:// only on loopback)",
                        );
                    }
                }
                (None, Some(set)) => match set.get("keys").and_then(|k| k.as_array()) {
                    Some(keys) if !keys.is_empty() => {
                        for (k, key) in keys.iter().enumerate() {
                            match key.get("kty").and_then(|v| v.as_str()) {
                                None => push(
                                    format!("{at}.keys.jwks.keys[{k}].kty"),
                                    "missing key type",
                                ),
                                Some("oct") => push(
                                    format!("{at}.keys.jwks.keys[{k}].kty"),
                                    "symmetric keys are not accepted",
                                ),
                                Some(_) => {}
                            }
                        }
                    }
                    _ => push(
                        format!("{at}.keys.jwks"),
                        "must be a JWK set with a non-empty \"keys\" array",
                    ),
                },
            }
        }

        for (name, group) in &self.groups {
            if !is_identifier(name) {
                push(format!("groups.{name}"), "group names must be identifiers");
            }
            for (m, member) in group.members.iter().enumerate() {
                if member.is_empty() {
                    push(format!("groups.{name}.members[{m}]"), "must not be empty");
                }
            }
        }

        let mut resource_names = BTreeSet::new();
        for (r, resource) in self.resources.iter().enumerate() {
            let at = format!("resources[{r}]");
            if !is_identifier(&resource.name) {
                push(
                    format!("{at}.name"),
                    "must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
                );
            } else if !resource_names.insert(resource.name.as_str()) {
                push(format!("{at}.name"), "duplicate resource name");
            }
            for (h, host) in resource.hosts.iter().enumerate() {
                if host.is_empty()
                    || host.len() > 253
                    || !host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    push(
                        format!("{at}.hosts[{h}]"),
                        "must be a DNS name without port",
                    );
                }
            }
            if let Err(why) = check_upstream(&resource.upstream) {
                push(format!("{at}.upstream"), why);
            }
            for (i, issuer) in resource.issuers.iter().enumerate() {
                if !issuer_ids.contains(issuer.as_str()) {
                    push(
                        format!("{at}.issuers[{i}]"),
                        "names no issuer defined in `issuers`",
                    );
                }
            }
            if resource.max_body_bytes == 0 || resource.max_body_bytes > 64 * 1024 * 1024 {
                push(
                    format!("{at}.max_body_bytes"),
                    "must be between 1 and 67108864",
                );
            }
            if resource.routes.is_empty() {
                push(format!("{at}.routes"), "must define at least one route");
            }
            let waf = &resource.waf;
            check_waf_values(
                &format!("{at}.waf"),
                Some(waf.paranoia_level),
                Some(waf.inbound_threshold),
                Some(waf.outbound_threshold),
                &waf.exclusions,
                &mut push,
            );
            if waf.request_body_limit == 0 || waf.request_body_limit > 64 * 1024 * 1024 {
                push(
                    format!("{at}.waf.request_body_limit"),
                    "must be between 1 and 67108864",
                );
            }
            crate::api_contract::check(&at, resource, &mut push);
            if let Some(egress) = &resource.egress {
                crate::egress::check(&format!("{at}.egress"), egress, &mut push);
            }
            if let Some(limits) = &resource.graphql {
                let ids: Vec<&str> = resource.routes.iter().map(|r| r.id.as_str()).collect();
                crate::graphql::check(&format!("{at}.graphql"), limits, &ids, &mut push);
            }
            crate::upstream_trust::check(&at, resource, &mut push);
            let mut route_ids = BTreeSet::new();
            let mut seen = BTreeSet::new();
            for (o, route) in resource.routes.iter().enumerate() {
                let at = format!("{at}.routes[{o}]");
                if !is_identifier(&route.id) {
                    push(
                        format!("{at}.id"),
                        "must be 1-64 characters of a-z, 0-9, '-', '_', '.'",
                    );
                } else if !route_ids.insert(route.id.as_str()) {
                    push(format!("{at}.id"), "duplicate route id in this resource");
                }
                if route.methods.is_empty() {
                    push(format!("{at}.methods"), "must name at least one method");
                }
                match PathTemplate::parse(&route.path) {
                    Ok(template) => {
                        for method in &route.methods {
                            if !seen.insert((*method, template.shape())) {
                                push(
                                    format!("{at}.path"),
                                    "another route of this resource already matches this method and path",
                                );
                            }
                        }
                    }
                    Err(why) => push(format!("{at}.path"), why),
                }
                if let Some(o) = &route.waf {
                    check_waf_values(
                        &format!("{at}.waf"),
                        o.paranoia_level,
                        o.inbound_threshold,
                        o.outbound_threshold,
                        &o.exclusions,
                        &mut push,
                    );
                }
                if route.public && (!route.scopes.is_empty() || !route.groups.is_empty()) {
                    push(
                        format!("{at}.public"),
                        "a public route cannot require scopes or groups",
                    );
                }
                crate::ownership::check_route(&at, route, &mut push);
                if !route.public
                    && resource.issuers.is_empty()
                    && resource.client_certificates.is_none()
                {
                    push(
                        format!("{at}.public"),
                        "route needs a token but its resource trusts no issuer",
                    );
                }
                for (s, scope) in route.scopes.iter().enumerate() {
                    if scope.is_empty() || scope.contains(char::is_whitespace) || scope == "*" {
                        push(
                            format!("{at}.scopes[{s}]"),
                            "must be a non-empty scope without spaces (no wildcard)",
                        );
                    }
                }
                for (g, group) in route.groups.iter().enumerate() {
                    if !is_identifier(group) {
                        push(
                            format!("{at}.groups[{g}]"),
                            "group names must be identifiers",
                        );
                    }
                }
            }
        }

        crate::limits::check(self, &mut push);
        crate::quic::check(self, &mut push);
        crate::tunnel::check(self, &mut push);

        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyError(errors))
        }
    }

    /// The issuer with this id.
    pub fn issuer(&self, id: &str) -> Option<&JwtIssuer> {
        self.issuers.iter().find(|i| i.id == id)
    }

    /// Every `(scope key, effective WAF settings)` of the policy whose WAF is not off, one per
    /// route (see [`waf_scope_key`]), in policy order.
    pub fn waf_scopes(&self) -> Vec<(String, WafSettings)> {
        let mut out = Vec::new();
        for resource in &self.resources {
            for route in &resource.routes {
                let mut settings = resource.waf.for_route(route.waf.as_ref());
                settings.route_methods = route.methods.clone();
                if settings.mode != WafMode::Off {
                    out.push((waf_scope_key(&resource.name, &route.id), settings));
                }
            }
        }
        out
    }
}

/// Key of a route's WAF scope: `resource/route`.
pub fn waf_scope_key(resource: &str, route: &str) -> String {
    format!("{resource}/{route}")
}

fn check_size(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(single(
            ".",
            format!("document exceeds {MAX_POLICY_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn single(path: &str, message: String) -> PolicyError {
    PolicyError(vec![ValidationError {
        path: path.to_string(),
        message,
    }])
}

fn path_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> PolicyError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    // serde_yaml appends " at line N column M"; keep it, it helps people find the spot.
    single(if path.is_empty() { "." } else { &path }, message)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b':')
        })
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn check_upstream(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("must name a host");
    }
    if authority.contains('@') {
        return Err("must not carry credentials");
    }
    if rest.contains(['?', '#']) {
        return Err("must not carry a query or fragment");
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("port must be 1-65535");
        }
    }
    Ok(())
}

/// A parsed route path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

/// One segment of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the request segment exactly.
    Literal(String),
    /// Matches any one non-empty segment and binds it to the name.
    Param(String),
}

impl PathTemplate {
    /// Parses `/a/{b}/c`.
    ///
    /// # Errors
    /// Why the template is malformed.
    pub fn parse(template: &str) -> Result<PathTemplate, &'static str> {
        if !template.starts_with('/') {
            return Err("must start with '/'");
        }
        if template.len() > 512 {
            return Err("must be at most 512 characters");
        }
        if template == "/" {
            return Ok(PathTemplate {
                segments: Vec::new(),
            });
        }
        let mut names = BTreeSet::new();
        let mut segments = Vec::new();
        for raw in template[1..].split('/') {
            if raw.is_empty() {
                return Err("must not contain empty segments ('//' or a trailing '/')");
            }
            if raw == "." || raw == ".." {
                return Err("must not contain '.' or '..' segments");
            }
            if let Some(inner) = raw.strip_prefix('{') {
                let name = inner.strip_suffix('}').ok_or("unclosed '{' in segment")?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err("parameter names must be letters, digits or '_'");
                }
                if !names.insert(name) {
                    return Err("parameter names must be unique");
                }
                segments.push(Segment::Param(name.to_string()));
            } else {
                if raw.contains(['{', '}', '?', '#', '%', '*']) {
                    return Err("literal segments must not contain '{', '}', '?', '#', '%' or '*'");
                }
                segments.push(Segment::Literal(raw.to_string()));
            }
        }
        Ok(PathTemplate { segments })
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The template with parameter names erased: two templates with the same shape match the
    /// same paths.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(_) => out.push_str("{}"),
            }
        }
        out
    }

    /// Matches a request path (already split from its query). Returns the bound parameters.
    pub fn matches<'p>(&self, path: &'p str) -> Option<BTreeMap<&str, &'p str>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    params.insert(name.as_str(), part);
                }
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [orders]
    algorithms: [EdDSA, ES256]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}
resources:
  - name: orders-api
    upstream: http://127.0.0.1:9000
    issuers: [demo]
    routes:
      - id: list
        methods: [GET]
        path: /orders
        scopes: [orders:read]
      - id: one
        methods: [GET, DELETE]
        path: /orders/{orderId}
        scopes: [orders:read]
      - id: health
        methods: [GET]
        path: /health
        public: true
"#;

    #[test]
    fn good_policy_parses_in_yaml_and_round_trips_through_json() {
        let policy = Policy::parse_yaml(GOOD).expect("valid");
        assert_eq!(policy.resources[0].routes.len(), 3);
        assert_eq!(policy.issuers[0].leeway_seconds, 30);
        let json = serde_json::to_string(&policy).expect("json");
        assert_eq!(Policy::parse_json(&json).expect("valid json"), policy);
    }

    #[test]
    fn unknown_field_is_reported_with_its_path() {
        let text = GOOD.replace(
            "scopes: [orders:read]\n      - id: one",
            "scopez: [x]\n      - id: one",
        );
        let err = Policy::parse_yaml(&text).expect_err("typo");
        assert_eq!(err.0[0].path, "resources[0].routes[0].scopez");
        assert!(err.0[0].message.contains("scopez"), "{}", err.0[0].message);
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let err = Policy::parse_json(r#"{"resources":[{"name":"a","upstream":"http://x:1","routes":[{"id":"r","methods":["GET"],"path":7}]}]}"#)
            .expect_err("type");
        assert_eq!(err.0[0].path, "resources[0].routes[0].path");
    }

    #[test]
    fn semantic_errors_carry_field_paths() {
        let text = GOOD
            .replace("path: /orders\n", "path: orders\n")
            .replace("issuers: [demo]", "issuers: [nobody]")
            .replace("algorithms: [EdDSA, ES256]", "algorithms: []");
        let err = Policy::parse_yaml(&text).expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"resources[0].routes[0].path"), "{paths:?}");
        assert!(paths.contains(&"resources[0].issuers[0]"), "{paths:?}");
        assert!(paths.contains(&"issuers[0].algorithms"), "{paths:?}");
    }

    #[test]
    fn issuer_token_and_jwks_settings_default_and_are_validated() {
        let policy = Policy::parse_yaml(GOOD).expect("valid");
        assert_eq!(policy.issuers[0].max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
        assert_eq!(policy.issuers[0].keys.refresh_seconds, None);
        let json = serde_json::to_string(&policy).expect("json");
        assert!(
            !json.contains("max_token_bytes"),
            "defaults stay implicit: {json}"
        );

        let remote = GOOD.replace(
            "      jwks: {\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\", \"kid\": \"k1\"}]}",
            "      jwks_url: https://idp.example/jwks\n      refresh_seconds: 60\n      max_stale_seconds: 7200\n    max_token_bytes: 4096",
        );
        let policy = Policy::parse_yaml(&remote).expect("valid remote issuer");
        assert_eq!(policy.issuers[0].keys.refresh_interval_seconds(), 60);
        assert_eq!(policy.issuers[0].keys.max_stale(), 7200);
        assert_eq!(policy.issuers[0].max_token_bytes, 4096);

        let bad = remote
            .replace("refresh_seconds: 60", "refresh_seconds: 5")
            .replace("max_stale_seconds: 7200", "max_stale_seconds: 100000")
            .replace("max_token_bytes: 4096", "max_token_bytes: 10");
        let err = Policy::parse_yaml(&bad).expect_err("out of range");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "issuers[0].max_token_bytes",
                "issuers[0].keys.refresh_seconds",
                "issuers[0].keys.max_stale_seconds"
            ]
        );

        let inline = GOOD.replace(
            "kid\": \"k1\"}]}",
            "kid\": \"k1\"}]}\n      refresh_seconds: 60",
        );
        let err = Policy::parse_yaml(&inline).expect_err("inline keys are not refreshed");
        assert_eq!(err.0[0].path, "issuers[0].keys.refresh_seconds");
    }

    #[test]
    fn every_asymmetric_algorithm_can_be_written() {
        let text = GOOD.replace(
            "[EdDSA, ES256]",
            "[RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]",
        );
        let policy = Policy::parse_yaml(&text).expect("valid");
        assert_eq!(policy.issuers[0].algorithms.len(), 9);
        for alg in ["none", "None", "HS256", "HS384", "HS512", "ES512", "RS1"] {
            let text = GOOD.replace("[EdDSA, ES256]", &format!("[{alg}]"));
            let err = Policy::parse_yaml(&text).expect_err("refused");
            assert_eq!(err.0[0].path, "issuers[0].algorithms[0]", "{alg}");
        }
    }

    #[test]
    fn none_and_hmac_algorithms_cannot_be_written() {
        for alg in ["none", "HS256"] {
            let text = GOOD.replace("[EdDSA, ES256]", &format!("[{alg}]"));
            let err = Policy::parse_yaml(&text).expect_err("refused");
            assert_eq!(err.0[0].path, "issuers[0].algorithms[0]");
        }
    }

    #[test]
    fn duplicate_method_and_path_shape_is_refused() {
        let mut policy = Policy::parse_yaml(GOOD).expect("valid");
        policy.resources[0].routes[2].path = "/orders/{x}".into();
        let err = policy.validate().expect_err("duplicate");
        assert_eq!(err.0[0].path, "resources[0].routes[2].path");
    }

    #[test]
    fn template_matching_binds_params_and_rejects_other_shapes() {
        let t = PathTemplate::parse("/accounts/{accountId}/orders").expect("template");
        let params = t.matches("/accounts/42/orders").expect("match");
        assert_eq!(params.get("accountId"), Some(&"42"));
        assert!(t.matches("/accounts//orders").is_none());
        assert!(t.matches("/accounts/42/orders/").is_none());
        assert!(t.matches("/accounts/42").is_none());
        assert!(PathTemplate::parse("/")
            .expect("root")
            .matches("/")
            .is_some());
        assert!(PathTemplate::parse("/a/../b").is_err());
        assert!(PathTemplate::parse("/a/{x}/{x}").is_err());
    }

    #[test]
    fn floats_inside_inline_jwks_survive_a_round_trip_exactly() {
        // Found by the policy_json fuzz target: without serde_json's float_roundtrip the
        // policy an edge reads back from a bundle could differ from the one that was signed.
        let text = r#"{"issuers":[{"id":"a","issuer":"x","audiences":["a"],"algorithms":["EdDSA"],"keys":{"jwks":{"keys":[{"kty":"OKP","x":[1.947700395895162e-169,-1.490143767845386e+129,6.162599865641032e+196]}]}}}]}"#;
        let policy = Policy::parse_json(text).expect("valid");
        let again =
            Policy::parse_json(&serde_json::to_string(&policy).expect("json")).expect("valid");
        assert_eq!(again, policy);
    }

    #[test]
    fn waf_defaults_to_block_at_paranoia_one_and_routes_override_field_by_field() {
        let mut policy = Policy::parse_yaml(GOOD).expect("valid");
        let waf = &policy.resources[0].waf;
        assert_eq!(
            (waf.mode, waf.paranoia_level, waf.inbound_threshold),
            (WafMode::Block, 1, 5)
        );
        policy.resources[0].waf.exclusions = vec![RuleExclusion {
            rule_id: Some(920350),
            tag: None,
            target: None,
        }];
        let over = WafOverride {
            mode: Some(WafMode::Detect),
            paranoia_level: Some(3),
            exclusions: vec![RuleExclusion {
                rule_id: Some(942100),
                tag: None,
                target: Some("ARGS:q".into()),
            }],
            ..WafOverride::default()
        };
        let effective = policy.resources[0].waf.for_route(Some(&over));
        assert_eq!(
            (effective.mode, effective.paranoia_level),
            (WafMode::Detect, 3)
        );
        assert_eq!(effective.inbound_threshold, 5);
        assert_eq!(effective.exclusions.len(), 2);
    }

    #[test]
    fn bad_waf_settings_are_reported_with_their_paths() {
        let text = GOOD.replace(
            "    issuers: [demo]\n    routes:",
            "    issuers: [demo]\n    waf:\n      paranoia_level: 5\n      exclusions:\n        - {tag: attack-sqli, target: ARGS:x}\n        - {}\n    routes:",
        );
        let err = Policy::parse_yaml(&text).expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"resources[0].waf.paranoia_level"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"resources[0].waf.exclusions[0].target"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"resources[0].waf.exclusions[1]"),
            "{paths:?}"
        );
        let text = GOOD.replace(
            "        path: /health\n",
            "        path: /health\n        waf: {mode: loud}\n",
        );
        let err = Policy::parse_yaml(&text).expect_err("invalid mode");
        assert_eq!(err.0[0].path, "resources[0].routes[2].waf.mode");
    }

    #[test]
    fn trailing_garbage_and_oversize_are_refused() {
        assert!(Policy::parse_json("{} {}").is_err());
        let huge = " ".repeat(MAX_POLICY_BYTES + 1);
        assert!(Policy::parse_json(&huge).is_err());
    }
}
