//! Tags and severity of every CRS rule, read from the rule files at compile time.
//!
//! libmodsecurity 3.0.9 leaves the `[tag "…"]` fields out of the log line of `multiMatch`
//! rules (942100, 930110, …), so a finding's tags (and with them its paranoia level) are taken
//! from this index when the log line has none. The parser only needs to find `id:`, `tag:` and
//! `severity:` in `SecRule` / `SecAction` directives; chained rules carry no id and are skipped.

use std::collections::HashMap;
use std::path::PathBuf;

/// What the rule files say about one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RuleMeta {
    /// `tag:` values, in order.
    pub tags: Vec<String>,
    /// `severity:` as a number (CRITICAL = 2 … NOTICE = 5).
    pub severity: Option<u8>,
}

/// Reads `files` (unreadable files are skipped: libmodsecurity reports those itself).
pub(crate) fn build(files: &[PathBuf]) -> HashMap<u32, RuleMeta> {
    let mut index = HashMap::new();
    for file in files {
        if let Ok(bytes) = std::fs::read(file) {
            index_text(&String::from_utf8_lossy(&bytes), &mut index);
        }
    }
    index
}

/// Adds the rules of one configuration text to `index`.
pub(crate) fn index_text(text: &str, index: &mut HashMap<u32, RuleMeta>) {
    let mut directive = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if directive.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                directive.push_str(part);
                directive.push(' ');
            }
            None => {
                directive.push_str(trimmed);
                add_directive(&directive, index);
                directive.clear();
            }
        }
    }
    if !directive.is_empty() {
        add_directive(&directive, index);
    }
}

fn add_directive(directive: &str, index: &mut HashMap<u32, RuleMeta>) {
    if !(directive.starts_with("SecRule") || directive.starts_with("SecAction")) {
        return;
    }
    let Some(id) = action_values(directive, "id")
        .into_iter()
        .find_map(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let tags = action_values(directive, "tag");
    let severity = action_values(directive, "severity")
        .into_iter()
        .find_map(|v| severity_number(&v));
    index.insert(id, RuleMeta { tags, severity });
}

/// Values of `name:value` / `name:'value'` actions in a directive.
fn action_values(directive: &str, name: &str) -> Vec<String> {
    let needle = format!("{name}:");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = directive[from..].find(&needle) {
        let start = from + pos;
        from = start + needle.len();
        // The action name must start an action: after `"`, `,` or white space.
        let before = directive[..start].chars().next_back();
        if !matches!(before, Some('"' | ',' | ' ' | '\t')) {
            continue;
        }
        let rest = &directive[from..];
        let value = if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.split('\'').next().unwrap_or("")
        } else {
            rest.split([',', '"', ' ']).next().unwrap_or("")
        };
        out.push(value.to_string());
    }
    out
}

/// ModSecurity severity names and numbers.
fn severity_number(value: &str) -> Option<u8> {
    Some(match value.to_ascii_uppercase().as_str() {
        "EMERGENCY" | "0" => 0,
        "ALERT" | "1" => 1,
        "CRITICAL" | "2" => 2,
        "ERROR" | "3" => 3,
        "WARNING" | "4" => 4,
        "NOTICE" | "5" => 5,
        "INFO" | "6" => 6,
        "DEBUG" | "7" => 7,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_rules_give_their_tags_and_severity_and_chains_are_skipped() {
        let text = r#"
# comment
SecRule ARGS "@detectSQLi" \
    "id:942100,\
    phase:2,\
    block,\
    tag:'attack-sqli',\
    tag:'paranoia-level/1',\
    severity:'CRITICAL',\
    chain"
    SecRule ARGS "@rx x" "setvar:'tx.anomaly_score_pl1=+5'"
SecAction "id:'900990',phase:1,nolog,pass,setvar:tx.crs_setup_version=334"
"#;
        let mut index = HashMap::new();
        index_text(text, &mut index);
        assert_eq!(index.len(), 2);
        assert_eq!(
            index[&942100],
            RuleMeta {
                tags: vec!["attack-sqli".into(), "paranoia-level/1".into()],
                severity: Some(2)
            }
        );
        assert_eq!(index[&900990].tags, Vec::<String>::new());
    }
}
