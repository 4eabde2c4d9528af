//! `sase-control diag --out FILE`: the support bundle (a `.tar.gz`, made with the system
//! `tar`).
//!
//! It holds, each as its own file:
//! * `versions.txt` — the control plane's version, the kernel, `/etc/os-release`;
//! * `config.json` — the effective configuration: the running server's command line and
//!   `SASE_*` / `RUST_LOG` environment (from `/proc/<pid>` with `--pid`, else this process's),
//!   the database backend and URL, the data dir listing (names, modes, sizes — never contents);
//!   values whose names say secret, password, token, key material or claim, and passwords
//!   inside URLs (`postgres://user:…@host`), are replaced by `[redacted]`;
//! * `db.json` — database statistics: rows per table, the latest policy version per tenant,
//!   devices and their applied versions, audit heads per device — no secret columns are read;
//! * `metrics.txt`, `readyz.json` — what the running server's ops listener answers;
//! * `logs/` — the last lines of each `--log-file`, and of `journalctl -u sase-control` where
//!   journald is reachable (else the reason it is not).
//!
//! Redaction, listings, log tails, the journal excerpt and packing come from `sase_ops::diag`,
//! shared with `sase_edge::diag`.

use std::path::PathBuf;

use anyhow::Context as _;
use sase_ops::diag::*;
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::store::Store;

/// What `diag` collects.
#[derive(Debug, Clone)]
pub struct DiagOptions {
    /// The control plane's data dir.
    pub data_dir: PathBuf,
    /// The database URL (default: the SQLite file in the data dir).
    pub database_url: String,
    /// Where to write the `.tar.gz`.
    pub out: PathBuf,
    /// Process id of the running server (its command line and environment are read).
    pub pid: Option<u32>,
    /// Base URL of the running server's ops listener.
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
    // A plain HTTP/1.1 GET over loopback (the ops listener), without an HTTP client crate.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(rest) = url.strip_prefix("http://") else {
        return format!("# {url}: only http:// ops URLs are fetched\n");
    };
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(host).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        tcp.take(16 * 1024 * 1024).read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(buf)) => {
            let text = String::from_utf8_lossy(&buf);
            text.split_once("\r\n\r\n")
                .map_or_else(|| text.to_string(), |(_, b)| b.to_string())
        }
        Ok(Err(err)) => format!("# {url} not reachable: {err}\n"),
        Err(_) => format!("# {url} timed out\n"),
    }
}

/// Rows per table, policy versions, devices and audit heads.
async fn db_stats(store: &Store) -> Value {
    const TABLES: [&str; 16] = [
        "msps",
        "tenants",
        "sites",
        "devices",
        "admins",
        "policy_versions",
        "policy_drafts",
        "policy_rollouts",
        "audit_events",
        "audit_batches",
        "audit_checkpoints",
        "alerts",
        "admin_actions",
        "incidents",
        "siem_sinks",
        "caep_revocations",
    ];
    let pool = store.pool();
    let mut rows = serde_json::Map::new();
    for table in TABLES {
        // Table names come from the constant list above, never from input.
        let count = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"));
        rows.insert(
            table.to_string(),
            match count {
                Ok(n) => json!(n),
                Err(err) => json!(format!("error: {err}")),
            },
        );
    }
    let versions: Vec<Value> = sqlx::query(
        "SELECT tenant_id, MAX(version) AS version FROM policy_versions GROUP BY tenant_id",
    )
    .fetch_all(pool)
    .await
    .map(|rs| {
        rs.iter()
            .map(|r| {
                json!({
                    "tenant_id": r.try_get::<String, _>("tenant_id").unwrap_or_default(),
                    "latest_version": r.try_get::<i64, _>("version").unwrap_or_default(),
                })
            })
            .collect()
    })
    .unwrap_or_default();
    let heads: Vec<Value> = sqlx::query("SELECT device_id, last_seq FROM audit_heads")
        .fetch_all(pool)
        .await
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    json!({
                        "device_id": r.try_get::<String, _>("device_id").unwrap_or_default(),
                        "head_seq": r.try_get::<i64, _>("last_seq").unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "backend": format!("{:?}", store.backend()),
        "reachable": store.ping().await.is_ok(),
        "rows": rows,
        "policy_versions": versions,
        "audit_heads": heads,
    })
}

/// Writes the bundle; returns its path.
///
/// # Errors
/// When the bundle directory or the archive cannot be written.
pub async fn write_bundle(opts: &DiagOptions) -> anyhow::Result<PathBuf> {
    let work = opts.out.with_extension(format!("d{}", std::process::id()));
    std::fs::create_dir_all(work.join("logs"))?;
    std::fs::write(work.join("versions.txt"), versions("sase-control"))?;
    let config = json!({
        "process": process_config(opts.pid, &["SASE_", "RUST_LOG"]),
        "data_dir": opts.data_dir.display().to_string(),
        "database_url": redact_url_password(&opts.database_url),
        "data_dir_listing": listing(&opts.data_dir),
    });
    std::fs::write(
        work.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    let db = match Store::connect(&opts.database_url).await {
        Ok(store) => db_stats(&store).await,
        Err(err) => json!({"reachable": false, "error": redact_url_password(&err.to_string())}),
    };
    std::fs::write(work.join("db.json"), serde_json::to_vec_pretty(&db)?)?;
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
        work.join("logs/journal-sase-control.txt"),
        journal("sase-control", opts.log_lines),
    )?;
    pack(&work, &opts.out).context("packing the bundle")?;
    Ok(opts.out.clone())
}
