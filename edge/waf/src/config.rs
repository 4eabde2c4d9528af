//! The configuration text that libmodsecurity compiles, generated in one place.
//!
//! One [`crate::RuleSet`] is one libmodsecurity rule set for a whole policy, loaded from a single
//! text in this order:
//!
//! 1. [`base_config_text`]: engine directives (adapted from `modsecurity.conf-recommended`),
//!    the JSON/XML body processor rules and a few CRS tunings that do not depend on the policy;
//! 2. one *scope rule* per distinct WAF configuration (paranoia level, thresholds, detect mode,
//!    exclusions), each guarded by the transaction id that [`crate::WafEngine`] gives the
//!    transaction (see below), plus the response marker rule;
//! 3. `Include` lines for [`crs_include_list`]: `crs-setup.conf`, then the CRS rule files;
//! 4. two trailer rules that log the final inbound / outbound anomaly score.
//!
//! Everything is loaded with one `msc_rules_add` call: libmodsecurity 3.0.9 puts rules added
//! by a later `add_file` call *before* rules added by an earlier `add_plain` call within the
//! same phase, so mixing the two would run the scope rules after CRS's phase-1 rules.
//!
//! **Scope marker.** The engine names every transaction `<class>.q<n>` (request) or
//! `<class>.r<n>` (response) through `msc_new_transaction_with_id`, and each scope rule matches
//! `UNIQUE_ID` with `@beginsWith <class>.`. No header is added to the request, so no CRS rule can
//! score on the marker, and nothing can leak upstream. Scopes with identical settings share a
//! class, so a policy with many routes still has few scope rules.
//!
//! **Collections.** CRS 3.3 initialises the shared `ip` and `global` collections in rule 901321
//! unconditionally (there is no `tx.enable_default_collections` switch before CRS 4), and rules
//! 910xxx (IP reputation), 912xxx (DoS protection) and 949100 read or write them. libmodsecurity
//! 3.0.9's shared collections race under threads, so the base text removes 901321 and 949100,
//! and [`crs_include_list`] leaves out the 910 and 912 files. Nothing then touches a persistent
//! collection; the edge has its own rate limits.
//!
//! **Body limits.** The edge enforces each scope's `request_body_limit` itself (413) before
//! the WAF. libmodsecurity's own limits are set to [`MAX_REQUEST_BODY_BYTES`] (request, with and
//! without files) so that it never refuses a body the edge accepted; responses are inspected up to
//! [`RESPONSE_BODY_LIMIT_BYTES`] (the rest passes uninspected: `ProcessPartial`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sase_model::policy::{RuleExclusion, WafMode, WafSettings};
use sha2::{Digest, Sha256};

use crate::error::WafError;

/// Largest request body libmodsecurity accepts (`SecRequestBodyLimit`,
/// `SecRequestBodyNoFilesLimit`): 1 GiB. The edge's per-scope limit is always lower in practice;
/// a longer body is refused by [`crate::WafEngine::inspect_request`] with
/// [`WafError::InvalidInput`].
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 30;

/// Response body bytes inspected (`SecResponseBodyLimit`, `ProcessPartial`): 1 MiB.
pub const RESPONSE_BODY_LIMIT_BYTES: usize = 1 << 20;

/// First rule id of the scope rules (class `n` gets `SCOPE_RULE_BASE + n`).
pub(crate) const SCOPE_RULE_BASE: u32 = 10_000;
/// Most distinct WAF configurations one rule set can hold (ids 10001..=98999).
pub(crate) const MAX_CLASSES: usize = 88_999;
/// The rule that removes request rules from response transactions.
pub(crate) const RESPONSE_MARKER_RULE: u32 = 99_001;
/// The phase-2 trailer that logs the inbound anomaly score.
pub(crate) const INBOUND_SCORE_RULE: u32 = 99_010;
/// The phase-4 trailer that logs the outbound anomaly score.
pub(crate) const OUTBOUND_SCORE_RULE: u32 = 99_020;
/// Message prefix of [`INBOUND_SCORE_RULE`].
pub(crate) const INBOUND_SCORE_MSG: &str = "sase-waf inbound anomaly score ";
/// Message prefix of [`OUTBOUND_SCORE_RULE`].
pub(crate) const OUTBOUND_SCORE_MSG: &str = "sase-waf outbound anomaly score ";
/// Ids of this crate's own plumbing rules; never reported as matches.
pub(crate) const INTERNAL_IDS: std::ops::RangeInclusive<u32> = 10_000..=99_999;

