//! What an inspection found: [`RuleMatch`] and [`Findings`], and the parser of libmodsecurity's
//! rule log lines they are built from.
//!
//! Each matched rule with `log` reaches the transaction's log callback as one line:
//!
//! ```text
//! ModSecurity: Warning. Matched "Operator `Rx' …" [file "…"] [line "…"] [id "942100"] [rev ""]
//!   [msg "…"] [data "…"] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"]
//!   [tag "…"]… [hostname "…"] [uri "…"] [unique_id "…"] [ref "…"]
//! ```
//!
//! The rule that stops a transaction in `block` mode is not sent to the callback; its line
//! (`ModSecurity: Access denied with code 403 (phase 2). …`) comes with the intervention.
//! libmodsecurity 3.0.9 hex-escapes every byte outside printable ASCII (`\xNN`) in the whole
//! line, so lines are always valid UTF-8, but it does not escape `"` or `]`: the matched value,
//! the variable name, `data` and `uri` are attacker-controlled text. The parser therefore
//! never panics on odd text and takes the first `[file "…"] [line "N"] [id "N"] [rev "` sequence
//! as the rule's own fields. A payload that forges such a sequence inside a matched value can
//! mislabel that one match in the report; it cannot change what libmodsecurity enforces, and
//! the anomaly score is the highest total reported for the transaction, so a forged lower
//! score is ignored.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::{
    INBOUND_SCORE_MSG, INBOUND_SCORE_RULE, INTERNAL_IDS, OUTBOUND_SCORE_MSG, OUTBOUND_SCORE_RULE,
};
use crate::index::RuleMeta;

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// Rule id (e.g. 942100).
    pub id: u32,
    /// The rule's `msg`.
    pub message: String,
    /// ModSecurity severity (CRITICAL = 2, ERROR = 3, WARNING = 4, NOTICE = 5), when the rule
    /// has one.
    pub severity: Option<u8>,
    /// The paranoia level of the rule, from its `paranoia-level/N` tag.
    pub paranoia_level: Option<u8>,
    /// The rule's tags (`attack-sqli`, `paranoia-level/1`, `OWASP_CRS`, …).
    pub tags: Vec<String>,
}

/// The outcome of inspecting one request or response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Findings {
    /// Every rule that matched, once per rule id, in the order they matched (the anomaly
    /// evaluation rules 949xxx / 959xxx / 980xxx and this crate's own rules are left out).
    pub matches: Vec<RuleMatch>,
    /// The CRS anomaly score of the transaction: inbound for requests, outbound for responses.
    pub anomaly_score: u32,
    /// The score reached the scope's threshold, or libmodsecurity intervened (true in detect
    /// mode too).
    pub would_block: bool,
    /// `would_block` and the scope is in `block` mode.
    pub blocked: bool,
    /// The HTTP status libmodsecurity asked for when it intervened (403 for CRS, 400 for a body
    /// that does not parse).
    pub status: Option<u16>,
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRecord {
    pub id: u32,
    pub msg: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
}

/// Parses one log line; `None` when it has no rule id.
pub(crate) fn parse_log_line(line: &str) -> Option<LogRecord> {
    let (id, after_id) = find_rule_id(line)?;
    let mut record = LogRecord {
        id,
        msg: String::new(),
        severity: None,
        tags: Vec::new(),
    };
    // [rev "…"] [msg "…"] [data "…"]: rev and msg come from the rule, data from the request.
    let Some(msg_at) = line[after_id..].find("\"] [msg \"") else {
        return Some(record);
    };
    let msg_start = after_id + msg_at + "\"] [msg \"".len();
    let Some(msg_len) = line[msg_start..].find("\"] [data \"") else {
        return Some(record);
    };
    record.msg = line[msg_start..msg_start + msg_len].to_string();
    let data_start = msg_start + msg_len + "\"] [data \"".len();
    // The first `"] [severity "N"] [ver "` after data (data is at most 200 characters).
    let mut from = data_start;
    let tail = loop {
        let Some(at) = line[from..].find("\"] [severity \"") else {
            return Some(record);
        };
        let start = from + at + "\"] [severity \"".len();
        let digits: String = line[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let rest = &line[start + digits.len()..];
        if !digits.is_empty() && rest.starts_with("\"] [ver \"") {
            record.severity = digits.parse::<u8>().ok().filter(|s| *s != 0);
            break start + digits.len();
        }
        from = start;
    };
    // [ver "…"] [maturity "N"] [accuracy "N"] then [tag "…"]* (all from the rule).
    let Some(acc_at) = line[tail..].find("] [accuracy \"") else {
        return Some(record);
    };
    let mut pos = tail + acc_at + "] [accuracy \"".len();
    let Some(acc_end) = line[pos..].find("\"]") else {
        return Some(record);
    };
    pos += acc_end + "\"]".len();
    while let Some(rest) = line[pos..].strip_prefix(" [tag \"") {
        let Some(end) = rest.find("\"]") else { break };
        record.tags.push(rest[..end].to_string());
        pos += " [tag \"".len() + end + "\"]".len();
    }
    Some(record)
}

/// The id of the first well-formed `[file "…"] [line "N"] [id "N"] [rev "` sequence, and the
/// byte offset just after the id's digits.
fn find_rule_id(line: &str) -> Option<(u32, usize)> {
    const FILE: &str = " [file \"";
    let mut from = 0;
    while let Some(at) = line[from..].find(FILE) {
        let start = from + at + FILE.len();
        from = start;
        let rest = &line[start..];
        let line_at = rest.find("\"] [line \"")?;
        let after_line = &rest[line_at + "\"] [line \"".len()..];
        let line_digits = after_line.bytes().take_while(u8::is_ascii_digit).count();
        let Some(after_id) = after_line[line_digits..].strip_prefix("\"] [id \"") else {
            continue;
        };
        let id_digits = after_id.bytes().take_while(u8::is_ascii_digit).count();
        if line_digits == 0 || id_digits == 0 || !after_id[id_digits..].starts_with("\"] [rev \"") {
            continue;
        }
        let Ok(id) = after_id[..id_digits].parse::<u32>() else {
            continue;
        };
        let end = line.len() - after_id.len() + id_digits;
        return Some((id, end));
    }
    None
}

/// Which anomaly score a transaction reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Request: phase-2 trailer and 949110.
    Inbound,
    /// Response: phase-4 trailer and 959100.
    Outbound,
}

