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
//! The helpers below repeat `sase_edge::diag`'s (the two binaries share no crate but the
//! model, which stays free of I/O).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
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

/// Replacement for a secret value.
pub const REDACTED: &str = "[redacted]";

/// Whether a setting's name says its value is secret.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "private",
        "claim",
        "credential",
        "api_key",
        "apikey",
        "seed",
        "operator_key",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A string with the password of any URL in it replaced (`scheme://user:pass@host`).
pub fn redact_url_password(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Redacts a JSON value: members with secret names, URL passwords in strings, PEM private keys.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_name(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if s.contains("PRIVATE KEY") {
                *s = REDACTED.into();
            } else {
                *s = redact_url_password(s);
            }
        }
        _ => {}
    }
}

/// Redacts a command line: the value after a flag with a secret name, `--flag=value` alike.
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            out.push(REDACTED.to_string());
            hide_next = false;
            continue;
        }
        if let Some((flag, _)) = arg.split_once('=') {
            if flag.starts_with("--") && secret_name(flag) {
                out.push(format!("{flag}={REDACTED}"));
                continue;
            }
        }
        if arg.starts_with("--") && secret_name(arg) {
            hide_next = true;
        }
        out.push(redact_url_password(arg));
    }
    out
}

/// The effective command line and relevant environment of `pid` (or of this process).
pub fn process_config(pid: Option<u32>, env_prefixes: &[&str]) -> Value {
    let (args, env): (Vec<String>, Vec<(String, String)>) = match pid {
        Some(pid) => {
            let read = |f: &str| std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
            let split = |b: Vec<u8>| -> Vec<String> {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            };
            let env = split(read("environ"))
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            (split(read("cmdline")), env)
        }
        None => (std::env::args().collect(), std::env::vars().collect()),
    };
    let env: serde_json::Map<String, Value> = env
        .into_iter()
        .filter(|(k, _)| env_prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| {
            let v = if secret_name(&k) {
                REDACTED.to_string()
            } else {
                redact_url_password(&v)
            };
            (k, Value::String(v))
        })
        .collect();
    json!({"pid": pid, "args": redact_args(&args), "env": env})
}

/// Names, modes and sizes under `dir` (two levels), never contents.
pub fn listing(dir: &Path) -> Vec<Value> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap_or(&e.path())
                .display()
                .to_string();
            out.push(json!({
                "path": rel,
                "mode": format!("{:o}", meta.permissions().mode() & 0o7777),
                "size": meta.len(),
                "dir": meta.is_dir(),
            }));
            if meta.is_dir() && depth < 2 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Redacts one log line: a JSON line member by member ([`redact`]); in text, the value of
/// every `name=value` / `name="value"` whose name says secret, and URL passwords.
pub fn redact_line(line: &str) -> String {
    if line.starts_with('{') {
        if let Ok(mut v) = serde_json::from_str::<Value>(line) {
            redact(&mut v);
            return v.to_string();
        }
    }
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let start = line[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
                .map_or(0, |p| p + 1);
            if start < i && secret_name(&line[start..i]) {
                let value_start = i + 1;
                let value_end = if bytes.get(value_start) == Some(&b'"') {
                    line[value_start + 1..]
                        .find('"')
                        .map_or(bytes.len(), |p| value_start + 1 + p + 1)
                } else {
                    line[value_start..]
                        .find(char::is_whitespace)
                        .map_or(bytes.len(), |p| value_start + p)
                };
                out.push_str(&line[copied..value_start]);
                out.push_str(REDACTED);
                copied = value_end;
                i = value_end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
    redact_url_password(&out)
}

/// The last `lines` lines of a file, each through [`redact_line`].
pub fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let text = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for line in &all[all.len().saturating_sub(lines)..] {
        out.push_str(&redact_line(line));
        out.push('\n');
    }
    Ok(out)
}

/// `journalctl -u <unit>`'s last lines, or why there are none.
pub fn journal(unit: &str, lines: usize) -> String {
    match Command::new("journalctl")
        .args([
            "-u",
            unit,
            "-n",
            &lines.to_string(),
            "--no-pager",
            "-o",
            "cat",
        ])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => format!(
            "journalctl -u {unit} failed ({}): {}\n",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => format!("journald not reachable (journalctl: {err})\n"),
    }
}

/// Packs `dir` into `out` (`tar -czf`), then removes `dir`.
///
/// # Errors
/// When `tar` fails.
pub fn pack(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let status = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .context("running tar")?;
    if !status.success() {
        anyhow::bail!("tar -czf {} failed: {status}", out.display());
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut v = json!({
            "redis": {"url": "redis://:hunter2@cache:6379/0", "password": "pw"},
            "client_secret": "s3cr3t",
            "name": "ok",
            "pem": "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n",
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["hunter2", "\"pw\"", "s3cr3t", "abc"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("redis://:[redacted]@cache:6379/0"));
        assert!(text.contains("\"ok\""));
        assert_eq!(
            redact_line(
                r#"=== starting: SASE_ADMIN_PASSWORD="pw 1" RUST_LOG=info token=abc url=redis://:p@h ==="#
            ),
            r#"=== starting: SASE_ADMIN_PASSWORD=[redacted] RUST_LOG=info token=[redacted] url=redis://:[redacted]@h ==="#
        );
        assert_eq!(
            redact_line(r#"{"message":"x","client_secret":"s"}"#),
            r#"{"client_secret":"[redacted]","message":"x"}"#
        );
        assert_eq!(
            redact_args(&[
                "sase-control".into(),
                "--admin-password".into(),
                "pw".into(),
                "--database-url=postgres://u:p@h/db".into(),
                "--operator-token=t".into(),
            ]),
            vec![
                "sase-control",
                "--admin-password",
                REDACTED,
                "--database-url=postgres://u:[redacted]@h/db",
                "--operator-token=[redacted]",
            ]
        );
    }
}