/// CRS request rule ids skipped in response transactions (the request was inspected already).
const REQUEST_RULES_IN_RESPONSES: &str = "905000-949999";

/// CRS rule files that need the shared `ip` collection (IP reputation, DoS protection).
const SKIPPED_CRS_FILES: [&str; 2] = ["REQUEST-910-", "REQUEST-912-"];

/// Where the OWASP Core Rule Set lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrsPaths {
    /// `crs-setup.conf` (loaded first).
    pub setup: PathBuf,
    /// Directory of the `*.conf` rule files and the `*.data` files they read.
    pub rules_dir: PathBuf,
}

impl Default for CrsPaths {
    /// The Debian `modsecurity-crs` package: `/etc/modsecurity/crs/crs-setup.conf` and
    /// `/usr/share/modsecurity-crs/rules`.
    fn default() -> CrsPaths {
        CrsPaths {
            setup: PathBuf::from("/etc/modsecurity/crs/crs-setup.conf"),
            rules_dir: PathBuf::from("/usr/share/modsecurity-crs/rules"),
        }
    }
}

/// The directives loaded before any scope rule or CRS file, identical for every policy.
///
/// The nginx + ModSecurity comparison setup loads this same text (or, simpler,
/// [`crate::RuleSet::config_text`], which starts with it). What it sets, and why:
///
/// * engine on, request and response body access on (the edge feeds response bodies only to
///   scopes with `inspect_responses`), response MIME types including `application/json`;
/// * the JSON / XML body processor rules 200000 / 200001, the argument-count rule 200007 and
///   the body parse error rule 200002 (400), as in `modsecurity.conf-recommended`;
/// * body limits far above any edge limit (see the module docs), PCRE match limits of 1000;
/// * no audit log, no status engine, `&` as argument separator, version 0 cookies;
/// * no `SecUnicodeMapFile`: neither `libmodsecurity3` nor `modsecurity-crs` ships
///   `unicode.mapping` (Debian's copy belongs to the nginx module package, which the appliance
///   does not install), and `%uXXXX` decoding works without it;
/// * `tx.allowed_http_versions` adds HTTP/3 (the edge inspects HTTP/3 requests; CRS 3.3 would
///   otherwise score every one of them with 920430);
/// * removal of 901321 (initialises the shared `ip` / `global` collections) and 949100 (reads
///   `IP:REPUT_BLOCK_FLAG`): shared collections race under threads in libmodsecurity 3.0.9.
pub fn base_config_text() -> String {
    let mut t = String::new();
    t.push_str("# sase-waf base configuration (modsecurity.conf-recommended, adapted)\n");
    t.push_str("SecRuleEngine On\n");
    t.push_str("SecRequestBodyAccess On\n");
    t.push_str(
        "SecRule REQUEST_HEADERS:Content-Type \"^(?:application(?:/soap\\+|/)|text/)xml\" \
         \"id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML\"\n",
    );
    t.push_str(
        "SecRule REQUEST_HEADERS:Content-Type \"^application/json\" \
         \"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON\"\n",
    );
    let _ = writeln!(t, "SecRequestBodyLimit {MAX_REQUEST_BODY_BYTES}");
    let _ = writeln!(t, "SecRequestBodyNoFilesLimit {MAX_REQUEST_BODY_BYTES}");
    t.push_str("SecRequestBodyLimitAction Reject\n");
    t.push_str("SecRequestBodyJsonDepthLimit 512\n");
    t.push_str("SecArgumentsLimit 1000\n");
    t.push_str(
        "SecRule &ARGS \"@ge 1000\" \"id:200007,phase:2,t:none,log,deny,status:400,\
         msg:'Failed to fully parse request body due to large argument count',severity:2\"\n",
    );
    t.push_str(
        "SecRule REQBODY_ERROR \"!@eq 0\" \"id:200002,phase:2,t:none,log,deny,status:400,\
         msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2\"\n",
    );
    t.push_str("SecPcreMatchLimit 1000\n");
    t.push_str("SecPcreMatchLimitRecursion 1000\n");
    t.push_str("SecResponseBodyAccess On\n");
    t.push_str("SecResponseBodyMimeType text/plain text/html text/xml application/json\n");
    let _ = writeln!(t, "SecResponseBodyLimit {RESPONSE_BODY_LIMIT_BYTES}");
    t.push_str("SecResponseBodyLimitAction ProcessPartial\n");
    t.push_str("SecAuditEngine Off\n");
    t.push_str("SecArgumentSeparator &\n");
    t.push_str("SecCookieFormat 0\n");
    t.push_str("SecStatusEngine Off\n");
    t.push_str(
        "SecAction \"id:99000,phase:1,pass,nolog,noauditlog,t:none,\
         setvar:'tx.allowed_http_versions=HTTP/1.0 HTTP/1.1 HTTP/2 HTTP/2.0 HTTP/3 HTTP/3.0'\"\n",
    );
    t.push_str("SecRuleRemoveById 901321 949100\n");
    t
}

