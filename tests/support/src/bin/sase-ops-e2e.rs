//! Operations checks against the real binaries (issue 11, the `30-ops` hardening part): a
//! control plane and an enrolled edge (`stack`), a demo upstream, then
//! * `/metrics` on both ops listeners exposes the named series and the counters move with
//!   allowed, refused and WAF-blocked requests; the control plane's metrics are not on its
//!   public API port;
//! * `/healthz` and `/readyz` answer on both;
//! * a JSON log line's `span.request_id` equals the reference id of the request's audit event
//!   (stored by the control plane);
//! * the edge's HTTPS listener refuses TLS 1.0, TLS 1.1 and weak TLS 1.2 suites (`openssl
//!   s_client`), accepts TLS 1.2 AEAD and TLS 1.3, picks up a new certificate without restart
//!   and keeps it when the file turns to garbage;
//! * `sase-edge diag` and `sase-control diag` produce bundles without the known secrets;
//! * a restarted edge tightens a 0755 data dir and a 0644 key, and refuses a key owned by
//!   another user.
//!
//! Prints `check <name> pass|fail <detail>` lines (tests/security/hardening.sh reads them) and
//! ends with `ops checks=<n> failed=<f>`; exits non-zero when a check failed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_testkit::process::{spawn_logged, wait_for_log_line};
use sase_testkit::stack::{start_demo_app, Stack, READY};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Directory with sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
}

#[derive(Default)]
struct Tally {
    checks: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        self.checks += 1;
        if ok {
            println!("check {name} pass {detail}");
        } else {
            self.failed += 1;
            println!("check {name} fail {detail}");
        }
    }
}

/// Metric samples: `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String)> {
    let resp = client.get(url).send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn write_cert(dir: &Path, cn: &str) -> Result<()> {
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key)?;
    // Key first, then the certificate, each replaced by rename (as an ACME client does).
    for (name, text, mode) in [
        ("listener.key", key.serialize_pem(), 0o600),
        ("listener.pem", cert.pem(), 0o644),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// One `openssl s_client` handshake; returns (handshake completed, output).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("10")
        .arg("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let done = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
            (done, text)
        }
        Err(err) => (false, format!("openssl not runnable: {err}")),
    }
}

fn first_line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or("")
        .trim()
}

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

/// Every file of an extracted bundle, concatenated.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

fn extract(bundle: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(bundle)
        .arg("-C")
        .arg(into)
        .status()?;
    if !status.success() {
        bail!("tar -xzf {} failed", bundle.display());
    }
    Ok(())
}

