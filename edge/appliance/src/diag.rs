//! `sase-edge diag --out FILE`: the support bundle (a `.tar.gz`, made with the system `tar`).
//!
//! It holds, each as its own file:
//! * `versions.txt` — the edge's version, the kernel, `/etc/os-release`;
//! * `config.json` — the effective configuration: the running daemon's command line and
//!   `SASE_*` / `RUST_LOG` environment (from `/proc/<pid>` with `--pid`, else this process's),
//!   the device identity (`device.json`), the data dir listing (names, modes, sizes — never
//!   contents); values whose names say secret, password, token, key material or claim, and
//!   passwords inside URLs, are replaced by `[redacted]`;
//! * `policy.json` — the stored bundle's payload (version, tenant, the policy), redacted alike;
//! * `spool.json` — the audit spool's segments (names and sizes);
//! * `metrics.txt`, `readyz.json` — what the running edge's ops listener answers (`--ops-url`);
//! * `logs/` — the last lines of each `--log-file`, and of `journalctl -u sase-edge` where
//!   journald is reachable (else the reason it is not).
//!
//! Private keys are never read: `*.key` files appear in the listing only.

use std::path::PathBuf;

use base64::Engine as _;
use sase_ops::diag::*;
use serde_json::{json, Value};

/// What `diag` collects.
#[derive(Debug, Clone)]
pub struct DiagOptions {
    /// The edge's data dir.
    pub data_dir: PathBuf,
    /// Where to write the `.tar.gz`.
    pub out: PathBuf,
    /// Process id of the running daemon (its command line and environment are read).
    pub pid: Option<u32>,
    /// Base URL of the running edge's ops listener.
    pub ops_url: String,
    /// Log files whose tails are included.
    pub log_files: Vec<PathBuf>,
    /// Lines kept from the end of each log.
    pub log_lines: usize,
}

fn versions(binary: &str) -> String {
    format!(
        "{binary} {}\nkernel: {}\n--- /etc/os-release\n{}",
        env!("CARGO_PKG_VERSION"),
        std::fs::read_to_string("/proc/version")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/etc/os-release").unwrap_or_default()
    )
}

async fn fetch(url: &str) -> String {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(err) => return format!("# not fetched: {err}\n"),
    };
    match client.get(url).send().await {
        Ok(resp) => resp
            .text()
            .await
            .unwrap_or_else(|e| format!("# unreadable: {e}\n")),
        Err(err) => format!("# {url} not reachable: {err}\n"),
    }
}

/// Writes the bundle; returns its path.
///
/// # Errors
/// When the bundle directory or the archive cannot be written.
pub async fn write_bundle(opts: &DiagOptions) -> anyhow::Result<PathBuf> {
    let work = opts.out.with_extension(format!("d{}", std::process::id()));
    std::fs::create_dir_all(work.join("logs"))?;
    std::fs::write(work.join("versions.txt"), versions("sase-edge"))?;

    let mut device: Value = std::fs::read(opts.data_dir.join("device.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    redact(&mut device);
    let config = json!({
        "process": process_config(opts.pid, &["SASE_", "RUST_LOG"]),
        "data_dir": opts.data_dir.display().to_string(),
        "device": device,
        "data_dir_listing": listing(&opts.data_dir),
    });
    std::fs::write(
        work.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;

    let policy = match std::fs::read(opts.data_dir.join("bundle.json")) {
        Ok(bytes) => {
            let payload = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|b| b["payload"].as_str().map(str::to_string))
                .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                .and_then(|p| serde_json::from_slice::<Value>(&p).ok());
            match payload {
                Some(mut p) => {
                    redact(&mut p);
                    p
                }
                None => json!({"error": "bundle.json does not decode"}),
            }
        }
        Err(err) => json!({"error": format!("no stored bundle: {err}")}),
    };
    std::fs::write(
        work.join("policy.json"),
        serde_json::to_vec_pretty(&policy)?,
    )?;

    let spool = json!({ "segments": listing(&opts.data_dir.join("spool")) });
    std::fs::write(work.join("spool.json"), serde_json::to_vec_pretty(&spool)?)?;

    let base = opts.ops_url.trim_end_matches('/');
    std::fs::write(
        work.join("metrics.txt"),
        fetch(&format!("{base}/metrics")).await,
    )?;
    std::fs::write(
        work.join("readyz.json"),
        fetch(&format!("{base}/readyz")).await,
    )?;

    for (i, file) in opts.log_files.iter().enumerate() {
        let name = file
            .file_name()
            .map_or_else(|| format!("log{i}"), |n| n.to_string_lossy().into_owned());
        let text = tail(file, opts.log_lines)
            .unwrap_or_else(|e| format!("{} unreadable: {e}\n", file.display()));
        std::fs::write(work.join("logs").join(format!("{i}-{name}")), text)?;
    }
    std::fs::write(
        work.join("logs/journal-sase-edge.txt"),
        journal("sase-edge", opts.log_lines),
    )?;
    pack(&work, &opts.out)?;
    Ok(opts.out.clone())
}
