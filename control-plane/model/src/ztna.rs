//! Identity binding for ZTNA tunnels: the typed access rules an admin writes (a group of remote
//! users → tunnel resources, each with optional posture checks and MFA freshness), the posture
//! report a `sase-connect` client sends, and the pure compilation of the tunnel peers the edges
//! get (one peer per registered device whose session is in force, with the rules its user's
//! groups grant and its posture and MFA freshness satisfy).
//!
//! Nothing here does I/O or reads a clock: [`compile`] and [`evaluate`] take `now_ms`, and
//! return the next instant at which their answer changes on its own (a session expiring, MFA
//! growing stale), so the control plane knows when to compile again.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::tunnel::{IpCidr, TunnelAclRule, TunnelPeer};

/// Most resources one access rule lists.
pub const MAX_RESOURCES_PER_RULE: usize = 64;
/// Longest text field of a posture report.
pub const MAX_POSTURE_TEXT: usize = 128;

/// Why a request about identity binding was refused (stable codes, shown to clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZtnaError {
    /// A field is out of bounds; the path names it.
    #[error("{path}: {message}")]
    Invalid {
        /// Field path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ZtnaError {
    ZtnaError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// What a client reports about the device it runs on (what can be read on Linux).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostureReport {
    /// Operating system (`linux`).
    pub os: String,
    /// Its version (kernel release or `/etc/os-release` `VERSION_ID`).
    pub os_version: String,
    /// Whether the root file system sits on an encrypted block device (dm-crypt / LUKS).
    pub disk_encryption: bool,
    /// Whether the desktop session locks its screen (a locker is configured and enabled).
    pub screen_lock: bool,
    /// Whether a host firewall has rules loaded (nftables / iptables).
    pub firewall: bool,
    /// The `sase-connect` version.
    pub client_version: String,
}

impl PostureReport {
    /// Checks the text fields' bounds.
    ///
    /// # Errors
    /// The first field out of bounds.
    pub fn validate(&self) -> Result<(), ZtnaError> {
        for (path, value) in [
            ("posture.os", &self.os),
            ("posture.os_version", &self.os_version),
            ("posture.client_version", &self.client_version),
        ] {
            if value.len() > MAX_POSTURE_TEXT || value.chars().any(char::is_control) {
                return Err(invalid(
                    path,
                    "at most 128 printable characters are accepted",
                ));
            }
        }
        Ok(())
    }
}

/// Posture checks a resource may require; every check set must pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PostureRequirement {
    /// The disk must be encrypted.
    #[serde(default)]
    pub disk_encryption: bool,
    /// The screen must lock.
    #[serde(default)]
    pub screen_lock: bool,
    /// A host firewall must be active.
    #[serde(default)]
    pub firewall: bool,
    /// One of these operating systems (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub os: Vec<String>,
    /// The client must be at least this version (dotted numbers, `0.2.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_client_version: Option<String>,
}

impl PostureRequirement {
    /// The names of the checks a report fails (`posture_missing` without a report), in a
    /// stable order; empty when every check passes.
    pub fn failures(&self, report: Option<&PostureReport>) -> Vec<&'static str> {
        let Some(r) = report else {
            return vec!["posture_missing"];
        };
        let mut out = Vec::new();
        if self.disk_encryption && !r.disk_encryption {
            out.push("disk_encryption");
        }
        if self.screen_lock && !r.screen_lock {
            out.push("screen_lock");
        }
        if self.firewall && !r.firewall {
            out.push("firewall");
        }
        if !self.os.is_empty() && !self.os.iter().any(|o| o.eq_ignore_ascii_case(&r.os)) {
            out.push("os");
        }
        if let Some(min) = &self.min_client_version {
            if version_lt(&r.client_version, min) {
                out.push("client_version");
            }
        }
        out
    }
}

/// `a < b` comparing dot-separated numbers (`0.10.0` > `0.9.1`); a part that is not a number
/// counts as 0, so a malformed version is never newer than a well-formed one.
fn version_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.split('.')
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    let (a, b) = (parse(a), parse(b));
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x < y;
        }
    }
    false
}