fn ops_url(log: &Path, needle: &str) -> Result<String> {
    let line = wait_for_log_line(log, needle, READY)?;
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no URL in {line:?}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bins = args.bin_dir;
    let work = args.work_dir;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("tls"))?;
    let mut t = Tally::default();

    // Inherited by the control plane and the edge that `Stack` starts: ops listeners on
    // ephemeral ports, JSON logs, and a secret the diagnostic bundles must not contain.
    let secret = format!("ops-known-secret-{}", std::process::id());
    std::env::set_var("SASE_EDGE_METRICS_LISTEN", "127.0.0.1:0");
    std::env::set_var("SASE_METRICS_LISTEN", "127.0.0.1:0");
    std::env::set_var("SASE_LOG_FORMAT", "json");
    std::env::set_var("SASE_EDGE_UPSTREAM_TOKEN", &secret);

    write_cert(&work.join("tls"), "first.ops.test")?;
    let (_app, upstream) = start_demo_app(&bins, &work)?;
    let policy = json!({"resources": [
        {"name": "app", "upstream": upstream,
         "waf": {"mode": "block", "paranoia_level": 1},
         "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]},
        {"name": "down", "upstream": "http://127.0.0.1:1",
         "routes": [{"id": "gone", "methods": ["GET"], "path": "/gone", "public": true}]}
    ]});
    let edge_args: Vec<String> = [
        "--https-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &work.join("tls/listener.pem").display().to_string(),
        "--tls-key",
        &work.join("tls/listener.key").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut stack =
        Stack::start_with_edge_args(&bins, &work, None, &policy, "127.0.0.1:0", &edge_args)
            .await
            .context("starting control plane and edge")?;
    let version = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/policy", stack.tenant_id),
            None,
        )
        .await?
        .1["version"]
        .as_u64()
        .unwrap_or(0);
    let edge_ops = ops_url(&work.join("edge.log"), "sase-edge ops listening on")?;
    let cp_ops = ops_url(&work.join("control.log"), "sase-control ops listening on")?;
    let https_port: u16 = stack
        .edge_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https://"))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow!("no HTTPS listener in {:?}", stack.edge_line))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let edge_url = format!("http://{}", stack.edge_addr);

    // ---- metrics: counters move with traffic ------------------------------------------------
    let before = parse_metrics(&get_text(&http, &format!("{edge_ops}/metrics")).await?.1);
    let cp_before = parse_metrics(&get_text(&http, &format!("{cp_ops}/metrics")).await?.1);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            http.get(format!("{edge_url}/health"))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    for _ in 0..2 {
        statuses.push(
            http.get(format!("{edge_url}/nowhere"))
                .send()
                .await?
                .status()
                .as_u16(),
        );
    }
    statuses.push(
        http.get(format!(
            "{edge_url}/health?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
        ))
        .send()
        .await?
        .status()
        .as_u16(),
    );
    let gone = http.get(format!("{edge_url}/gone")).send().await?;
    let gone_status = gone.status().as_u16();
    let reference = gone
        .headers()
        .get("x-sase-reference")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    statuses.push(gone_status);
    t.check(
        "ops-traffic-sent",
        statuses == [200, 200, 200, 404, 404, 403, 502],
        format!(
            "statuses {statuses:?} (3 allowed, 2 route_not_found, 1 waf_blocked, 1 upstream down)"
        ),
    );
    let after_text = get_text(
        &http,
        &format!("{edge_url_ops}/metrics", edge_url_ops = edge_ops),
    )
    .await?
    .1;
    let after = parse_metrics(&after_text);
    let allowed = r#"sase_edge_requests_total{decision="allow",reason="allowed"}"#;
    let not_found = r#"sase_edge_requests_total{decision="deny",reason="route_not_found"}"#;
    let waf = r#"sase_edge_requests_total{decision="deny",reason="waf_blocked"}"#;
    let moved = |k: &str| sample(&after, k) - sample(&before, k);
    t.check(
        "edge-metrics-requests-by-reason",
        moved(allowed) >= 3.0 && moved(not_found) >= 2.0 && moved(waf) >= 1.0,
        format!(
            "allowed +{} route_not_found +{} waf_blocked +{}",
            moved(allowed),
            moved(not_found),
            moved(waf)
        ),
    );
    t.check(
        "edge-metrics-waf",
        moved("sase_edge_waf_blocks_total") >= 1.0
            && moved("sase_edge_waf_evaluation_seconds_count") >= 4.0
            && after_text.contains("sase_edge_waf_evaluation_seconds_bucket{le=\"0.001\"}"),
        format!(
            "waf_blocks_total +{} waf_evaluation_seconds_count +{}",
            moved("sase_edge_waf_blocks_total"),
            moved("sase_edge_waf_evaluation_seconds_count")
        ),
    );
    let named = [
        "sase_edge_audit_spool_depth",
        "sase_edge_audit_upload_lag_seconds",
        "sase_edge_policy_version",
        "sase_edge_tunnel_peers",
        "sase_edge_tunnel_rx_bytes_total",
        "sase_edge_tunnel_tx_bytes_total",
        "sase_edge_tunnel_handshakes_total",
        "sase_edge_listeners_up",
    ];
    let missing: Vec<&str> = named
        .iter()
        .copied()
        .filter(|n| !after.contains_key(*n))
        .collect();
    t.check(
        "edge-metrics-named-series",
        missing.is_empty()
            && (sample(&after, "sase_edge_policy_version") - version as f64).abs() < 0.5,
        format!(
            "missing {missing:?}; policy_version {} (applied {version})",
            sample(&after, "sase_edge_policy_version")
        ),
    );
    // Ingest: the control plane's counter follows the edge's uploads.
    let mut cp_after = BTreeMap::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        cp_after = parse_metrics(&get_text(&http, &format!("{cp_ops}/metrics")).await?.1);
        if sample(&cp_after, "sase_control_audit_ingest_events_total")
            - sample(&cp_before, "sase_control_audit_ingest_events_total")
            >= 7.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingest_moved = sample(&cp_after, "sase_control_audit_ingest_events_total")
        - sample(&cp_before, "sase_control_audit_ingest_events_total");
    let tenant_version = sample(
        &cp_after,
        &format!(
            "sase_control_policy_version{{tenant=\"{}\"}}",
            stack.tenant_id
        ),
    );
    let login_counted = cp_after.iter().any(|(k, v)| {
        k.starts_with("sase_control_http_requests_total{")
            && k.contains("route=\"/api/login\"")
            && k.contains("status=\"200\"")
            && *v >= 1.0
    });
    t.check(
        "control-metrics-named-series",
        ingest_moved >= 7.0
            && (sample(&cp_after, "sase_control_connected_edges") - 1.0).abs() < 0.5
            && (tenant_version - version as f64).abs() < 0.5
            && login_counted
            && (sample(&cp_after, "sase_control_db_up") - 1.0).abs() < 0.5,
        format!(
            "audit_ingest_events_total +{ingest_moved}, connected_edges {}, policy_version{{tenant}} {tenant_version}, http_requests_total{{route=/api/login,status=200}} {login_counted}",
            sample(&cp_after, "sase_control_connected_edges")
        ),
    );
    let public = stack
        .api
        .get(format!("{}/metrics", stack.cp))
        .send()
        .await?;
    t.check(
        "control-metrics-not-on-api-port",
        public.status().as_u16() == 404,
        format!("GET {}/metrics -> {}", stack.cp, public.status().as_u16()),
    );

    // ---- health and readiness -----------------------------------------------------------------
    for (who, base) in [("edge", &edge_ops), ("control", &cp_ops)] {
        let (h, _) = get_text(&http, &format!("{base}/healthz")).await?;
        let (r, body) = get_text(&http, &format!("{base}/readyz")).await?;
        let ready = serde_json::from_str::<Value>(&body)
            .ok()
            .map(|v| v["ready"].clone());
        t.check(
            &format!("{who}-healthz-readyz"),
            h == 200 && r == 200 && ready == Some(Value::Bool(true)),
            format!("healthz {h}, readyz {r} {body}"),
        );
    }

    // ---- a log line joins its audit event -----------------------------------------------------
    let mut joined = None;
    let started = Instant::now();
    while joined.is_none() && started.elapsed() < Duration::from_secs(10) && !reference.is_empty() {
        let log = std::fs::read_to_string(work.join("edge.log")).unwrap_or_default();
        joined = log
            .lines()
            .filter(|l| l.starts_with('{') && l.contains(&reference))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["span"]["request_id"] == reference.as_str());
        if joined.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let event = if reference.is_empty() {
        None
    } else {
        stack
            .audit_event(&reference, Duration::from_secs(20))
            .await?
    };
    t.check(
        "log-request-id-is-audit-reference",
        joined.is_some()
            && event
                .as_ref()
                .is_some_and(|e| e["reference"] == reference.as_str()),
        format!(
            "log {:?} / audit event reason {:?}",
            joined.as_ref().map(|j| format!(
                "{} span.request_id={}",
                j["message"], j["span"]["request_id"]
            )),
            event.as_ref().map(|e| e["reason"].clone())
        ),
    );

    // ---- TLS settings -------------------------------------------------------------------------
    for (name, args, expect_ok) in [
        (
            "tls1.0-refused",
            vec!["-tls1", "-cipher", "ALL:@SECLEVEL=0"],
            false,
        ),
        (
            "tls1.1-refused",
            vec!["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
            false,
        ),
        (
            "tls1.2-cbc-suite-refused",
            vec![
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0",
            ],
            false,
        ),
        (
            "tls1.2-rsa-kx-and-3des-refused",
            vec![
                "-tls1_2",
                "-cipher",
                "AES128-GCM-SHA256:AES256-SHA:DES-CBC3-SHA:@SECLEVEL=0",
            ],
            false,
        ),
        (
            "tls1.2-aead-accepted",
            vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            true,
        ),
        ("tls1.3-accepted", vec!["-tls1_3"], true),
    ] {
        let (done, out) = s_client(https_port, &args);
        let detail = if done {
            first_line_with(&out, "Cipher is").to_string()
        } else {
            let alert = first_line_with(&out, "alert");
            if alert.is_empty() {
                first_line_with(&out, "Cipher is").to_string()
            } else {
                alert.to_string()
            }
        };
        // A refusal must be the server's (an alert after the client's hello), not a client
        // that offered nothing.
        let ok = if expect_ok {
            done
        } else {
            !done && out.contains("alert")
        };
        t.check(&format!("edge-{name}"), ok, detail);
    }

    // ---- certificate reload -------------------------------------------------------------------
    let (_, first) = s_client(https_port, &["-tls1_3"]);
    write_cert(&work.join("tls"), "second.ops.test")?;
    let started = Instant::now();
    let mut reloaded = false;
    while started.elapsed() < Duration::from_secs(20) {
        let (_, out) = s_client(https_port, &["-tls1_3"]);
        if out.contains("second.ops.test") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    t.check(
        "edge-cert-reload",
        first.contains("first.ops.test") && reloaded,
        format!(
            "before: {:?}; after replacing the files: {}",
            first_line_with(&first, "first.ops.test"),
            if reloaded {
                "second.ops.test served without restart"
            } else {
                "still the old certificate"
            }
        ),
    );
    let edge_log = work.join("edge.log");
    let offset = std::fs::metadata(&edge_log).map(|m| m.len()).unwrap_or(0);
    std::fs::write(
        work.join("tls/listener.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )?;
    let logged = sase_testkit::process::wait_for_log_line_from(
        &edge_log,
        offset,
        "does not load; keeping the previous one",
        Duration::from_secs(20),
    )
    .is_ok();
    let (_, out) = s_client(https_port, &["-tls1_3"]);
    t.check(
        "edge-cert-broken-file-keeps-old",
        logged && out.contains("second.ops.test"),
        format!(
            "error logged {logged}; still serving second.ops.test {}",
            out.contains("second.ops.test")
        ),
    );

    // ---- diagnostic bundles -------------------------------------------------------------------
    let edge_pid = stack.edge_pid()?;
    let edge_bundle = work.join("edge-diag.tar.gz");
    let out = Command::new(bins.join("sase-edge"))
        .args(["diag", "--out"])
        .arg(&edge_bundle)
        .arg("--data-dir")
        .arg(work.join("edge"))
        .args(["--pid", &edge_pid.to_string(), "--ops-url", &edge_ops])
        .arg("--log-file")
        .arg(work.join("edge.log"))
        .output()?;
    let key_line = std::fs::read_to_string(work.join("edge/device.key"))
        .unwrap_or_default()
        .lines()
        .nth(1)
        .unwrap_or("no-key-line")
        .to_string();
    let dir = work.join("edge-diag");
    let extracted = out.status.success() && extract(&edge_bundle, &dir).is_ok();
    let all = read_tree(&dir);
    let files = [
        "versions.txt",
        "config.json",
        "policy.json",
        "spool.json",
        "metrics.txt",
        "readyz.json",
        "logs/0-edge.log",
    ];
    let present = files.iter().all(|f| dir.join(f).exists());
    let policy_json: Value = std::fs::read(dir.join("policy.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    t.check(
        "edge-diag-bundle",
        extracted
            && present
            && policy_json["version"].as_u64() == Some(version)
            && all.contains("sase_edge_requests_total")
            && all.contains("SASE_EDGE_UPSTREAM_TOKEN"),
        format!(
            "bundle {} ({} bytes): files present {present}, policy version {}, {}",
            edge_bundle.display(),
            std::fs::metadata(&edge_bundle)
                .map(|m| m.len())
                .unwrap_or(0),
            policy_json["version"],
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
    );
    t.check(
        "edge-diag-secrets-redacted",
        extracted
            && !all.contains(&secret)
            && !all.contains(&key_line)
            && all.contains("[redacted]"),
        format!(
            "known env secret absent {}, device key material absent {}",
            !all.contains(&secret),
            !all.contains(&key_line)
        ),
    );
    let cp_pid = stack
        .control
        .as_ref()
        .and_then(sase_testkit::process::ManagedChild::id)
        .ok_or_else(|| anyhow!("control plane not running"))?;
    let cp_bundle = work.join("control-diag.tar.gz");
    let out = Command::new(bins.join("sase-control"))
        .args(["diag", "--out"])
        .arg(&cp_bundle)
        .arg("--data-dir")
        .arg(work.join("control"))
        .args(["--pid", &cp_pid.to_string(), "--ops-url", &cp_ops])
        .arg("--log-file")
        .arg(work.join("control.log"))
        .env_remove("SASE_ADMIN_PASSWORD")
        .output()?;
    let dir = work.join("control-diag");
    let extracted = out.status.success() && extract(&cp_bundle, &dir).is_ok();
    let all = read_tree(&dir);
    let db: Value = std::fs::read(dir.join("db.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    t.check(
        "control-diag-bundle",
        extracted
            && db["rows"]["devices"].as_i64() == Some(1)
            && db["rows"]["audit_events"].as_i64().is_some_and(|n| n >= 7)
            && all.contains("sase_control_connected_edges")
            && all.contains("SASE_ADMIN_PASSWORD"),
        format!(
            "db rows devices={} audit_events={} policy_versions={}; {}",
            db["rows"]["devices"],
            db["rows"]["audit_events"],
            db["rows"]["policy_versions"],
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
    );
    t.check(
        "control-diag-secrets-redacted",
        extracted && !all.contains("e2e-admin-password") && all.contains("[redacted]"),
        format!(
            "admin password from the server's environment absent {}",
            !all.contains("e2e-admin-password")
        ),
    );

    // ---- file modes at start --------------------------------------------------------------------
    // The control plane goes away and the stored bundle with it, so the restarted edge has no
    // policy to enforce: not ready (and says why), yet alive.
    if let Some(mut edge) = stack.edge.take() {
        let _ = edge.terminate();
    }
    if let Some(mut control) = stack.control.take() {
        let _ = control.terminate();
    }
    let data = work.join("edge");
    std::fs::rename(data.join("bundle.json"), work.join("bundle.json.aside"))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(
        data.join("device.key"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    let run_edge = |log: &str| {
        let mut cmd = Command::new(bins.join("sase-edge"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args(["--http-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info");
        spawn_logged(&mut cmd, "sase-edge", &work.join(log))
    };
    let mut edge = run_edge("edge-perms.log")?;
    let started = edge.wait_for_log_line("sase-edge running", READY).is_ok();
    let warned = std::fs::read_to_string(work.join("edge-perms.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("file mode too open: tightened"))
        .count();
    t.check(
        "edge-perms-fixed-at-start",
        started
            && warned >= 2
            && file_mode(&data) == 0o700
            && file_mode(&data.join("device.key")) == 0o600,
        format!(
            "data dir 0755 -> {:o}, device.key 0644 -> {:o}, {warned} warnings logged",
            file_mode(&data),
            file_mode(&data.join("device.key"))
        ),
    );
    let ops = ops_url(&work.join("edge-perms.log"), "sase-edge ops listening on")?;
    let (h, _) = get_text(&http, &format!("{ops}/healthz")).await?;
    let (r, body) = get_text(&http, &format!("{ops}/readyz")).await?;
    t.check(
        "edge-readyz-without-policy",
        h == 200 && r == 503 && body.contains("\"policy_applied\":false"),
        format!("healthz {h}, readyz {r} {body}"),
    );
    let _ = edge.terminate();
    let chown = |uid: &str| {
        Command::new("chown")
            .arg(uid)
            .arg(data.join("device.key"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if chown("65534") {
        let mut edge = run_edge("edge-owner.log")?;
        let refused = edge
            .wait_for_log_line("is owned by uid 65534", Duration::from_secs(30))
            .is_ok();
        let exited = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match edge.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    _ if Instant::now() > deadline => break None,
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        };
        t.check(
            "edge-perms-foreign-owner-refused",
            refused && exited.is_some_and(|s| !s.success()),
            format!(
                "{:?}, exit {exited:?}",
                first_line_with(
                    &std::fs::read_to_string(work.join("edge-owner.log")).unwrap_or_default(),
                    "owned by"
                )
                .chars()
                .take(200)
                .collect::<String>()
            ),
        );
        chown("0");
    } else {
        t.check(
            "edge-perms-foreign-owner-refused",
            false,
            "chown not possible (run as root)",
        );
    }

    println!("ops checks={} failed={}", t.checks, t.failed);
    if t.failed > 0 {
        bail!("{} of {} checks failed", t.failed, t.checks);
    }
    Ok(())
}
