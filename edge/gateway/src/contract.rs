//! The API contract (OWASP API3, API8): the resource's OpenAPI document compiled once per
//! policy into one [`Operation`] per (method, path), with a JSON Schema validator
//! (`jsonschema`, draft 2020-12) per parameter and request body, never per request.
//!
//! * Requests: path, query and header parameters (required, type, enum, pattern…), the
//!   content type (415 when the operation does not declare it), the JSON body; with
//!   `strict_properties` every object schema that lists `properties` and says nothing about
//!   extra ones refuses undocumented properties (`unevaluatedProperties: false`: mass
//!   assignment). A refusal names the JSON pointer of the offending field, never its value.
//! * Responses: JSON bodies scrubbed of properties the response schema does not declare;
//!   5xx bodies replaced (by the shell) with the generic error; security headers; CORS.
//!
//! Compilation: `$ref`s (local only; `sase-model` refuses others) are inlined, so that the
//! strictness rewrite never changes a shared component under another schema's `allOf`; a
//! recursive reference is left as a `$ref` into the document's (unrewritten) components.
//! OpenAPI 3.0 schemas are translated to 2020-12 (`nullable`, boolean `exclusiveMinimum` /
//! `exclusiveMaximum`). Formats are annotations only, as the specification says.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Draft, Validator};
use sase_model::api_contract::{ApiSettings, CorsPolicy, OPERATION_METHODS};
use sase_model::policy::{Method, PathTemplate};
use sase_model::Reason;
use serde_json::{Map, Value};

use crate::strict_json;

/// Most schema nodes one operation may expand to when its `$ref`s are inlined (a guard
/// against documents that reference the same large schema exponentially often).
const MAX_INLINED_NODES: usize = 200_000;
/// Deepest nesting a schema may reach once its `$ref`s are inlined (keeps every recursive
/// walk over it, the validator's included, far from the thread's stack limit).
const MAX_INLINED_DEPTH: usize = 256;
/// Longest pointer reported in a refusal.
const MAX_POINTER_CHARS: usize = 200;

/// Why a contract could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ContractError {
    /// Where in the OpenAPI document (`paths./users.post.requestBody`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn cerr(path: impl Into<String>, message: impl Into<String>) -> ContractError {
    ContractError {
        path: path.into(),
        message: message.into(),
    }
}

/// A refused request: the reason, the JSON pointer of the offending field and a message that
/// names it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractViolation {
    /// `parameter_invalid`, `body_invalid` or `content_type_unsupported`.
    pub reason: Reason,
    /// JSON pointer: `/body/items/0/qty`, `/query/limit`, `/path/id`, `/header/x-request-id`.
    pub pointer: String,
    /// Short text, e.g. `undocumented property`.
    pub message: String,
}

impl fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} at {}", self.message, self.pointer)
        }
    }
}

fn violation(reason: Reason, pointer: String, message: impl Into<String>) -> ContractViolation {
    let mut pointer = pointer;
    if pointer.chars().count() > MAX_POINTER_CHARS {
        pointer = pointer.chars().take(MAX_POINTER_CHARS).collect::<String>() + "...";
    }
    ContractViolation {
        reason,
        pointer,
        message: message.into(),
    }
}

/// The compiled `api` settings of one resource.
pub struct CompiledContract {
    scrub_responses: bool,
    rewrite_upstream_errors: bool,
    headers_plain: Vec<(&'static str, String)>,
    headers_tls: Vec<(&'static str, String)>,
    cors: Option<CorsPolicy>,
    /// (method, path shape) -> operation.
    operations: Vec<(Method, String, Arc<Operation>)>,
}

impl fmt::Debug for CompiledContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledContract")
            .field("operations", &self.operations.len())
            .finish_non_exhaustive()
    }
}

/// One OpenAPI operation with its validators.
pub struct Operation {
    template: PathTemplate,
    params: Vec<Param>,
    body: Option<BodySpec>,
    /// (status key, schema for scrubbing — inlined, 2020-12).
    responses: Vec<(StatusKey, Option<Value>)>,
    /// Document components (for recursive `$ref`s left in place).
    components: Arc<Value>,
    /// Validators of the response schemas, compiled on first use (only third-party APIs
    /// validate responses: see [`ApiHandle::validate_response`]) and kept with the operation.
    response_validators: std::sync::OnceLock<Vec<ResponseValidator>>,
}

/// A declared response status, and the validator of its JSON schema (`None`: no schema;
/// `Err`: the schema does not compile).
type ResponseValidator = (StatusKey, Option<Result<Validator, ()>>);

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("params", &self.params.len())
            .field("body", &self.body.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

struct Param {
    name: String,
    location: Location,
    required: bool,
    /// The schema's `type` (first non-null one), for turning text into JSON.
    kind: Option<String>,
    /// For arrays, the items' type.
    item_kind: Option<String>,
    explode: bool,
    validator: Option<Validator>,
}

struct BodySpec {
    required: bool,
    /// (lower-case media range, validator for JSON media types).
    media: Vec<(String, Option<Validator>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusKey {
    Exact(u16),
    Range(u16),
    Default,
}

/// What the shell does with an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePlan {
    /// Forward it as it is (headers still get [`CompiledContract::response_headers`]).
    Pass,
    /// Buffer the JSON body and call [`ApiHandle::scrub_response`].
    Scrub,
    /// Replace the body with the generic error (upstream 5xx).
    Replace,
}

/// The contract of the resource a request matched, and the operation of its route and method
/// if the document has one. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct ApiHandle {
    contract: Arc<CompiledContract>,
    operation: Option<Arc<Operation>>,
}

impl fmt::Debug for ApiHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiHandle")
            .field("operation", &self.operation.is_some())
            .finish()
    }
}

