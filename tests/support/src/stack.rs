//! A running control plane with an enrolled edge, for end-to-end drivers: start-up (log in,
//! tenant, site, claim code, enrolment, first policy, "policy applied"), admin API calls,
//! policy updates and audit look-ups. Shared by `sase-waf-e2e` and `sase-jwt-attacks`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{spawn_logged, ManagedChild};

/// How long each start-up step may take.
pub const READY: Duration = Duration::from_secs(60);

/// Starts the sample app (`sase-demo-app`, log in `work/app.log`) on an ephemeral loopback
/// port; returns the process and its base URL (`http://127.0.0.1:port`).
///
/// # Errors
/// When it does not start within [`READY`].
pub fn start_demo_app(bins: &Path, work: &Path) -> Result<(ManagedChild, String)> {
    let mut app = spawn_logged(
        Command::new(bins.join("sase-demo-app")).args(["--listen", "127.0.0.1:0"]),
        "sase-demo-app",
        &work.join("app.log"),
    )?;
    let line = app.wait_for_log_line("listening on http://", READY)?;
    let upstream = line
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("no upstream URL in {line:?}"))?
        .to_string();
    Ok((app, upstream))
}

/// A control plane with an admin session, a tenant and one enrolled edge (whose stdout/stderr
/// go to `control.log` and `edge.log` in the work directory). Dropping it stops both.
pub struct Stack {
    /// The control plane process (taken and stopped to simulate its absence).
    pub control: Option<ManagedChild>,
    /// The edge process.
    pub edge: Option<ManagedChild>,
    /// Base URL of the control plane (`https://127.0.0.1:port`).
    pub cp: String,
    /// HTTP client trusting the control plane's CA.
    pub api: reqwest::Client,
    /// Admin session token.
    pub session: String,
    /// Id of the tenant created.
    pub tenant_id: String,
    /// Id of the enrolled edge device.
    pub device_id: String,
    /// Address of the edge's HTTP listener.
    pub edge_addr: SocketAddr,
    /// The edge's `sase-edge running … listening on …` line (every listener's URL).
    pub edge_line: String,
    /// Work directory (logs, data dirs).
    pub work: PathBuf,
}

impl Stack {
    /// Starts a control plane (SQLite in `work`, or `database_url`), creates a tenant, a site
    /// and a claim code, enrols an edge with it, publishes `policy`, starts the edge with an
    /// HTTP listener on `http_listen` and waits until the edge reports the policy applied.
    ///
    /// # Errors
    /// When any step fails or does not finish within a minute.
    pub async fn start(
        bins: &Path,
        work: &Path,
        database_url: Option<&str>,
        policy: &Value,
        http_listen: &str,
    ) -> Result<Stack> {
        Stack::start_with_edge_args(bins, work, database_url, policy, http_listen, &[]).await
    }