/// An access rule: members of `group` may reach `resources` through the tunnel, when the
/// device's posture passes `posture` and the user's last TOTP check is at most
/// `mfa_max_age_secs` old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Name (unique in the tenant; shown to clients and in refusals).
    pub name: String,
    /// The group whose members it applies to.
    pub group: String,
    /// The resources: networks, protocols, ports (the tunnel ACL's rule type).
    pub resources: Vec<TunnelAclRule>,
    /// Posture checks the device must pass (none: any device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<PostureRequirement>,
    /// Longest time since the user's TOTP check (none: the session's own lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_max_age_secs: Option<u64>,
}

impl AccessRule {
    /// Checks names and bounds.
    ///
    /// # Errors
    /// The first problem, with its field path.
    pub fn validate(&self) -> Result<(), ZtnaError> {
        if !is_name(&self.name) {
            return Err(invalid(
                "name",
                "1-64 characters of a-z, 0-9, '-', '_', '.'",
            ));
        }
        if !is_name(&self.group) {
            return Err(invalid(
                "group",
                "1-64 characters of a-z, 0-9, '-', '_', '.'",
            ));
        }
        if self.resources.is_empty() || self.resources.len() > MAX_RESOURCES_PER_RULE {
            return Err(invalid("resources", "1 to 64 resources"));
        }
        if self.mfa_max_age_secs == Some(0) {
            return Err(invalid("mfa_max_age_secs", "must be at least 1"));
        }
        if let Some(p) = &self.posture {
            if p.os.len() > 16 || p.os.iter().any(|o| !is_name(o)) {
                return Err(invalid(
                    "posture.os",
                    "at most 16 names of a-z, 0-9, '-', '_', '.'",
                ));
            }
            if let Some(v) = &p.min_client_version {
                if v.is_empty()
                    || v.len() > 32
                    || !v.chars().all(|c| c.is_ascii_digit() || c == '.')
                {
                    return Err(invalid(
                        "posture.min_client_version",
                        "dotted numbers, e.g. 0.2.0",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Names of users, groups and rules: 1-64 characters of `a-z 0-9 - _ .` (and `@` for users'
/// mail-like names).
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '@')
        })
}

/// A registered device whose user is enabled and whose session is in force, as the compiler
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDevice {
    /// Device id.
    pub id: String,
    /// Device name the user gave.
    pub name: String,
    /// The user's name (the tunnel identity's subject).
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Assigned tunnel address.
    pub address: IpAddr,
    /// Last posture report.
    pub posture: Option<PostureReport>,
    /// Session id.
    pub session: String,
    /// When the session ends (Unix ms).
    pub session_expires_ms: i64,
    /// When the user last passed a TOTP check (Unix ms).
    pub mfa_at_ms: i64,
}

/// One rule's outcome for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOutcome {
    /// The access rule.
    pub rule: String,
    /// Its resources.
    pub resources: Vec<TunnelAclRule>,
    /// Whether the device gets them now.
    pub allowed: bool,
    /// Why not (`posture:disk_encryption`, `mfa_stale`, …); empty when allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// What one device gets: the rules that apply to its user's groups with their outcome, and
/// the next instant this changes on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Outcome of each rule of the user's groups, in rule order.
    pub rules: Vec<RuleOutcome>,
    /// The next instant (Unix ms) the outcome changes without any write: the session
    /// expiring or an allowed rule's MFA freshness lapsing.
    pub next_change_ms: i64,
}

/// Evaluates the access rules for one device at `now_ms`.
pub fn evaluate(device: &LiveDevice, rules: &[AccessRule], now_ms: i64) -> Evaluation {
    let mut next = device.session_expires_ms;
    let mut out = Vec::new();
    for rule in rules {
        if !device.groups.iter().any(|g| g == &rule.group) {
            continue;
        }
        let mut refused: Vec<String> = rule
            .posture
            .as_ref()
            .map(|p| {
                p.failures(device.posture.as_ref())
                    .into_iter()
                    .map(|f| format!("posture:{f}"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(max) = rule.mfa_max_age_secs {
            let lapses = device
                .mfa_at_ms
                .saturating_add(i64::try_from(max.saturating_mul(1000)).unwrap_or(i64::MAX));
            if now_ms >= lapses {
                refused.push("mfa_stale".to_string());
            } else if refused.is_empty() {
                next = next.min(lapses);
            }
        }
        out.push(RuleOutcome {
            rule: rule.name.clone(),
            resources: rule.resources.clone(),
            allowed: refused.is_empty(),
            refused,
        });
    }
    Evaluation {
        rules: out,
        next_change_ms: next,
    }
}

/// The tunnel peers for the devices in force at `now_ms` (devices whose session has ended are
/// left out), and the next instant the result changes on its own (`i64::MAX`: never).
pub fn compile(
    devices: &[LiveDevice],
    rules: &[AccessRule],
    now_ms: i64,
) -> (Vec<TunnelPeer>, i64) {
    let mut peers = Vec::new();
    let mut next = i64::MAX;
    for d in devices {
        if d.session_expires_ms <= now_ms {
            continue;
        }
        let eval = evaluate(d, rules, now_ms);
        next = next.min(eval.next_change_ms);
        let mut acl: Vec<TunnelAclRule> = Vec::new();
        for r in eval.rules.iter().filter(|r| r.allowed) {
            for res in &r.resources {
                if !acl.contains(res) {
                    acl.push(res.clone());
                }
            }
        }
        let mut groups = d.groups.clone();
        groups.sort();
        groups.dedup();
        peers.push(TunnelPeer {
            name: format!("{}/{}", d.user, d.name),
            public_key: d.public_key.clone(),
            address: d.address,
            rules: acl,
            persistent_keepalive: None,
            subject: Some(d.user.clone()),
            groups,
            device: Some(d.id.clone()),
            session: Some(d.session.clone()),
        });
    }
    (peers, next)
}

/// The lowest address of `pool` not in `taken`, skipping the network address and, for IPv4,
/// the first host (the edge's own tunnel address by convention) and the broadcast address.
pub fn allocate(pool: IpCidr, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    match pool.addr() {
        IpAddr::V4(net) => {
            let base = u32::from(net);
            let host_bits = 32 - u32::from(pool.prefix());
            let size: u64 = 1u64 << host_bits;
            if size < 4 {
                return None;
            }
            (2..size - 1)
                .map(|i| IpAddr::from(std::net::Ipv4Addr::from(base.wrapping_add(i as u32))))
                .find(|a| !taken.contains(a))
        }
        IpAddr::V6(net) => {
            let base = u128::from(net);
            let host_bits = 128 - u32::from(pool.prefix());
            let size: u128 = if host_bits >= 127 {
                u128::MAX
            } else {
                1u128 << host_bits
            };
            (2..size.min(1 << 20))
                .map(|i| IpAddr::from(std::net::Ipv6Addr::from(base.wrapping_add(i))))
                .find(|a| !taken.contains(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, group: &str, res: &str) -> AccessRule {
        AccessRule {
            name: name.into(),
            group: group.into(),
            resources: vec![res.parse().expect("rule")],
            posture: None,
            mfa_max_age_secs: None,
        }
    }

    fn device(groups: &[&str]) -> LiveDevice {
        LiveDevice {
            id: "dev_1".into(),
            name: "laptop".into(),
            user: "alice".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            address: "100.96.0.2".parse().expect("ip"),
            posture: Some(PostureReport {
                os: "linux".into(),
                os_version: "6.1".into(),
                disk_encryption: false,
                screen_lock: true,
                firewall: true,
                client_version: "0.1.0".into(),
            }),
            session: "zs_1".into(),
            session_expires_ms: 100_000,
            mfa_at_ms: 1_000,
        }
    }

    #[test]
    fn groups_select_rules_and_identity_is_filled() {
        let rules = [
            rule("web", "staff", "tcp:10.0.0.10/32:8080"),
            rule("db", "dba", "tcp:10.0.0.20/32:5432"),
        ];
        let (peers, next) = compile(&[device(&["staff"])], &rules, 2_000);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].rules.len(), 1);
        assert_eq!(peers[0].rules, rules[0].resources);
        assert_eq!(peers[0].subject.as_deref(), Some("alice"));
        assert_eq!(peers[0].groups, vec!["staff".to_string()]);
        assert_eq!(peers[0].session.as_deref(), Some("zs_1"));
        assert_eq!(next, 100_000, "nothing lapses before the session");
    }

    #[test]
    fn posture_failure_withholds_only_that_rule() {
        let mut secure = rule("secure", "staff", "tcp:10.0.0.30/32:22");
        secure.posture = Some(PostureRequirement {
            disk_encryption: true,
            ..Default::default()
        });
        let rules = [rule("web", "staff", "tcp:10.0.0.10/32:8080"), secure];
        let eval = evaluate(&device(&["staff"]), &rules, 2_000);
        assert!(eval.rules[0].allowed);
        assert!(!eval.rules[1].allowed);
        assert_eq!(eval.rules[1].refused, vec!["posture:disk_encryption"]);
        let mut ok = device(&["staff"]);
        ok.posture.as_mut().expect("posture").disk_encryption = true;
        let (peers, _) = compile(&[ok], &rules, 2_000);
        assert_eq!(peers[0].rules.len(), 2);
        let mut none = device(&["staff"]);
        none.posture = None;
        let eval = evaluate(&none, &rules, 2_000);
        assert_eq!(eval.rules[1].refused, vec!["posture:posture_missing"]);
    }

    #[test]
    fn mfa_freshness_lapses_and_sessions_expire() {
        let mut fresh = rule("admin", "staff", "tcp:10.0.0.40/32:443");
        fresh.mfa_max_age_secs = Some(10);
        let rules = [fresh];
        let (peers, next) = compile(&[device(&["staff"])], &rules, 5_000);
        assert_eq!(peers[0].rules.len(), 1);
        assert_eq!(next, 11_000, "recompile when MFA is 10 s old");
        let (peers, next) = compile(&[device(&["staff"])], &rules, 11_000);
        assert!(peers[0].rules.is_empty());
        assert_eq!(next, 100_000);
        let (peers, next) = compile(&[device(&["staff"])], &rules, 100_000);
        assert!(peers.is_empty(), "an expired session has no peer");
        assert_eq!(next, i64::MAX);
    }

    #[test]
    fn client_versions_compare_numerically() {
        assert!(version_lt("0.9.1", "0.10.0"));
        assert!(!version_lt("0.10.0", "0.9.1"));
        assert!(!version_lt("1.0", "1.0.0"));
        assert!(version_lt("garbage", "0.0.1"));
        let req = PostureRequirement {
            min_client_version: Some("0.2.0".into()),
            os: vec!["linux".into()],
            ..Default::default()
        };
        let mut r = device(&[]).posture.expect("posture");
        assert_eq!(req.failures(Some(&r)), vec!["client_version"]);
        r.client_version = "0.2.0".into();
        r.os = "windows".into();
        assert_eq!(req.failures(Some(&r)), vec!["os"]);
    }

    #[test]
    fn addresses_come_from_the_pool_in_order() {
        let pool: IpCidr = "100.96.0.0/30".parse().expect("cidr");
        let mut taken = BTreeSet::new();
        let first = allocate(pool, &taken).expect("one address");
        assert_eq!(first.to_string(), "100.96.0.2");
        taken.insert(first);
        assert_eq!(allocate(pool, &taken), None, "a /30 holds one client");
        let v6: IpCidr = "fd00::/120".parse().expect("cidr");
        assert_eq!(
            allocate(v6, &BTreeSet::new()).expect("v6").to_string(),
            "fd00::2"
        );
    }

    #[test]
    fn rules_are_validated_with_paths() {
        let mut r = rule("web", "staff", "tcp:10.0.0.10/32:8080");
        assert!(r.validate().is_ok());
        r.group = "Staff!".into();
        assert!(matches!(r.validate(), Err(ZtnaError::Invalid { path, .. }) if path == "group"));
        let mut r = rule("web", "staff", "tcp:10.0.0.10/32:8080");
        r.mfa_max_age_secs = Some(0);
        assert!(r.validate().is_err());
        let bad: Result<AccessRule, _> =
            serde_json::from_str(r#"{"name":"a","group":"b","resources":[],"extra":1}"#);
        assert!(bad.is_err(), "unknown fields are refused");
    }
}