impl PartialEq for ApiHandle {
    fn eq(&self, other: &ApiHandle) -> bool {
        Arc::ptr_eq(&self.contract, &other.contract)
            && match (&self.operation, &other.operation) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ApiHandle {}

/// The parts of a request the contract checks.
#[derive(Debug, Clone, Copy)]
pub struct ContractRequest<'a> {
    /// Path only.
    pub path: &'a str,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The request body, as received.
    pub body: &'a [u8],
}

impl ApiHandle {
    pub(crate) fn new(contract: Arc<CompiledContract>, operation: Option<Arc<Operation>>) -> Self {
        ApiHandle {
            contract,
            operation,
        }
    }

    /// Whether the route and method have an operation in the document (else requests are not
    /// checked against it).
    pub fn has_operation(&self) -> bool {
        self.operation.is_some()
    }

    /// Checks a request against its operation (nothing to check without one).
    ///
    /// # Errors
    /// The first violation found: parameters first, then content type, then body.
    pub fn check_request(&self, req: &ContractRequest<'_>) -> Result<(), ContractViolation> {
        match &self.operation {
            Some(op) => op.check(req),
            None => Ok(()),
        }
    }

    /// What to do with an upstream answer of `status` and `content_type`.
    pub fn response_plan(&self, status: u16, content_type: Option<&str>) -> ResponsePlan {
        if status >= 500 && self.contract.rewrite_upstream_errors {
            return ResponsePlan::Replace;
        }
        let Some(op) = &self.operation else {
            return ResponsePlan::Pass;
        };
        if !self.contract.scrub_responses || !content_type.is_some_and(is_json_media) {
            return ResponsePlan::Pass;
        }
        match op.response_schema(status) {
            Some(_) => ResponsePlan::Scrub,
            None => ResponsePlan::Pass,
        }
    }

    /// Removes from a JSON response body the properties the response schema for `status`
    /// does not declare. Returns the new body and the pointers removed; `None` when there is
    /// nothing to change (no schema, not JSON, nothing undeclared).
    pub fn scrub_response(&self, status: u16, body: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
        let op = self.operation.as_ref()?;
        let schema = op.response_schema(status)?;
        let mut value: Value = serde_json::from_slice(body).ok()?;
        let mut removed = Vec::new();
        scrub(
            schema,
            &op.components,
            &mut value,
            String::new(),
            &mut removed,
            0,
        );
        if removed.is_empty() {
            return None;
        }
        let bytes = serde_json::to_vec(&value).ok()?;
        Some((bytes, removed))
    }

