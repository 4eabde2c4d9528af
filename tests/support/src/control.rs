//! A running control plane on its own (no edge), for drivers that enrol devices themselves and
//! speak the device channel directly: start-up (SQLite in the work dir or a database URL),
//! admin sign-in, tenant and site creation, and enrolment of a device data dir through the real
//! `sase-edge enroll` (so the device holds genuine credentials: its key, its certificate from the
//! tenant CA, the control plane's CA).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::process::{spawn_logged, ManagedChild};
use crate::stack::READY;

/// A control plane process with an admin session.
pub struct ControlPlane {
    /// The process (stopped on drop).
    pub child: ManagedChild,
    /// Base URL (`https://127.0.0.1:port`).
    pub cp: String,
    /// The control plane's CA certificate (PEM file).
    pub ca: PathBuf,
    /// HTTP client trusting that CA.
    pub api: reqwest::Client,
    /// Admin session token.
    pub session: String,
}

impl ControlPlane {
    /// Starts `sase-control serve` with its data in `work/control` (SQLite there unless
    /// `database_url` is given), extra environment `env`, and signs in as the admin.
    ///
    /// # Errors
    /// When it does not start within [`READY`] or the sign-in fails.
    pub async fn start(
        bins: &Path,
        work: &Path,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<ControlPlane> {
        let mut cmd = Command::new(bins.join("sase-control"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(work.join("control"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SASE_ADMIN_PASSWORD", "e2e-admin-password")
            .env("RUST_LOG", "info,sqlx=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = spawn_logged(&mut cmd, "sase-control", &work.join("control.log"))?;
        let line = child.wait_for_log_line("sase-control listening on https://", READY)?;
        let addr = line
            .split("https://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| anyhow!("no address in {line:?}"))?;
        let cp = format!("https://{addr}");
        let ca = work.join("control/tls/ca.pem");
        let api = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?)
            .timeout(READY)
            .build()?;
        let login = api
            .post(format!("{cp}/api/login"))
            .json(&json!({"username": "admin", "password": "e2e-admin-password"}))
            .send()
            .await?;
        if login.status() != StatusCode::OK {
            bail!("admin sign-in failed: {}", login.status());
        }
        let session = login.json::<Value>().await?["session"]
            .as_str()
            .ok_or_else(|| anyhow!("no session"))?
            .to_string();
        Ok(ControlPlane {
            child,
            cp,
            ca,
            api,
            session,
        })
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

    /// Creates a tenant and a site; returns their ids.
    ///
    /// # Errors
    /// When the control plane refuses.
    pub async fn tenant_and_site(&self, name: &str) -> Result<(String, String)> {
        let (_, tenant) = self
            .api_json(
                reqwest::Method::POST,
                "/api/tenants",
                Some(json!({ "name": name })),
            )
            .await?;
        let tenant_id = tenant["id"]
            .as_str()
            .ok_or_else(|| anyhow!("tenant: {tenant}"))?
            .to_string();
        let (_, site) = self
            .api_json(
                reqwest::Method::POST,
                &format!("/api/tenants/{tenant_id}/sites"),
                Some(json!({"name": "Branch"})),
            )
            .await?;
        let site_id = site["id"]
            .as_str()
            .ok_or_else(|| anyhow!("site: {site}"))?
            .to_string();
        Ok((tenant_id, site_id))
    }

    /// Enrols a device into `site_id` with `sase-edge enroll` into `data_dir`; returns its id.
    ///
    /// # Errors
    /// When a claim code cannot be had or enrolment fails.
    pub async fn enrol(
        &self,
        bins: &Path,
        site_id: &str,
        data_dir: &Path,
        name: &str,
    ) -> Result<String> {
        let (_, claim) = self
            .api_json(
                reqwest::Method::POST,
                &format!("/api/sites/{site_id}/claim-codes"),
                Some(json!({"ttl_minutes": 10})),
            )
            .await?;
        let code = claim["code"]
            .as_str()
            .ok_or_else(|| anyhow!("claim: {claim}"))?;
        let out = Command::new(bins.join("sase-edge"))
            .args(["enroll", "--control-plane", &self.cp, "--claim", code])
            .args(["--name", name])
            .arg("--ca-cert")
            .arg(&self.ca)
            .arg("--data-dir")
            .arg(data_dir)
            .output()?;
        if !out.status.success() {
            bail!("enrolment failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let identity: Value =
            serde_json::from_slice(&std::fs::read(data_dir.join("device.json"))?)?;
        identity["device_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no device id in device.json"))
    }
}