/// Turns the log lines of one transaction into matches and an anomaly score.
pub(crate) fn collect(
    lines: &[String],
    direction: Direction,
    index: &HashMap<u32, RuleMeta>,
) -> (Vec<RuleMatch>, u32) {
    let mut matches = Vec::new();
    let mut seen = HashSet::new();
    let mut reported: Option<u32> = None;
    let mut fallback: u32 = 0;
    for line in lines {
        let Some(rec) = parse_log_line(line) else {
            continue;
        };
        if let Some(score) = reported_score(&rec, direction) {
            reported = Some(reported.map_or(score, |r| r.max(score)));
        }
        if is_evaluation_rule(rec.id) || INTERNAL_IDS.contains(&rec.id) {
            continue;
        }
        if !seen.insert(rec.id) {
            continue;
        }
        let meta = index.get(&rec.id);
        let tags = if rec.tags.is_empty() {
            meta.map(|m| m.tags.clone()).unwrap_or_default()
        } else {
            rec.tags
        };
        let severity = rec.severity.or_else(|| meta.and_then(|m| m.severity));
        if meta.is_some() {
            // Only CRS rules score (the base rules 2000xx deny or pass without scoring).
            fallback = fallback.saturating_add(severity.map_or(0, crs_score));
        }
        matches.push(RuleMatch {
            id: rec.id,
            message: rec.msg,
            severity,
            paranoia_level: paranoia_level(&tags),
            tags,
        });
    }
    (matches, reported.unwrap_or(fallback))
}