    /// Validates a JSON response of a third-party API (OWASP API10) against the schema the
    /// operation declares for `status`. No operation: nothing is declared, nothing checked. A
    /// status the operation does not declare, a body that is not JSON or does not match the
    /// schema is refused; the message names the JSON pointer of the first mismatch, never a
    /// value. Validators are compiled once per operation, on first use.
    ///
    /// # Errors
    /// What does not match.
    pub fn validate_response(&self, status: u16, body: &[u8]) -> Result<(), String> {
        let Some(op) = &self.operation else {
            return Ok(());
        };
        let validators = op.response_validators.get_or_init(|| {
            op.responses
                .iter()
                .map(|(key, schema)| {
                    let v = schema
                        .as_ref()
                        .map(|s| response_validator(s, &op.components).map_err(|_| ()));
                    (*key, v)
                })
                .collect()
        });
        let find = |want: StatusKey| validators.iter().find(|(k, _)| *k == want);
        let Some((_, validator)) = find(StatusKey::Exact(status))
            .or_else(|| find(StatusKey::Range(status / 100)))
            .or_else(|| find(StatusKey::Default))
        else {
            return Err(format!("status {status} is not declared"));
        };
        let validator = match validator {
            None => return Ok(()),
            Some(Ok(v)) => v,
            Some(Err(())) => return Err("the response schema does not compile".into()),
        };
        let value: Value =
            serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_string())?;
        let first = validator.iter_errors(&value).next().map(|err| {
            format!(
                "/body{} does not match the response schema ({})",
                err.instance_path(),
                err.kind().keyword()
            )
        });
        match first {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Security headers to add when the response lacks them.
    pub fn security_headers(&self, tls: bool) -> &[(&'static str, String)] {
        if tls {
            &self.contract.headers_tls
        } else {
            &self.contract.headers_plain
        }
    }

    /// Whether the resource has a CORS policy (the shell then removes the upstream's own
    /// `Access-Control-*` headers).
    pub fn has_cors(&self) -> bool {
        self.contract.cors.is_some()
    }

    /// CORS headers for an actual (non-preflight) response to a request from `origin`; empty
    /// when the origin is not allowed.
    pub fn cors_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        let (Some(cors), Some(origin)) = (&self.contract.cors, origin) else {
            return Vec::new();
        };
        if !origin_allowed(cors, origin) {
            return Vec::new();
        }
        let mut out = allow_origin_headers(cors, origin);
        if !cors.expose_headers.is_empty() {
            out.push((
                "access-control-expose-headers",
                cors.expose_headers.join(", "),
            ));
        }
        out
    }
}

fn origin_allowed(cors: &CorsPolicy, origin: &str) -> bool {
    cors.allowed_origins.iter().any(|o| o == "*" || o == origin)
}

fn allow_origin_headers(cors: &CorsPolicy, origin: &str) -> Vec<(&'static str, String)> {
    let wildcard = cors.allowed_origins.iter().any(|o| o == "*") && !cors.allow_credentials;
    let mut out = vec![(
        "access-control-allow-origin",
        if wildcard {
            "*".to_string()
        } else {
            origin.to_string()
        },
    )];
    if !wildcard {
        out.push(("vary", "Origin".to_string()));
    }
    if cors.allow_credentials {
        out.push(("access-control-allow-credentials", "true".to_string()));
    }
    out
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// Answer 204 with these headers.
    Allow {
        /// Resource name (for the audit event).
        resource: String,
        /// Route id.
        route: String,
        /// The CORS headers.
        headers: Vec<(&'static str, String)>,
    },
    /// Refuse (`cors_refused`), with no CORS header.
    Refuse {
        /// Resource name.
        resource: String,
        /// Route id.
        route: String,
    },
}

/// Headers a browser sends without asking (CORS-safelisted, plus those the edge needs).
const SAFELISTED_HEADERS: [&str; 4] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];

fn preflight_for(
    cors: &CorsPolicy,
    route_methods: &[Method],
    resource: &str,
    route: &str,
    origin: &str,
    method: Method,
    request_headers: Option<&str>,
) -> Preflight {
    let refuse = || Preflight::Refuse {
        resource: resource.to_string(),
        route: route.to_string(),
    };
    if !origin_allowed(cors, origin) {
        return refuse();
    }
    let methods: &[Method] = if cors.allowed_methods.is_empty() {
        route_methods
    } else {
        &cors.allowed_methods
    };
    if !methods.contains(&method) {
        return refuse();
    }
    let allowed: Vec<String> = cors
        .allowed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for h in request_headers
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
    {
        if !SAFELISTED_HEADERS.contains(&h.as_str()) && !allowed.contains(&h) {
            return refuse();
        }
    }
    let mut headers = allow_origin_headers(cors, origin);
    headers.push((
        "access-control-allow-methods",
        methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ));
    if !cors.allowed_headers.is_empty() {
        headers.push((
            "access-control-allow-headers",
            cors.allowed_headers.join(", "),
        ));
    }
    headers.push(("access-control-max-age", cors.max_age_seconds.to_string()));
    Preflight::Allow {
        resource: resource.to_string(),
        route: route.to_string(),
        headers,
    }
}

/// Answers a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
/// `None` when no route serves the requested method on that path or its resource has no CORS
/// policy (the request then goes through the ordinary decision).
pub fn preflight(
    policy: &crate::CompiledPolicy,
    host: Option<&str>,
    path: &str,
    origin: &str,
    request_method: &str,
    request_headers: Option<&str>,
) -> Option<Preflight> {
    let method = Method::from_http(request_method)?;
    let (resource, route) = policy.find_route(request_method, host, path)?;
    let cors = resource.contract.as_ref()?.cors()?;
    Some(preflight_for(
        cors,
        &route.methods,
        &resource.name,
        &route.id,
        origin,
        method,
        request_headers,
    ))
}

/// Compiles every resource's API contract, as the edge will: the control plane refuses (422)
/// a policy whose documents do not compile. Errors carry field paths
/// (`resources[0].api.openapi.paths./users.post...`).
///
/// # Errors
/// One entry per resource whose contract does not compile.
pub fn check_contracts(
    policy: &sase_model::Policy,
) -> Result<(), Vec<sase_model::ValidationError>> {
    let mut errors = Vec::new();
    for (r, resource) in policy.resources.iter().enumerate() {
        if let Some(api) = &resource.api {
            if let Err(err) = CompiledContract::compile(api) {
                errors.push(sase_model::ValidationError {
                    path: format!("resources[{r}].api.openapi.{}", err.path),
                    message: err.message,
                });
            }
        }
        // CA certificates of client certificates and of upstream TLS: they must parse, as the
        // edge will parse them.
        let cas = [
            (
                "client_certificates",
                resource.client_certificates.as_ref().map(|c| &c.ca_pem),
            ),
            (
                "upstream_tls",
                resource.upstream_tls.as_ref().map(|t| &t.ca_pem),
            ),
        ];
        for (block, pem) in cas {
            if let Some(Err(message)) = pem.map(|p| crate::client_cert::check_ca_pem(p)) {
                errors.push(sase_model::ValidationError {
                    path: format!("resources[{r}].{block}.ca_pem"),
                    message,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl CompiledContract {
    /// Compiles a resource's `api` settings.
    ///
    /// # Errors
    /// A schema that does not compile, a parameter or body that cannot be understood.
    pub fn compile(api: &ApiSettings) -> Result<CompiledContract, ContractError> {
        let mut operations = Vec::new();
        if let Some(doc) = &api.openapi {
            let v30 = doc
                .get("openapi")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("3.0"));
            let components = Arc::new(
                doc.get("components")
                    .map(|c| convert_30(c.clone(), v30))
                    .unwrap_or(Value::Null),
            );
            let ctx = Ctx {
                doc,
                v30,
                strict: api.strict_properties,
                components: components.clone(),
            };
            let paths = doc
                .get("paths")
                .and_then(Value::as_object)
                .ok_or_else(|| cerr("paths", "must be an object"))?;
            for (path, item) in paths {
                let template =
                    PathTemplate::parse(path).map_err(|why| cerr(format!("paths.{path}"), why))?;
                let Some(item) = item.as_object() else {
                    continue;
                };
                for (key, method) in OPERATION_METHODS {
                    let Some(op) = item.get(key) else {
                        continue;
                    };
                    let at = format!("paths.{path}.{key}");
                    let compiled = ctx.operation(&at, &template, item.get("parameters"), op)?;
                    operations.push((method, template.shape(), Arc::new(compiled)));
                }
            }
        }
        Ok(CompiledContract {
            scrub_responses: api.scrub_responses,
            rewrite_upstream_errors: api.rewrite_upstream_errors,
            headers_plain: api.security_headers.effective(false),
            headers_tls: api.security_headers.effective(true),
            cors: api.cors.clone(),
            operations,
        })
    }

    /// The operation for a method on a route whose template has this shape.
    pub(crate) fn operation(&self, method: Method, shape: &str) -> Option<Arc<Operation>> {
        self.operations
            .iter()
            .find(|(m, s, _)| *m == method && s == shape)
            .map(|(_, _, op)| op.clone())
    }

    pub(crate) fn cors(&self) -> Option<&CorsPolicy> {
        self.cors.as_ref()
    }
}

struct Ctx<'d> {
    doc: &'d Value,
    v30: bool,
    strict: bool,
    components: Arc<Value>,
}

impl Ctx<'_> {
    fn deref<'v>(&'v self, value: &'v Value, at: &str) -> Result<&'v Value, ContractError> {
        let mut current = value;
        for _ in 0..16 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    current = sase_model::api_contract::resolve_local(self.doc, r)
                        .ok_or_else(|| cerr(at, "$ref does not resolve"))?;
                }
                None => return Ok(current),
            }
        }
        Err(cerr(at, "$ref chain too long"))
    }

    /// The schema ready for the validator: inlined, converted, made strict, with the
    /// components attached for recursive references.
    fn schema(&self, schema: &Value, at: &str) -> Result<Value, ContractError> {
        let mut budget = MAX_INLINED_NODES;
        let inlined =
            inline(self.doc, schema, &mut Vec::new(), &mut budget, 0).ok_or_else(|| {
                cerr(
                    at,
                    "schema too large or too deeply nested once its $refs are resolved",
                )
            })?;
        let mut converted = convert_30(inlined, self.v30);
        if self.strict {
            make_strict(&mut converted, false);
        }
        Ok(converted)
    }

    fn validator(&self, schema: &Value, at: &str) -> Result<Validator, ContractError> {
        let mut root = match schema {
            Value::Object(map) => map.clone(),
            Value::Bool(b) => {
                let mut m = Map::new();
                if !b {
                    m.insert("not".into(), Value::Object(Map::new()));
                }
                m
            }
            _ => return Err(cerr(at, "a schema must be an object")),
        };
        if !self.components.is_null() {
            root.insert("components".into(), (*self.components).clone());
        }
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(false)
            // Linear-time matching: a `pattern` can never make a request backtrack for long
            // (look-around and back-references are refused when the document is compiled).
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&Value::Object(root))
            .map_err(|e| {
                cerr(
                    at,
                    format!("schema does not compile: {}", e.kind().keyword()),
                )
            })
    }