/// The files loaded after the scope rules, in order: `crs.setup`, then every `*.conf` in
/// `crs.rules_dir` sorted by name, except `REQUEST-910-*` and `REQUEST-912-*` (they need the
/// shared `ip` collection; see the module docs). Debian's `owasp-crs.load` is never used (it is
/// an Apache `IncludeOptional` file), nor are the commented-out exclusion templates in
/// `/etc/modsecurity/crs`.
///
/// When the directory cannot be read the list holds only `crs.setup`;
/// [`crate::RuleSet::compile`] reports that case as [`WafError::Load`].
pub fn crs_include_list(crs: &CrsPaths) -> Vec<PathBuf> {
    crs_files(crs).unwrap_or_else(|_| vec![crs.setup.clone()])
}

/// [`crs_include_list`], with the reason when the rule directory is unusable.
pub(crate) fn crs_files(crs: &CrsPaths) -> Result<Vec<PathBuf>, WafError> {
    let entries = std::fs::read_dir(&crs.rules_dir).map_err(|e| {
        WafError::Load(format!(
            "cannot read the CRS rules directory {}: {e}",
            crs.rules_dir.display()
        ))
    })?;
    let mut rules = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| WafError::Load(format!("cannot list {}: {e}", crs.rules_dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".conf") || SKIPPED_CRS_FILES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        rules.push(entry.path());
    }
    rules.sort();
    if !rules.iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("REQUEST-949-"))
    }) {
        return Err(WafError::Load(format!(
            "{} holds no CRS rules (REQUEST-949-BLOCKING-EVALUATION.conf is missing)",
            crs.rules_dir.display()
        )));
    }
    let mut files = Vec::with_capacity(rules.len() + 1);
    files.push(crs.setup.clone());
    files.extend(rules);
    Ok(files)
}

/// How one scope is enforced, as the engine needs it per transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeEntry {
    /// Index of the scope rule (`None` when the mode is `off`: no rule, no inspection).
    pub class: Option<u32>,
    /// Detect or block.
    pub mode: WafMode,
    /// Inbound anomaly threshold.
    pub inbound_threshold: u32,
    /// Outbound anomaly threshold.
    pub outbound_threshold: u32,
    /// Whether responses are inspected.
    pub inspect_responses: bool,
}

/// A variable named by an exclusion target, to be checked by libmodsecurity before compiling.
#[derive(Debug, Clone)]
pub(crate) struct TargetCheck {
    /// The normalised target (`ARGS:comment`).
    pub target: String,
    /// Where it came from, for the error message.
    pub context: String,
}

