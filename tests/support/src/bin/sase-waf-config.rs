//! `sase-waf-config`: prints the ModSecurity configuration text that the edge compiles for one
//! WAF setting, so that nginx + ModSecurity-nginx can load exactly the same rules
//! (`modsecurity_rules_file`) in the CRS regression comparison (`tests/conformance/crs.sh`).
//!
//! The text is [`sase_waf::RuleSet::config_text`] of a rule set compiled with one scope:
//! `sase_waf::base_config_text()`, the scope rule that sets the paranoia level and the anomaly
//! thresholds, the `Include` lines of `sase_waf::crs_include_list(&CrsPaths::default())` and the
//! score trailers. A policy whose routes all share these settings compiles to the same text.
//!
//! The scope rule matches transactions whose id begins with the scope class (`1.`): the edge
//! names its transactions `1.q<n>`; nginx must do the same, e.g.
//! `modsecurity_transaction_id "1.q$request_id";` (`--print-id-prefix` prints the prefix).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use sase_model::policy::{WafMode, WafSettings};
use sase_waf::{CrsPaths, RuleSet};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Detect,
    Block,
}

/// Prints the ModSecurity rules text the edge compiles for one WAF setting.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// CRS paranoia level (1-4).
    #[arg(long, default_value_t = 1)]
    paranoia: u8,
    /// Inbound anomaly score threshold.
    #[arg(long, default_value_t = 5)]
    inbound_threshold: u32,
    /// Outbound anomaly score threshold.
    #[arg(long, default_value_t = 4)]
    outbound_threshold: u32,
    /// WAF mode.
    #[arg(long, value_enum, default_value_t = Mode::Block)]
    mode: Mode,
    /// `crs-setup.conf` (default: the Debian `modsecurity-crs` package's).
    #[arg(long)]
    crs_setup: Option<PathBuf>,
    /// CRS rules directory (default: the Debian `modsecurity-crs` package's).
    #[arg(long)]
    crs_rules_dir: Option<PathBuf>,
    /// Print only the transaction id prefix the scope rule matches (e.g. `1.`).
    #[arg(long)]
    print_id_prefix: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let defaults = CrsPaths::default();
    let crs = CrsPaths {
        setup: args.crs_setup.unwrap_or(defaults.setup),
        rules_dir: args.crs_rules_dir.unwrap_or(defaults.rules_dir),
    };
    let settings = WafSettings {
        mode: match args.mode {
            Mode::Detect => WafMode::Detect,
            Mode::Block => WafMode::Block,
        },
        paranoia_level: args.paranoia,
        inbound_threshold: args.inbound_threshold,
        outbound_threshold: args.outbound_threshold,
        ..WafSettings::default()
    };
    let rules = RuleSet::compile(&crs, &[("crs/all".to_string(), settings)])
        .context("compiling the rule set")?;
    let text = rules.config_text();
    // The prefix the scope rule matches: `SecRule UNIQUE_ID "@beginsWith <prefix>" ...`.
    let Some(prefix) = text
        .lines()
        .filter(|l| l.starts_with("SecRule UNIQUE_ID \"@beginsWith "))
        .find_map(|l| l.split('"').nth(1))
        .and_then(|op| op.strip_prefix("@beginsWith "))
    else {
        bail!("no scope rule in the generated text");
    };
    let mut out = std::io::stdout().lock();
    if args.print_id_prefix {
        writeln!(out, "{prefix}")?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