    fn operation(
        &self,
        at: &str,
        template: &PathTemplate,
        item_params: Option<&Value>,
        op: &Value,
    ) -> Result<Operation, ContractError> {
        // Operation parameters override path-item ones with the same name and location.
        let mut raw: Vec<(String, Value)> = Vec::new();
        for (source, list) in [
            ("parameters", item_params),
            ("parameters", op.get("parameters")),
        ] {
            let Some(list) = list else { continue };
            let list = list
                .as_array()
                .ok_or_else(|| cerr(format!("{at}.{source}"), "must be an array"))?;
            for (i, p) in list.iter().enumerate() {
                let pat = format!("{at}.{source}[{i}]");
                let p = self.deref(p, &pat)?.clone();
                let key = format!(
                    "{}|{}",
                    p.get("in").and_then(Value::as_str).unwrap_or(""),
                    p.get("name").and_then(Value::as_str).unwrap_or("")
                );
                raw.retain(|(k, _)| *k != key);
                raw.push((key, p));
            }
        }
        let mut params = Vec::with_capacity(raw.len());
        for (i, (_, p)) in raw.iter().enumerate() {
            let pat = format!("{at}.parameters[{i}]");
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| cerr(&pat, "parameter without a name"))?;
            let location = match p.get("in").and_then(Value::as_str) {
                Some("path") => Location::Path,
                Some("query") => Location::Query,
                Some("header") => Location::Header,
                Some("cookie") => Location::Cookie,
                _ => return Err(cerr(&pat, "`in` must be path, query, header or cookie")),
            };
            if location == Location::Path
                && !template
                    .segments()
                    .iter()
                    .any(|s| matches!(s, sase_model::policy::Segment::Param(n) if n == name))
            {
                return Err(cerr(&pat, "path parameter not in the path template"));
            }
            let required = location == Location::Path
                || p.get("required").and_then(Value::as_bool) == Some(true);
            let (validator, kind, item_kind) = match p.get("schema") {
                Some(schema) => {
                    let schema = self.schema(schema, &pat)?;
                    let kind = schema_type(&schema);
                    let item_kind = schema.get("items").and_then(schema_type);
                    (Some(self.validator(&schema, &pat)?), kind, item_kind)
                }
                None => (None, None, None),
            };
            let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(
                p.get("style")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == "form"),
            );
            params.push(Param {
                name: if location == Location::Header {
                    name.to_ascii_lowercase()
                } else {
                    name.to_string()
                },
                location,
                required,
                kind,
                item_kind,
                explode,
                validator,
            });
        }

