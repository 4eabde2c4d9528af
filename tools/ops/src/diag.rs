//! The pieces of a `diag` support bundle that do not depend on which binary writes it:
//! redaction of secret values (by setting name, inside URLs, in JSON, in command lines and in
//! log lines), the effective configuration of a running process from `/proc/<pid>`, data-dir
//! listings (names, modes, sizes — never contents), log tails, the journald excerpt, and
//! packing the bundle with the system `tar`. `sase_edge::diag` and `sase_control::diag` collect
//! their own files and call these.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde_json::{json, Value};

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