/// Everything generated from the scopes of a policy (no file system access).
#[derive(Debug)]
pub(crate) struct Plan {
    /// Scope rules plus the response marker rule (goes between base text and CRS).
    pub scope_rules: String,
    /// Trailer rules (go after CRS).
    pub trailer: String,
    /// Per scope key.
    pub scopes: HashMap<String, ScopeEntry>,
    /// Targets to validate.
    pub targets: Vec<TargetCheck>,
    /// Problems that make the settings unloadable (reported by compile).
    pub problems: Vec<String>,
    /// The canonical scope table (part of the digest).
    table: String,
}

impl Plan {
    /// Generates the rules for `scopes`. Never fails: problems are collected in `problems`.
    pub fn new(scopes: &[(String, WafSettings)]) -> Plan {
        let mut problems = Vec::new();
        let mut targets: BTreeMap<String, String> = BTreeMap::new();
        // Actions of every scope that inspects, and the distinct action strings (sorted, so the
        // text does not depend on the order of `scopes` or on scope names).
        let mut per_scope: BTreeMap<&str, (&WafSettings, Option<String>)> = BTreeMap::new();
        for (key, settings) in scopes {
            if let Some((seen, _)) = per_scope.get(key.as_str()) {
                if *seen != settings {
                    problems.push(format!(
                        "scope `{key}` is listed twice with different settings"
                    ));
                }
                continue;
            }
            let actions = if settings.mode == WafMode::Off {
                None
            } else {
                Some(scope_actions(key, settings, &mut problems, &mut targets))
            };
            per_scope.insert(key.as_str(), (settings, actions));
        }
        let classes: BTreeSet<&str> = per_scope
            .values()
            .filter_map(|(_, a)| a.as_deref())
            .collect();
        if classes.len() > MAX_CLASSES {
            problems.push(format!(
                "{} distinct WAF configurations; at most {MAX_CLASSES} fit in one rule set",
                classes.len()
            ));
        }
        let class_of: HashMap<&str, u32> = classes
            .iter()
            .zip(1u32..)
            .map(|(actions, n)| (*actions, n))
            .collect();

        let mut scope_rules = String::from("# sase-waf scope rules (one per distinct setting)\n");
        for (actions, n) in classes.iter().zip(1u32..) {
            let _ = writeln!(
                scope_rules,
                "SecRule UNIQUE_ID \"@beginsWith {n}.\" \"id:{},phase:1,pass,nolog,noauditlog,\
                 t:none,{actions}\"",
                SCOPE_RULE_BASE + n
            );
        }
        let _ = writeln!(
            scope_rules,
            "SecRule UNIQUE_ID \"@contains .r\" \"id:{RESPONSE_MARKER_RULE},phase:1,pass,nolog,\
             noauditlog,t:none,ctl:ruleRemoveById={REQUEST_RULES_IN_RESPONSES}\""
        );

        let mut trailer = String::from("# sase-waf anomaly score trailers\n");
        let _ = writeln!(
            trailer,
            "SecAction \"id:{INBOUND_SCORE_RULE},phase:2,pass,log,noauditlog,t:none,\
             msg:'{INBOUND_SCORE_MSG}%{{tx.anomaly_score}}'\""
        );
        let _ = writeln!(
            trailer,
            "SecAction \"id:{OUTBOUND_SCORE_RULE},phase:4,pass,log,noauditlog,t:none,\
             msg:'{OUTBOUND_SCORE_MSG}%{{tx.outbound_anomaly_score}}'\""
        );

        let mut table = String::new();
        let mut entries = HashMap::with_capacity(per_scope.len());
        for (key, (settings, actions)) in &per_scope {
            let class = actions.as_deref().and_then(|a| class_of.get(a).copied());
            let entry = ScopeEntry {
                class,
                mode: settings.mode,
                inbound_threshold: settings.inbound_threshold,
                outbound_threshold: settings.outbound_threshold,
                inspect_responses: settings.inspect_responses,
            };
            let _ = writeln!(
                table,
                "{key:?} {class:?} {:?} {} {} {}",
                entry.mode,
                entry.inbound_threshold,
                entry.outbound_threshold,
                entry.inspect_responses
            );
            entries.insert((*key).to_string(), entry);
        }

        Plan {
            scope_rules,
            trailer,
            scopes: entries,
            targets: targets
                .into_iter()
                .map(|(target, context)| TargetCheck { target, context })
                .collect(),
            problems,
            table,
        }
    }