        let body = match op.get("requestBody") {
            None => None,
            Some(rb) => {
                let bat = format!("{at}.requestBody");
                let rb = self.deref(rb, &bat)?;
                let required = rb.get("required").and_then(Value::as_bool) == Some(true);
                let content = rb
                    .get("content")
                    .and_then(Value::as_object)
                    .ok_or_else(|| cerr(&bat, "requestBody needs a `content` object"))?;
                let mut media = Vec::with_capacity(content.len());
                for (media_type, m) in content {
                    let mat = format!("{bat}.content.{media_type}");
                    let media_type = media_type.trim().to_ascii_lowercase();
                    let validator = match m.get("schema") {
                        Some(schema) if is_json_media(&media_type) => {
                            let schema = self.schema(schema, &mat)?;
                            Some(self.validator(&schema, &mat)?)
                        }
                        _ => None,
                    };
                    media.push((media_type, validator));
                }
                Some(BodySpec { required, media })
            }
        };

        let mut responses = Vec::new();
        if let Some(map) = op.get("responses").and_then(Value::as_object) {
            for (code, r) in map {
                let rat = format!("{at}.responses.{code}");
                let key = if code == "default" {
                    StatusKey::Default
                } else if let Ok(n) = code.parse::<u16>() {
                    StatusKey::Exact(n)
                } else if code.len() == 3 && code[1..].eq_ignore_ascii_case("xx") {
                    StatusKey::Range(u16::from(code.as_bytes()[0].wrapping_sub(b'0')))
                } else {
                    return Err(cerr(
                        rat,
                        "response keys are status codes, 1XX-5XX or default",
                    ));
                };
                let r = self.deref(r, &rat)?;
                let schema = r
                    .get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| c.iter().find(|(mt, _)| is_json_media(mt)))
                    .and_then(|(_, m)| m.get("schema"));
                let schema = match schema {
                    Some(s) => {
                        let mut budget = MAX_INLINED_NODES;
                        let inlined = inline(self.doc, s, &mut Vec::new(), &mut budget, 0)
                            .ok_or_else(|| cerr(&rat, "schema too large or too deeply nested once its $refs are resolved"))?;
                        Some(convert_30(inlined, self.v30))
                    }
                    None => None,
                };
                responses.push((key, schema));
            }
        }

        Ok(Operation {
            template: template.clone(),
            params,
            body,
            responses,
            components: self.components.clone(),
            response_validators: std::sync::OnceLock::new(),
        })
    }
}

/// A validator for a response schema (as kept for scrubbing: inlined, 2020-12), with the
/// document's components for recursive references; the same options as request validators.
fn response_validator(schema: &Value, components: &Value) -> Result<Validator, String> {
    let mut root = match schema {
        Value::Object(map) => map.clone(),
        Value::Bool(true) => Map::new(),
        Value::Bool(false) => {
            let mut m = Map::new();
            m.insert("not".into(), Value::Object(Map::new()));
            m
        }
        _ => return Err("a schema must be an object".into()),
    };
    if !components.is_null() {
        root.insert("components".into(), components.clone());
    }
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(false)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&Value::Object(root))
        .map_err(|e| e.kind().keyword().to_string())
}

/// The first non-null `type` of a schema.
fn schema_type(schema: &Value) -> Option<String> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .map(str::to_string),
        _ => None,
    }
}