    /// As [`Stack::start`], with more arguments for `sase-edge run` (e.g. `--https-listen`).
    ///
    /// # Errors
    /// When any step fails or does not finish within a minute.
    pub async fn start_with_edge_args(
        bins: &Path,
        work: &Path,
        database_url: Option<&str>,
        policy: &Value,
        http_listen: &str,
        edge_args: &[String],
    ) -> Result<Stack> {
        let mut cmd = Command::new(bins.join("sase-control"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(work.join("control"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SASE_ADMIN_PASSWORD", "e2e-admin-password")
            .env("RUST_LOG", "info,sqlx=warn");
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut control = spawn_logged(&mut cmd, "sase-control", &work.join("control.log"))?;
        let line = control.wait_for_log_line("sase-control listening on https://", READY)?;
        let addr = line
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| anyhow!("no address in {line:?}"))?
            .to_string();
        let cp = format!("https://{addr}");
        let ca = work.join("control/tls/ca.pem");
        let api = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?)
            .timeout(Duration::from_secs(60))
            .build()?;
        let login = api
            .post(format!("{cp}/api/login"))
            .json(&json!({"username": "admin", "password": "e2e-admin-password"}))
            .send()
            .await?;
        if login.status() != StatusCode::OK {
            bail!("admin login: {}", login.status());
        }
        let session = login.json::<Value>().await?["session"]
            .as_str()
            .ok_or_else(|| anyhow!("no session"))?
            .to_string();
        let mut stack = Stack {
            control: Some(control),
            edge: None,
            cp,
            api,
            session,
            tenant_id: String::new(),
            device_id: String::new(),
            edge_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            edge_line: String::new(),
            work: work.to_path_buf(),
        };
        let (_, tenant) = stack
            .api_json(
                reqwest::Method::POST,
                "/api/tenants",
                Some(json!({"name": "E2E"})),
            )
            .await?;
        stack.tenant_id = tenant["id"]
            .as_str()
            .ok_or_else(|| anyhow!("tenant: {tenant}"))?
            .to_string();
        let (_, site) = stack
            .api_json(
                reqwest::Method::POST,
                &format!("/api/tenants/{}/sites", stack.tenant_id),
                Some(json!({"name": "Branch"})),
            )
            .await?;
        let site_id = site["id"]
            .as_str()
            .ok_or_else(|| anyhow!("site: {site}"))?
            .to_string();
        let (_, claim) = stack
            .api_json(
                reqwest::Method::POST,
                &format!("/api/sites/{site_id}/claim-codes"),
                Some(json!({"ttl_minutes": 10})),
            )
            .await?;
        let code = claim["code"]
            .as_str()
            .ok_or_else(|| anyhow!("claim: {claim}"))?
            .to_string();
        let out = Command::new(bins.join("sase-edge"))
            .args([
                "enroll",
                "--control-plane",
                &stack.cp,
                "--claim",
                &code,
                "--name",
                "e2e-edge",
            ])
            .arg("--ca-cert")
            .arg(&ca)
            .arg("--data-dir")
            .arg(work.join("edge"))
            .output()?;
        if !out.status.success() {
            bail!("enrolment failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let identity: Value =
            serde_json::from_slice(&std::fs::read(work.join("edge/device.json"))?)?;
        stack.device_id = identity["device_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no device id"))?
            .to_string();

        let version = stack.put_policy(policy).await?;
        let mut cmd = Command::new(bins.join("sase-edge"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(work.join("edge"))
            .arg("--http-listen")
            .arg(http_listen)
            .args(edge_args)
            .env("RUST_LOG", "info");
        let mut edge = spawn_logged(&mut cmd, "sase-edge", &work.join("edge.log"))?;
        let line = edge.wait_for_log_line("sase-edge running", READY)?;
        let url = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("no URL in {line:?}"))?;
        stack.edge_addr = url.parse().with_context(|| format!("edge address {url}"))?;
        stack.edge_line = line.clone();
        edge.wait_for_log_line("policy applied", READY)?;
        stack.edge = Some(edge);
        stack.wait_applied(version, READY).await?;
        Ok(stack)
    }

    /// An admin API call; the answer as JSON (or a JSON string when it is not JSON).
    ///
    /// # Errors
    /// When the request cannot be sent or read.
    pub async fn api_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .api
            .request(method, format!("{}{path}", self.cp))
            .bearer_auth(&self.session);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Publishes a policy; returns its version.
    ///
    /// # Errors
    /// When the control plane cannot be reached or refuses.
    pub async fn put_policy(&self, policy: &Value) -> Result<u64> {
        let (status, body) = self
            .api_json(
                reqwest::Method::PUT,
                &format!("/api/tenants/{}/policy", self.tenant_id),
                Some(policy.clone()),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("policy refused: {status} {body}");
        }
        body["version"]
            .as_u64()
            .ok_or_else(|| anyhow!("no version in {body}"))
    }

    /// Waits until the device reports `version` as applied; returns how long that took.
    ///
    /// # Errors
    /// When the control plane cannot be reached or refuses.
    pub async fn wait_applied(&self, version: u64, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let (status, devices) = self
                .api_json(
                    reqwest::Method::GET,
                    &format!("/api/tenants/{}/devices", self.tenant_id),
                    None,
                )
                .await?;
            let applied = devices
                .as_array()
                .and_then(|d| d.iter().find(|d| d["id"] == self.device_id.as_str()))
                .and_then(|d| d["applied_version"].as_u64());
            if status == StatusCode::OK && applied.is_some_and(|v| v >= version) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("policy version {version} not applied within {timeout:?} (device reports {applied:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The audit event with this reference, waiting up to `timeout` for it to arrive.
    ///
    /// # Errors
    /// When the control plane cannot be reached or refuses.
    pub async fn audit_event(&self, reference: &str, timeout: Duration) -> Result<Option<Value>> {
        let started = Instant::now();
        loop {
            let (status, page) = self
                .api_json(
                    reqwest::Method::GET,
                    &format!("/api/audit?reference={reference}"),
                    None,
                )
                .await?;
            if status != StatusCode::OK {
                bail!("audit query: {status} {page}");
            }
            if let Some(event) = page["events"].as_array().and_then(|e| e.first()) {
                return Ok(Some(event.clone()));
            }
            if started.elapsed() > timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// All HTTP events of the tenant (newest first), up to 10000.
    ///
    /// # Errors
    /// When the control plane cannot be reached or refuses.
    pub async fn tenant_events(&self) -> Result<Vec<Value>> {
        let (status, page) = self
            .api_json(
                reqwest::Method::GET,
                &format!("/api/audit?tenant={}&limit=10000", self.tenant_id),
                None,
            )
            .await?;
        if status != StatusCode::OK {
            bail!("audit query: {status} {page}");
        }
        Ok(page["events"].as_array().cloned().unwrap_or_default())
    }

    /// Process id of the edge.
    ///
    /// # Errors
    /// When the edge is not running.
    pub fn edge_pid(&self) -> Result<u32> {
        self.edge
            .as_ref()
            .and_then(ManagedChild::id)
            .ok_or_else(|| anyhow!("edge not running"))
    }
}