    /// The complete configuration text with `Include` lines for `files`.
    pub fn text(&self, files: &[PathBuf]) -> String {
        let mut t = base_config_text();
        t.push_str(&self.scope_rules);
        t.push_str("# OWASP CRS\n");
        for file in files {
            let _ = writeln!(t, "Include {}", file.display());
        }
        t.push_str(&self.trailer);
        t
    }

    /// The digest of everything compile() derives from the scopes (the CRS files are named by
    /// a fixed placeholder: they only change with a package upgrade, which restarts the edge).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(concat!("sase-waf/", env!("CARGO_PKG_VERSION"), "\n"));
        h.update(base_config_text());
        h.update(&self.scope_rules);
        h.update("# OWASP CRS\nInclude <crs>\n");
        h.update(&self.trailer);
        h.update("# scopes\n");
        h.update(&self.table);
        hex::encode(h.finalize())
    }
}

/// The actions of one scope's rule. Exclusions are sorted and deduplicated so that the same
/// settings always give the same text.
fn scope_actions(
    key: &str,
    s: &WafSettings,
    problems: &mut Vec<String>,
    targets: &mut BTreeMap<String, String>,
) -> String {
    if !(1..=4).contains(&s.paranoia_level) {
        problems.push(format!(
            "scope `{key}`: paranoia level {} is not 1-4",
            s.paranoia_level
        ));
    }
    if s.inbound_threshold == 0 || s.outbound_threshold == 0 {
        problems.push(format!(
            "scope `{key}`: anomaly thresholds must be at least 1"
        ));
    }
    let pl = s.paranoia_level;
    let mut a = format!(
        "setvar:tx.paranoia_level={pl},setvar:tx.executing_paranoia_level={pl},\
         setvar:tx.inbound_anomaly_score_threshold={},\
         setvar:tx.outbound_anomaly_score_threshold={}",
        s.inbound_threshold, s.outbound_threshold
    );
    if !s.route_methods.is_empty() {
        // Read by CRS 911100; 901 sets its default only when the variable is still unset.
        let mut methods: Vec<&str> = s.route_methods.iter().map(|m| m.as_str()).collect();
        methods.sort_unstable();
        methods.dedup();
        let _ = write!(a, ",setvar:'tx.allowed_methods={}'", methods.join(" "));
    }
    if s.mode == WafMode::Detect {
        a.push_str(",ctl:ruleEngine=DetectionOnly");
    }
    let mut ctls = BTreeSet::new();
    for ex in &s.exclusions {
        match exclusion_ctl(ex) {
            Ok((ctl, target)) => {
                if let Some(target) = target {
                    targets.entry(target).or_insert_with(|| {
                        format!(
                            "scope `{key}`, rule {}",
                            ex.rule_id.map_or(String::new(), |id| id.to_string())
                        )
                    });
                }
                ctls.insert(ctl);
            }
            Err(why) => problems.push(format!("scope `{key}`: {why}")),
        }
    }
    for ctl in ctls {
        a.push(',');
        a.push_str(&ctl);
    }
    a
}

/// The `ctl:` action of one exclusion, and its normalised target if it has one.
fn exclusion_ctl(ex: &RuleExclusion) -> Result<(String, Option<String>), String> {
    match (ex.rule_id, ex.tag.as_deref(), ex.target.as_deref()) {
        (Some(0), None, _) => Err("exclusion rule id 0 is not a rule".into()),
        (Some(id), None, None) => Ok((format!("ctl:ruleRemoveById={id}"), None)),
        (Some(id), None, Some(target)) => {
            let target = normalise_target(target)?;
            Ok((
                format!("ctl:ruleRemoveTargetById={id};{target}"),
                Some(target),
            ))
        }
        (None, Some(tag), None) => {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/' | b'.'));
            if ok {
                Ok((format!("ctl:ruleRemoveByTag={tag}"), None))
            } else {
                Err(format!("exclusion tag {tag:?} is not a CRS tag"))
            }
        }
        (None, Some(_), Some(_)) => Err("an exclusion target needs a rule_id, not a tag".into()),
        (Some(_), Some(_), _) => Err("an exclusion sets either rule_id or tag, not both".into()),
        (None, None, _) => Err("an exclusion must set rule_id or tag".into()),
    }
}