/// Replaces every local `$ref` by its target (recursively), except one that refers to a
/// schema being expanded already (recursion): that one stays a `$ref`. `None` when the budget
/// of nodes runs out.
fn inline(
    doc: &Value,
    node: &Value,
    stack: &mut Vec<String>,
    budget: &mut usize,
    depth: usize,
) -> Option<Value> {
    if depth > MAX_INLINED_DEPTH {
        return None;
    }
    *budget = budget.checked_sub(1)?;
    match node {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                if stack.iter().any(|s| s == r) {
                    return Some(node.clone());
                }
                let target = sase_model::api_contract::resolve_local(doc, r)?;
                stack.push(r.to_string());
                let expanded = inline(doc, target, stack, budget, depth + 1);
                stack.pop();
                let expanded = expanded?;
                let siblings: Map<String, Value> = map
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "$ref" | "description" | "summary" | "example")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if siblings.is_empty() {
                    return Some(expanded);
                }
                let mut out = Map::new();
                for (k, v) in siblings {
                    out.insert(k, inline(doc, &v, stack, budget, depth + 1)?);
                }
                out.insert("allOf".into(), Value::Array(vec![expanded]));
                return Some(Value::Object(out));
            }
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), inline(doc, v, stack, budget, depth + 1)?);
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| inline(doc, v, stack, budget, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        other => Some(other.clone()),
    }
}

/// Translates OpenAPI 3.0 schema keywords into draft 2020-12: `nullable: true` adds `null` to
/// the type; boolean `exclusiveMinimum` / `exclusiveMaximum` become numbers. 3.1 documents
/// are already 2020-12 and are returned as they are.
fn convert_30(value: Value, v30: bool) -> Value {
    if !v30 {
        return value;
    }
    match value {
        Value::Object(map) => {
            let mut map: Map<String, Value> = map
                .into_iter()
                .map(|(k, v)| (k, convert_30(v, true)))
                .collect();
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert("type".into(), Value::Array(vec![t.into(), "null".into()]));
                    }
                    Some(_) => {}
                    None => {}
                }
                if let Some(Value::Array(options)) = map.get_mut("enum") {
                    options.push(Value::Null);
                }
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(b)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if b {
                        if let Some(n) = map.remove(bound) {
                            map.insert(flag.into(), n);
                        }
                    }
                }
            }
            Value::Object(map)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| convert_30(v, true)).collect())
        }
        other => other,
    }
}

/// Adds `unevaluatedProperties: false` to every schema that lists `properties` (itself or
/// through `allOf` members) and says nothing about other properties. Members of an `allOf`
/// are left open: their parent closes the whole.
fn make_strict(schema: &mut Value, in_all_of: bool) {
    let Value::Object(map) = schema else { return };
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Value::Object(children) = value {
                    for child in children.values_mut() {
                        make_strict(child, false);
                    }
                }
            }
            "allOf" => {
                if let Value::Array(children) = value {
                    for child in children {
                        make_strict(child, true);
                    }
                }
            }
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(children) = value {
                    for child in children {
                        make_strict(child, in_all_of);
                    }
                }
            }
            "items"
            | "additionalProperties"
            | "not"
            | "contains"
            | "if"
            | "then"
            | "else"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => {
                make_strict(value, false);
            }
            _ => {}
        }
    }
    if in_all_of {
        return;
    }
    let lists_properties = map.contains_key("properties")
        || map
            .get("allOf")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(lists_properties_deep));
    let open_said = map.contains_key("additionalProperties")
        || map.contains_key("unevaluatedProperties")
        || map.contains_key("patternProperties");
    if lists_properties && !open_said {
        map.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
}

fn lists_properties_deep(schema: &Value) -> bool {
    schema.get("properties").is_some()
        || schema
            .get("allOf")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(lists_properties_deep))
}

