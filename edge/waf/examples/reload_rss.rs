//! Compiles the CRS rule set repeatedly and prints the process RSS, to tell a leak from
//! allocator retention: `cargo run -p sase-waf --example reload_rss -- 100`.
use sase_model::policy::WafSettings;
use sase_waf::{CrsPaths, RuleSet};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let crs = CrsPaths::default();
    for i in 0..rounds {
        let settings = WafSettings {
            paranoia_level: 1 + (i % 4) as u8,
            ..WafSettings::default()
        };
        let rules = RuleSet::compile(&crs, &[(format!("s/{i}"), settings)]);
        drop(rules);
        if i % 10 == 0 || i + 1 == rounds {
            println!("round {i}: rss_kb={}", rss_kb());
        }
    }
}