/// Checks the characters of a target (nothing that could end the action list) and upper-cases
/// its collection: libmodsecurity compares `ctl:ruleRemoveTargetById` targets with the
/// variable's `COLLECTION:key` name byte for byte, so `args:q` would silently match nothing.
/// The key keeps its case (argument names are case-sensitive).
fn normalise_target(target: &str) -> Result<String, String> {
    let ok = !target.is_empty()
        && target.len() <= 256
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.' | b'[' | b']')
        });
    if !ok {
        return Err(format!(
            "exclusion target {target:?} must be a variable such as ARGS:name"
        ));
    }
    Ok(match target.split_once(':') {
        Some((collection, key)) => format!("{}:{key}", collection.to_ascii_uppercase()),
        None => target.to_ascii_uppercase(),
    })
}

/// Checks that a file can be named on an `Include` line (UTF-8, no spaces, quotes or control
/// characters) and exists.
pub(crate) fn check_include(path: &Path) -> Result<(), WafError> {
    let Some(text) = path.to_str() else {
        return Err(WafError::Load(format!(
            "CRS path {} is not UTF-8",
            path.display()
        )));
    };
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '#'))
    {
        return Err(WafError::Load(format!(
            "CRS path {text:?} contains a space, quote or control character"
        )));
    }
    if !path.is_file() {
        return Err(WafError::Load(format!("CRS file {text} does not exist")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WafSettings {
        WafSettings::default()
    }

    #[test]
    fn scopes_with_equal_settings_share_one_rule_and_order_does_not_matter() {
        let mut detect = settings();
        detect.mode = WafMode::Detect;
        let a = Plan::new(&[
            ("a".into(), settings()),
            ("b".into(), settings()),
            ("c".into(), detect.clone()),
        ]);
        let b = Plan::new(&[
            ("c".into(), detect),
            ("b".into(), settings()),
            ("a".into(), settings()),
        ]);
        assert_eq!(a.scope_rules, b.scope_rules);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.scope_rules.matches("@beginsWith").count(), 2);
        assert_eq!(a.scopes["a"].class, a.scopes["b"].class);
        assert_ne!(a.scopes["a"].class, a.scopes["c"].class);
    }

    #[test]
    fn off_scopes_get_no_rule() {
        let mut off = settings();
        off.mode = WafMode::Off;
        let plan = Plan::new(&[("x".into(), off)]);
        assert_eq!(plan.scopes["x"].class, None);
        assert!(!plan.scope_rules.contains("@beginsWith"));
    }

    #[test]
    fn targets_get_an_upper_case_collection_and_bad_values_are_problems() {
        let mut s = settings();
        s.exclusions = vec![
            RuleExclusion {
                rule_id: Some(942100),
                tag: None,
                target: Some("args:Comment".into()),
            },
            RuleExclusion {
                rule_id: None,
                tag: Some("attack-xss',ctl:ruleEngine=Off".into()),
                target: None,
            },
            RuleExclusion {
                rule_id: Some(1),
                tag: None,
                target: Some("ARGS:x\"y".into()),
            },
        ];
        let plan = Plan::new(&[("s".into(), s)]);
        assert!(plan
            .scope_rules
            .contains("ctl:ruleRemoveTargetById=942100;ARGS:Comment"));
        assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
        assert!(!plan.scope_rules.contains("ruleEngine=Off"));
    }

    #[test]
    fn base_text_has_no_unicode_map_and_removes_collection_rules() {
        let base = base_config_text();
        assert!(!base.contains("SecUnicodeMapFile"));
        assert!(base.contains("SecRuleRemoveById 901321 949100"));
    }
}