fn is_json_media(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn media_matches(range: &str, essence: &str) -> bool {
    let range = range.split(';').next().unwrap_or("").trim();
    if range == "*/*" || range == essence {
        return true;
    }
    match (range.strip_suffix("/*"), essence.split_once('/')) {
        (Some(rtype), Some((etype, _))) => rtype == etype,
        _ => false,
    }
}

impl Operation {
    fn response_schema(&self, status: u16) -> Option<&Value> {
        let find = |want: StatusKey| {
            self.responses
                .iter()
                .find(|(k, _)| *k == want)
                .map(|(_, s)| s.as_ref())
        };
        // An exact code decides (a declared code without a schema leaves the body alone).
        find(StatusKey::Exact(status))
            .or_else(|| find(StatusKey::Range(status / 100)))
            .or_else(|| find(StatusKey::Default))
            .flatten()
    }

    fn check(&self, req: &ContractRequest<'_>) -> Result<(), ContractViolation> {
        let path_params = self.template.matches(req.path).unwrap_or_default();
        let query = parse_query(req.query.unwrap_or(""))?;
        for param in &self.params {
            let pointer = format!(
                "/{}/{}",
                param.location.as_str(),
                escape_pointer(&param.name)
            );
            let values: Vec<String> = match param.location {
                Location::Path => match path_params.get(param.name.as_str()) {
                    Some(raw) => vec![percent_decode(raw, false).ok_or_else(|| {
                        violation(Reason::ParameterInvalid, pointer.clone(), "not valid UTF-8")
                    })?],
                    None => Vec::new(),
                },
                Location::Query => query
                    .iter()
                    .filter(|(k, _)| *k == param.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                Location::Header => req
                    .headers
                    .get_all(param.name.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect(),
                // Cookies are not checked (browsers send what they hold).
                Location::Cookie => continue,
            };
            if values.is_empty() {
                if param.required {
                    return Err(violation(
                        Reason::ParameterInvalid,
                        pointer,
                        format!("missing required {} parameter", param.location.as_str()),
                    ));
                }
                continue;
            }
            let Some(validator) = &param.validator else {
                continue;
            };
            let instance = if param.kind.as_deref() == Some("array") {
                let items: Vec<&str> = if param.explode || values.len() > 1 {
                    values.iter().map(String::as_str).collect()
                } else {
                    values.iter().flat_map(|v| v.split(',')).collect()
                };
                Value::Array(
                    items
                        .into_iter()
                        .map(|v| coerce(v, param.item_kind.as_deref()))
                        .collect(),
                )
            } else {
                if values.len() > 1 {
                    return Err(violation(
                        Reason::ParameterInvalid,
                        pointer,
                        "parameter given more than once",
                    ));
                }
                coerce(&values[0], param.kind.as_deref())
            };
            if let Err(err) = validator.validate(&instance) {
                let (at, message) = describe(&err);
                return Err(violation(
                    Reason::ParameterInvalid,
                    format!("{pointer}{at}"),
                    message,
                ));
            }
        }
        self.check_body(req)
    }

    fn check_body(&self, req: &ContractRequest<'_>) -> Result<(), ContractViolation> {
        let content_type = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
        let essence = content_type
            .as_deref()
            .map(|ct| ct.split(';').next().unwrap_or("").trim().to_string());
        let Some(spec) = &self.body else {
            if !req.body.is_empty() {
                return Err(violation(
                    Reason::ContentTypeUnsupported,
                    "/body".into(),
                    "this operation takes no request body",
                ));
            }
            return Ok(());
        };
        if req.body.is_empty() && essence.is_none() {
            if spec.required {
                return Err(violation(
                    Reason::BodyInvalid,
                    "/body".into(),
                    "a request body is required",
                ));
            }
            return Ok(());
        }
        let Some(essence) = essence else {
            return Err(violation(
                Reason::ContentTypeUnsupported,
                "/header/content-type".into(),
                "a content type is required",
            ));
        };
        let Some((media, validator)) = spec
            .media
            .iter()
            .find(|(m, _)| *m == essence)
            .or_else(|| spec.media.iter().find(|(m, _)| media_matches(m, &essence)))
        else {
            return Err(violation(
                Reason::ContentTypeUnsupported,
                "/header/content-type".into(),
                "content type not declared by the operation",
            ));
        };
        if req.body.is_empty() {
            if spec.required {
                return Err(violation(
                    Reason::BodyInvalid,
                    "/body".into(),
                    "a request body is required",
                ));
            }
            return Ok(());
        }
        if !is_json_media(media) && !is_json_media(&essence) {
            return Ok(());
        }
        let Some(validator) = validator else {
            return Ok(());
        };
        let Some(instance) = strict_json::parse(req.body) else {
            return Err(violation(
                Reason::BodyInvalid,
                "/body".into(),
                "not valid JSON (or duplicate member names, or nested too deep)",
            ));
        };
        if let Err(err) = validator.validate(&instance) {
            let (at, message) = describe(&err);
            return Err(violation(
                Reason::BodyInvalid,
                format!("/body{at}"),
                message,
            ));
        }
        Ok(())
    }
}

/// The pointer (relative to the instance) of the field a validation error is about, and what
/// is wrong with it — built from the error's kind, never from the instance's value.
fn describe(err: &jsonschema::ValidationError<'_>) -> (String, String) {
    let mut at = err.instance_path().as_str().to_string();
    let message = match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            if let Some(first) = unexpected.first() {
                at.push('/');
                at.push_str(&escape_pointer(first));
            }
            "undocumented property".to_string()
        }
        ValidationErrorKind::Required { property } => {
            if let Some(name) = property.as_str() {
                at.push('/');
                at.push_str(&escape_pointer(name));
            }
            "missing required property".to_string()
        }
        ValidationErrorKind::Type { .. } => "wrong type".to_string(),
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => {
            "value not allowed".to_string()
        }
        ValidationErrorKind::Pattern { .. } => "does not match the required pattern".to_string(),
        other => format!("does not satisfy `{}`", other.keyword()),
    };
    (at, message)
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Turns parameter text into the JSON value its schema type expects; text that does not parse
/// stays a string (and then fails the type check).
fn coerce(text: &str, kind: Option<&str>) -> Value {
    match kind {
        Some("integer") => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| {
                // JSON Schema integers have no size limit: a longer run of digits is still an
                // integer (kept as the nearest float, which has no fractional part).
                let digits = text.strip_prefix('-').unwrap_or(text);
                match text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                        Value::Number(n)
                    }
                    _ => Value::String(text.to_string()),
                }
            }),
        Some("number") => match text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) if !text.is_empty() => Value::Number(n),
            _ => Value::String(text.to_string()),
        },
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_string()),
        },
        Some("null") if text.is_empty() => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

/// `application/x-www-form-urlencoded` query parsing; invalid percent-encoding or UTF-8 is a
/// violation (the upstream might decode it differently).
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ContractViolation> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            violation(
                Reason::ParameterInvalid,
                "/query".into(),
                "malformed query string",
            )
        };
        out.push((
            percent_decode(k, true).ok_or_else(bad)?,
            percent_decode(v, true).ok_or_else(bad)?,
        ));
    }
    Ok(out)
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
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