/// A total score stated by our trailer rule or by CRS's blocking evaluation.
fn reported_score(rec: &LogRecord, direction: Direction) -> Option<u32> {
    let (trailer, prefix, evaluation) = match direction {
        Direction::Inbound => (INBOUND_SCORE_RULE, INBOUND_SCORE_MSG, 949_110),
        Direction::Outbound => (OUTBOUND_SCORE_RULE, OUTBOUND_SCORE_MSG, 959_100),
    };
    if rec.id == trailer {
        return rec.msg.strip_prefix(prefix)?.trim().parse().ok();
    }
    if rec.id == evaluation {
        let after = &rec.msg[rec.msg.find("Total Score: ")? + "Total Score: ".len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        return digits.parse().ok();
    }
    None
}

/// CRS's anomaly evaluation and correlation rules.
fn is_evaluation_rule(id: u32) -> bool {
    (949_000..=949_999).contains(&id)
        || (959_000..=959_999).contains(&id)
        || (980_000..=980_999).contains(&id)
}

/// CRS 3.3's default score of a severity (used only when no total was reported, e.g. a body
/// that does not parse stopped the transaction before CRS's evaluation).
fn crs_score(severity: u8) -> u32 {
    match severity {
        2 => 5,
        3 => 4,
        4 => 3,
        5 => 2,
        _ => 0,
    }
}

/// `N` of a `paranoia-level/N` tag.
fn paranoia_level(tags: &[String]) -> Option<u8> {
    tags.iter()
        .find_map(|t| t.strip_prefix("paranoia-level/")?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQLI: &str = r#"ModSecurity: Warning. detected SQLi using libinjection. [file "/usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf"] [line "46"] [id "942100"] [rev ""] [msg "SQL Injection Attack Detected via libinjection"] [data "Matched Data: s&sos found within ARGS:id: 1' OR '1'='1"] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"] [hostname "10.0.0.2"] [uri "/orders/list"] [unique_id "1.q1"] [ref "v20,12"]"#;
    const XSS: &str = r#"ModSecurity: Warning. Matched "Operator `Rx' with parameter `(?i)<script[^>]*>[\s\S]*?' against variable `ARGS:comment' (Value: `<script>alert(1)</script>' ) [file "/r/REQUEST-941.conf"] [line "64"] [id "941110"] [rev ""] [msg "XSS Filter - Category 1: Script Tag Vector"] [data "Matched Data: <script> found within ARGS:comment: <script>alert(1)</script>"] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"] [tag "application-multi"] [tag "attack-xss"] [tag "paranoia-level/1"] [hostname "10.0.0.2"] [uri "/comments"] [unique_id "1.q2"] [ref "o0,8v33,8t:utf8toUnicode"]"#;
    const DENIED: &str = r#"[client 10.0.0.1] ModSecurity: Access denied with code 403 (phase 2). Matched "Operator `Ge' with parameter `5' against variable `TX:ANOMALY_SCORE' (Value: `25' ) [file "/r/REQUEST-949.conf"] [line "81"] [id "949110"] [rev ""] [msg "Inbound Anomaly Score Exceeded (Total Score: 25)"] [data ""] [severity "2"] [ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"] [tag "attack-generic"] [hostname "10.0.0.2"] [uri "/x"] [unique_id "1.q3"] [ref ""]"#;

    #[test]
    fn parses_ids_messages_severity_and_tags() {
        let r = parse_log_line(XSS).expect("record");
        assert_eq!(r.id, 941110);
        assert_eq!(r.msg, "XSS Filter - Category 1: Script Tag Vector");
        assert_eq!(r.severity, Some(2));
        assert_eq!(
            r.tags,
            vec!["application-multi", "attack-xss", "paranoia-level/1"]
        );
        let r = parse_log_line(SQLI).expect("record");
        assert_eq!((r.id, r.tags.len()), (942100, 0));
    }

    #[test]
    fn missing_tags_come_from_the_index_and_the_evaluation_total_is_the_score() {
        let mut index = HashMap::new();
        index.insert(
            942100,
            RuleMeta {
                tags: vec!["attack-sqli".into(), "paranoia-level/1".into()],
                severity: Some(2),
            },
        );
        let lines = vec![SQLI.to_string(), SQLI.to_string(), DENIED.to_string()];
        let (matches, score) = collect(&lines, Direction::Inbound, &index);
        assert_eq!(matches.len(), 1);
        assert_eq!(matches[0].paranoia_level, Some(1));
        assert_eq!(score, 25);
    }

    #[test]
    fn odd_text_never_panics_and_forged_fields_in_values_are_skipped() {
        for line in [
            "",
            "ModSecurity: Warning.",
            " [file \"",
            " [file \"x\"] [line \"",
            " [file \"x\"] [line \"1\"] [id \"",
            " [file \"x\"] [line \"1\"] [id \"99999999999999\"] [rev \"",
            " [file \"x\"] [line \"1\"] [id \"7\"] [rev \"\"] [msg \"é\"] [data \"",
            " [file \"x\"] [line \"1\"] [id \"7\"] [rev \"\"] [msg \"a\"] [data \"\"] [severity \"\"] [ver \"",
            " [file \"x\"] [line \"1\"] [id \"7\"] [rev \"\"] [msg \"a\"] [data \"\"] [severity \"2\"] [ver \"\"] [maturity \"0\"] [accuracy \"0\"] [tag \"",
        ] {
            let _ = parse_log_line(line);
        }
        let forged = r#"ModSecurity: Warning. Matched "x" against variable `ARGS:a' (Value: `[file "x"] [line "" [id "1"] [rev "' ) [file "/r/a.conf"] [line "5"] [id "941100"] [rev ""] [msg "m"] [data "d"] [severity "2"] [ver "v"] [maturity "0"] [accuracy "0"] [tag "t"] [hostname "h"] [uri "u"] [unique_id "1.q1"] [ref ""]"#;
        let r = parse_log_line(forged).expect("record");
        assert_eq!((r.id, r.tags.len()), (941100, 1));
    }

    #[test]
    fn a_forged_lower_total_does_not_lower_the_score() {
        let forged = DENIED.replace("Total Score: 25", "Total Score: 0");
        let lines = vec![forged, DENIED.to_string()];
        let (_, score) = collect(&lines, Direction::Inbound, &HashMap::new());
        assert_eq!(score, 25);
    }
}
