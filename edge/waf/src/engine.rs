//! The engine and the compiled rule set: [`WafEngine`] runs transactions against a
//! [`RuleSet`].
//!
//! A transaction is created, fed and dropped inside one call; libmodsecurity's
//! `Intervention` is read (status, disruptive, log line) and dropped at once, never cloned
//! (cloning it in `modsecurity` 0.1.4 frees its strings twice). Log lines reach a per-transaction
//! buffer through the logging callback, which runs synchronously on the calling thread.
//!
//! **Input rules.** Header names and values are handed over lossily as UTF-8 (the crate's API
//! takes `&str`), and a NUL byte anywhere in a header, the method, the URI or the version is
//! refused with [`WafError::InvalidInput`] before libmodsecurity sees anything: the edge
//! answers such a request itself with 400 (protocol error). Bodies may hold any byte.
//!
//! **Modes.** `off` never reaches libmodsecurity. `detect` runs the scope rule's
//! `ctl:ruleEngine=DetectionOnly`, so libmodsecurity never intervenes and every rule runs;
//! `would_block` then says what `block` would have done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use modsecurity::{ModSecurity, ModSecurityError, Rules, Transaction};
use sase_model::policy::{WafMode, WafSettings};

use crate::config::{self, CrsPaths, Plan, ScopeEntry};
use crate::error::WafError;
use crate::findings::{self, Direction, Findings};
use crate::index::{self, RuleMeta};

/// Most log lines kept per transaction (each matched rule logs about one; the rest are
/// dropped, except the score trailers).
const MAX_LOG_LINES: usize = 1024;

/// Rules of the base configuration that deny: in detect mode a match of one of them still
/// means `would_block`.
const BASE_DENY_RULES: [u32; 2] = [200_002, 200_007];

/// One process-wide libmodsecurity instance. Send + Sync: any number of threads may inspect
/// at once, each call running its own transaction.
pub struct WafEngine {
    msc: ModSecurity,
    next_tx: AtomicU64,
}

impl std::fmt::Debug for WafEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WafEngine")
            .field("transactions", &self.next_tx.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for WafEngine {
    fn default() -> WafEngine {
        WafEngine::new()
    }
}

/// A compiled CRS rule set for one policy version: one libmodsecurity rule set for the whole
/// policy. Per-scope settings are applied per transaction by the scope rules, so a policy
/// change compiles CRS once, not once per resource. Send + Sync.
pub struct RuleSet {
    rules: Rules,
    digest: String,
    text: String,
    scopes: HashMap<String, ScopeEntry>,
    index: HashMap<u32, RuleMeta>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("digest", &self.digest)
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

/// A request as the edge received it (complete: the body is buffered before inspection).
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// Client address (the tunnel peer or TCP peer), e.g. `192.0.2.10`.
    pub client_ip: &'a str,
    /// Client port.
    pub client_port: u16,
    /// Address the request arrived on.
    pub server_ip: &'a str,
    /// Port the request arrived on.
    pub server_port: u16,
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path and query as received (`/a/b?x=1`).
    pub uri: &'a str,
    /// `1.0`, `1.1`, `2` or `3`.
    pub http_version: &'a str,
    /// Header fields in order, as raw bytes.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The body (empty when there is none).
    pub body: &'a [u8],
}

/// A response from the upstream.
#[derive(Debug, Clone, Copy)]
pub struct HttpResponse<'a> {
    /// Status code.
    pub status: u16,
    /// `1.1`, `2` or `3`.
    pub http_version: &'a str,
    /// Header fields in order, as raw bytes (the body is inspected only when `Content-Type`
    /// is `text/plain`, `text/html`, `text/xml` or `application/json`).
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The body; only the first [`config::RESPONSE_BODY_LIMIT_BYTES`] are inspected.
    pub body: &'a [u8],
}