/// Removes undeclared properties from `value` per `schema` (inlined; a leftover recursive
/// `$ref` is looked up in `components`).
fn scrub(
    schema: &Value,
    components: &Value,
    value: &mut Value,
    at: String,
    removed: &mut Vec<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => match r.strip_prefix("#/components").and_then(|rest| {
            sase_model::api_contract::resolve_local(components, &format!("#{rest}"))
        }) {
            Some(target) => target,
            None => return,
        },
        None => schema,
    };
    match value {
        Value::Object(object) => {
            let mut declared: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
            let mut open = false;
            let mut any_properties = false;
            collect_properties(
                schema,
                components,
                &mut declared,
                &mut open,
                &mut any_properties,
                0,
            );
            if !any_properties {
                // A free-form object (no `properties` anywhere): nothing is "undeclared".
                return;
            }
            let keys: Vec<String> = object.keys().cloned().collect();
            for key in keys {
                let child_at = format!("{at}/{}", escape_pointer(&key));
                match declared.get(&key) {
                    Some(schemas) => {
                        if let Some(child) = object.get_mut(&key) {
                            for s in schemas {
                                scrub(s, components, child, child_at.clone(), removed, depth + 1);
                            }
                        }
                    }
                    None if open => {}
                    None => {
                        object.remove(&key);
                        removed.push(child_at);
                    }
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.get("items");
            if let Some(item_schema) = item_schema {
                for (i, item) in items.iter_mut().enumerate() {
                    scrub(
                        item_schema,
                        components,
                        item,
                        format!("{at}/{i}"),
                        removed,
                        depth + 1,
                    );
                }
            }
            for key in ["allOf", "anyOf", "oneOf"] {
                if let Some(members) = schema.get(key).and_then(Value::as_array) {
                    if members.len() == 1 {
                        scrub(
                            &members[0],
                            components,
                            value,
                            at.clone(),
                            removed,
                            depth + 1,
                        );
                        return;
                    }
                }
            }
        }
        _ => {}
    }
}

/// Property schemas declared by `schema` (through `allOf`, `anyOf`, `oneOf` too); `open` when
/// extra properties are allowed (`additionalProperties` other than `false`,
/// `patternProperties`, `unevaluatedProperties` other than `false`).
fn collect_properties<'s>(
    schema: &'s Value,
    components: &'s Value,
    declared: &mut BTreeMap<String, Vec<&'s Value>>,
    open: &mut bool,
    any_properties: &mut bool,
    depth: usize,
) {
    if depth > 32 {
        *open = true;
        return;
    }
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => match r.strip_prefix("#/components").and_then(|rest| {
            sase_model::api_contract::resolve_local(components, &format!("#{rest}"))
        }) {
            Some(target) => target,
            None => {
                *open = true;
                return;
            }
        },
        None => schema,
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        *any_properties = true;
        for (k, v) in props {
            declared.entry(k.clone()).or_default().push(v);
        }
    }
    for key in ["additionalProperties", "unevaluatedProperties"] {
        if schema.get(key).is_some_and(|v| v != &Value::Bool(false)) {
            *open = true;
        }
    }
    if schema.get("patternProperties").is_some() {
        *open = true;
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(members) = schema.get(key).and_then(Value::as_array) {
            for m in members {
                collect_properties(m, components, declared, open, any_properties, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_30_keywords_become_2020_12() {
        let v = serde_json::json!({"type": "string", "nullable": true,
            "properties": {"n": {"type": "number", "minimum": 1, "exclusiveMinimum": true}}});
        let c = convert_30(v, true);
        assert_eq!(c["type"], serde_json::json!(["string", "null"]));
        assert_eq!(c["properties"]["n"]["exclusiveMinimum"], 1);
        assert!(c["properties"]["n"].get("minimum").is_none());
    }

    #[test]
    fn strictness_closes_objects_but_not_all_of_members() {
        let mut v = serde_json::json!({"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {"properties": {"c": {}}}}}]});
        make_strict(&mut v, false);
        assert_eq!(v["unevaluatedProperties"], false);
        assert!(v["allOf"][0].get("unevaluatedProperties").is_none());
        assert_eq!(
            v["allOf"][1]["properties"]["b"]["unevaluatedProperties"],
            false
        );
        let mut open = serde_json::json!({"properties": {"a": {}}, "additionalProperties": true});
        make_strict(&mut open, false);
        assert!(open.get("unevaluatedProperties").is_none());
    }

    #[test]
    fn long_digit_runs_are_integers() {
        assert!(coerce("156324509680136337803687493632", Some("integer")).is_number());
        assert!(coerce("-1", Some("integer")).is_i64());
        assert!(coerce("1e3", Some("integer")).is_string());
        assert!(coerce("", Some("integer")).is_string());
    }

    #[test]
    fn query_decoding_and_media_ranges() {
        let q = parse_query("a=1&b=x+y%21&a=2").expect("ok");
        assert_eq!(q[1], ("b".into(), "x y!".into()));
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%ff").is_err());
        assert!(media_matches("application/*", "application/json"));
        assert!(!media_matches("text/*", "application/json"));
        assert!(is_json_media("application/problem+json; charset=utf-8"));
        assert!(!is_json_media("text/json-ish"));
    }
}