impl RuleSet {
    /// Compiles CRS plus the per-scope settings. `scopes` holds every (scope key, effective
    /// settings) the policy uses; the key names a resource/route (e.g. `orders/list-orders`).
    /// Scopes with equal settings share one scope rule; scopes in mode `off` get none.
    ///
    /// # Errors
    /// [`WafError::Load`] with libmodsecurity's own message when the text does not load (an
    /// exclusion target it does not accept as a variable, a missing CRS file), or why the
    /// settings cannot be expressed (paranoia level outside 1-4, a tag or target with
    /// characters that no CRS tag or variable has, one key listed twice with different
    /// settings).
    pub fn compile(crs: &CrsPaths, scopes: &[(String, WafSettings)]) -> Result<RuleSet, WafError> {
        let plan = Plan::new(scopes);
        if !plan.problems.is_empty() {
            return Err(WafError::Load(plan.problems.join("; ")));
        }
        let files = config::crs_files(crs)?;
        for file in &files {
            config::check_include(file)?;
        }
        for check in &plan.targets {
            check_target(&check.target).map_err(|msg| {
                WafError::Load(format!(
                    "exclusion target `{}` ({}) is not a variable libmodsecurity accepts: {msg}",
                    check.target, check.context
                ))
            })?;
        }
        let text = plan.text(&files);
        let mut rules = Rules::new();
        rules
            .add_plain(&text)
            .map_err(|e| WafError::Load(load_message(e)))?;
        Ok(RuleSet {
            rules,
            digest: plan.digest(),
            text,
            scopes: plan.scopes,
            index: index::build(&files),
        })
    }

    /// A digest of the configuration that [`RuleSet::compile`] would generate for `scopes`
    /// (and of how scope keys map onto it): equal digests mean compile() would produce the same
    /// rule set, so the edge keeps the old one. The order of `scopes`, settings the WAF does not
    /// use (`request_body_limit`, `on_overload`) and the CRS file contents are not part of it.
    pub fn config_digest(scopes: &[(String, WafSettings)]) -> String {
        Plan::new(scopes).digest()
    }

    /// The digest of this rule set (as [`RuleSet::config_digest`] of its scopes).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The complete configuration text this rule set was compiled from (base text, scope
    /// rules, `Include` lines for the CRS files, score trailers): what the nginx + ModSecurity
    /// comparison loads to run the same rules.
    pub fn config_text(&self) -> &str {
        &self.text
    }

    /// The scope keys this rule set knows.
    pub fn scope_keys(&self) -> impl Iterator<Item = &str> {
        self.scopes.keys().map(String::as_str)
    }

    fn scope(&self, key: &str) -> Result<&ScopeEntry, WafError> {
        self.scopes
            .get(key)
            .ok_or_else(|| WafError::UnknownScope(key.to_string()))
    }
}

impl WafEngine {
    /// Creates the libmodsecurity instance (with log callbacks enabled).
    pub fn new() -> WafEngine {
        WafEngine {
            msc: ModSecurity::builder().with_log_callbacks().build(),
            next_tx: AtomicU64::new(1),
        }
    }

    /// libmodsecurity's version string, e.g. `ModSecurity v3.0.9 (Linux)`.
    pub fn version(&self) -> &str {
        self.msc.whoami()
    }

    /// Runs the request phases (connection, URI, headers, body) for the scope. Mode `off`
    /// returns empty findings without touching libmodsecurity.
    ///
    /// # Errors
    /// [`WafError::UnknownScope`] for a key the rule set was not compiled with,
    /// [`WafError::InvalidInput`] for a NUL byte in a header, the method, URI or version, or a
    /// body over [`config::MAX_REQUEST_BODY_BYTES`], and [`WafError::Engine`] when
    /// libmodsecurity fails.
    pub fn inspect_request(
        &self,
        rules: &RuleSet,
        scope_key: &str,
        req: &HttpRequest<'_>,
    ) -> Result<Findings, WafError> {
        let scope = rules.scope(scope_key)?;
        let Some(class) = scope.class.filter(|_| scope.mode != WafMode::Off) else {
            return Ok(Findings::default());
        };
        check_request(req)?;
        if req.body.len() > config::MAX_REQUEST_BODY_BYTES {
            return Err(WafError::InvalidInput(format!(
                "request body of {} bytes exceeds the WAF limit of {} bytes",
                req.body.len(),
                config::MAX_REQUEST_BODY_BYTES
            )));
        }
        let id = format!("{class}.q{}", self.tx_number());
        let mut run = Run::start(self, rules, &id)?;
        run.request_head(req)?;
        if !run.stopped() && !req.body.is_empty() {
            let r = run.tx.append_request_body(req.body);
            run.step(r, "append request body")?;
        }
        if !run.stopped() {
            let r = run.tx.process_request_body();
            run.step(r, "request body phase")?;
        }
        Ok(run.finish(rules, scope, Direction::Inbound, scope.inbound_threshold))
    }

    /// Runs the response phases when the scope has `inspect_responses` (empty findings
    /// otherwise, and in mode `off`): a fresh transaction in which the request line and headers
    /// are replayed first (CRS's request rules are switched off for it, and its request body
    /// phase is not run), then the response headers and body.
    ///
    /// # Errors
    /// As [`WafEngine::inspect_request`].
    pub fn inspect_response(
        &self,
        rules: &RuleSet,
        scope_key: &str,
        req: &HttpRequest<'_>,
        resp: &HttpResponse<'_>,
    ) -> Result<Findings, WafError> {
        let scope = rules.scope(scope_key)?;
        let Some(class) = scope
            .class
            .filter(|_| scope.mode != WafMode::Off && scope.inspect_responses)
        else {
            return Ok(Findings::default());
        };
        check_request(req)?;
        check_text("response version", resp.http_version)?;
        for (name, value) in resp.headers {
            check_header(name, value)?;
        }
        let id = format!("{class}.r{}", self.tx_number());
        let mut run = Run::start(self, rules, &id)?;
        run.request_head(req)?;
        if !run.stopped() {
            for (name, value) in resp.headers {
                let r = run.tx.add_response_header(
                    &String::from_utf8_lossy(name),
                    &String::from_utf8_lossy(value),
                );
                run.step(r, "add response header")?;
            }
            let protocol = format!("HTTP/{}", resp.http_version);
            let r = run
                .tx
                .process_response_headers(i32::from(resp.status), &protocol);
            run.step(r, "response headers phase")?;
        }
        if !run.stopped() && !resp.body.is_empty() {
            let body = &resp.body[..resp.body.len().min(config::RESPONSE_BODY_LIMIT_BYTES)];
            let r = run.tx.append_response_body(body);
            run.step(r, "append response body")?;
        }
        if !run.stopped() {
            let r = run.tx.process_response_body();
            run.step(r, "response body phase")?;
        }
        Ok(run.finish(rules, scope, Direction::Outbound, scope.outbound_threshold))
    }

    fn tx_number(&self) -> u64 {
        self.next_tx.fetch_add(1, Ordering::Relaxed)
    }
}

/// What libmodsecurity's intervention said (copied out; the `Intervention` itself is dropped
/// at once and never cloned).
#[derive(Debug, Default)]
struct Stop {
    status: Option<u16>,
    log: Option<String>,
}

/// One transaction in progress.
struct Run<'a> {
    tx: Transaction<'a>,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Option<Stop>,
}

impl<'a> Run<'a> {
    fn start(engine: &'a WafEngine, rules: &'a RuleSet, id: &'a str) -> Result<Run<'a>, WafError> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let tx = engine
            .msc
            .transaction_builder()
            .with_rules(&rules.rules)
            .with_id(id)
            .with_logging(move |line: Option<&str>| {
                // Runs inside libmodsecurity (an `extern "C"` frame): must never panic.
                let Some(line) = line else { return };
                let mut lines = sink.lock().unwrap_or_else(|p| p.into_inner());
                // Past the cap only the score trailers are kept (they come last).
                if lines.len() < MAX_LOG_LINES
                    || line.contains(config::INBOUND_SCORE_MSG)
                    || line.contains(config::OUTBOUND_SCORE_MSG)
                {
                    lines.push(line.to_string());
                }
            })
            .build()
            .map_err(|e| WafError::Engine(e.to_string()))?;
        Ok(Run {
            tx,
            lines,
            stop: None,
        })
    }

    fn stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// Connection, URI and request header phases.
    fn request_head(&mut self, req: &HttpRequest<'_>) -> Result<(), WafError> {
        let r = self.tx.process_connection(
            req.client_ip,
            i32::from(req.client_port),
            req.server_ip,
            i32::from(req.server_port),
        );
        self.step(r, "connection phase")?;
        if self.stopped() {
            return Ok(());
        }
        let r = self.tx.process_uri(req.uri, req.method, req.http_version);
        self.step(r, "URI phase")?;
        if self.stopped() {
            return Ok(());
        }
        for (name, value) in req.headers {
            let r = self.tx.add_request_header(
                &String::from_utf8_lossy(name),
                &String::from_utf8_lossy(value),
            );
            self.step(r, "add request header")?;
        }
        let r = self.tx.process_request_headers();
        self.step(r, "request headers phase")
    }

    /// Checks the result of one libmodsecurity call and whether it intervened.
    fn step(&mut self, result: Result<(), ModSecurityError>, what: &str) -> Result<(), WafError> {
        match result {
            Ok(()) => {}
            Err(ModSecurityError::Nul(_)) => {
                return Err(WafError::InvalidInput(format!("NUL byte in {what}")))
            }
            Err(e) => return Err(WafError::Engine(format!("{what}: {e}"))),
        }
        if let Some(intervention) = self.tx.intervention() {
            if intervention.disruptive() {
                self.stop = Some(Stop {
                    status: u16::try_from(intervention.status()).ok(),
                    log: intervention.log().map(str::to_string),
                });
            }
            // `intervention` is dropped here: its strings are freed exactly once.
        }
        Ok(())
    }

    /// Drops the transaction and turns its log lines into findings.
    fn finish(
        self,
        rules: &RuleSet,
        scope: &ScopeEntry,
        direction: Direction,
        threshold: u32,
    ) -> Findings {
        let Run { tx, lines, stop } = self;
        drop(tx);
        let mut lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(log) = stop.as_ref().and_then(|s| s.log.clone()) {
            lines.push(log);
        }
        let (matches, anomaly_score) = findings::collect(&lines, direction, &rules.index);
        let denied_by_base = matches.iter().any(|m| BASE_DENY_RULES.contains(&m.id));
        let would_block = stop.is_some() || anomaly_score >= threshold || denied_by_base;
        Findings {
            matches,
            anomaly_score,
            would_block,
            blocked: would_block && scope.mode == WafMode::Block,
            status: stop.and_then(|s| s.status),
        }
    }
}

/// Refuses NUL bytes where libmodsecurity needs C strings.
fn check_request(req: &HttpRequest<'_>) -> Result<(), WafError> {
    check_text("client address", req.client_ip)?;
    check_text("server address", req.server_ip)?;
    check_text("method", req.method)?;
    check_text("URI", req.uri)?;
    check_text("HTTP version", req.http_version)?;
    for (name, value) in req.headers {
        check_header(name, value)?;
    }
    Ok(())
}

fn check_text(what: &str, text: &str) -> Result<(), WafError> {
    if text.contains('\0') {
        return Err(WafError::InvalidInput(format!("NUL byte in the {what}")));
    }
    Ok(())
}

fn check_header(name: &[u8], value: &[u8]) -> Result<(), WafError> {
    if name.contains(&0) || value.contains(&0) {
        return Err(WafError::InvalidInput(format!(
            "NUL byte in header {:?}",
            String::from_utf8_lossy(name).replace('\0', "\\0")
        )));
    }
    Ok(())
}

/// Asks libmodsecurity whether `target` is a variable, by parsing a throwaway rule that uses
/// it (`ctl:ruleRemoveTargetById` itself accepts any text after the `;`).
fn check_target(target: &str) -> Result<(), String> {
    let mut probe = Rules::new();
    probe
        .add_plain(&format!(
            "SecRule {target} \"@unconditionalMatch\" \"id:1,phase:2,pass,nolog\"\n"
        ))
        .map_err(load_message)
}

/// libmodsecurity's own message from a failed load.
fn load_message(e: ModSecurityError) -> String {
    match e {
        ModSecurityError::RulesAddPlain(msg) | ModSecurityError::RulesAddFile(msg) => {
            msg.trim().to_string()
        }
        other => other.to_string(),
    }
}
