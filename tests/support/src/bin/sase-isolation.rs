//! Tenant isolation and least privilege, for every REST endpoint of the control plane.
//!
//! Starts a real control plane (the bootstrap admin owns the default MSP), creates two customer
//! tenants A and B under it with a site, an enrolled device (real `sase-edge enroll`) and a
//! policy each, and admins of every role: MSP engineer; customer admin and customer auditor of
//! A and of B. Then, for every operation in the control plane's OpenAPI document
//! (`/api/openapi.json`), aimed at tenant A's objects:
//!
//! * (a) with B's customer-admin token: refused (403/404) and nothing of A in the answer — list
//!   endpoints answer B's own data only;
//! * (b) with a lower credential of A — the auditor where the role lacks the permission, an API
//!   token of A's customer admin scoped to something else where every role has it, and the MSP
//!   engineer for MSP-owner-only permissions: refused (401/403/404);
//! * (c) for a sample (every read and the main writes), the legitimate role succeeds, so the
//!   test cannot pass by refusing everything.
//!
//! An operation the table below does not classify fails the run (a new endpoint must be added
//! here). Prints one line per check that fails and ends with
//! `isolation endpoints=<n> leaks=<k>`; exits non-zero when k > 0 or a legitimate call fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use reqwest::{Method, StatusCode};
use sase_testkit::control::ControlPlane;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Tenant isolation and role checks over every control-plane endpoint")]
struct Args {
    /// Directory holding sase-control and sase-edge.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Database URL (default: SQLite in the work dir).
    #[arg(long)]
    database_url: Option<String>,
}

const POLICY_YAML: &str = r#"
issuers:
  - id: demo
    issuer: https://idp.example
    audiences: [orders]
    algorithms: [EdDSA, ES256]
    keys:
      jwks: {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}]}
resources:
  - name: orders-api
    upstream: http://127.0.0.1:9000
    issuers: [demo]
    routes:
      - id: list
        methods: [GET]
        path: /orders
        scopes: [orders:read]
"#;

const PASSWORD: &str = "isolation-password-1";

/// How an operation relates to tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scoping {
    /// No credential needed (sign-in, enrolment by claim code, health).
    Public,
    /// Devices only (mTLS channel): admin credentials are refused.
    Device,
    /// Remote-access clients only (`zt_` session tokens of `sase-connect`): admin credentials
    /// are refused.
    Client,
    /// The caller's own session, identity or MFA.
    Own,
    /// Acts on the tenant, site, device or admin named in the path (or body).
    Tenant,
    /// A list or creation within the caller's scope.
    Filtered,
}

/// Classification of each documented operation: scoping, the permission it needs, and
/// whether the legitimate-role sample calls it.
fn classify(method: &str, path: &str) -> Option<(Scoping, Option<&'static str>, bool)> {
    use Scoping::*;
    Some(match (method, path) {
        ("POST", "/api/login") => (Public, None, false),
        ("POST", "/api/enroll") => (Public, None, false),
        ("GET", "/healthz") => (Public, None, false),
        ("GET", "/api/edge/channel") => (Device, None, false),
        ("POST", "/api/logout") => (Own, None, false),
        ("GET", "/api/me") => (Own, None, true),
        ("POST", "/api/me/mfa") => (Own, None, false),
        ("POST", "/api/me/password") => (Own, None, false),
        ("POST", "/api/me/mfa/confirm") => (Own, None, false),
        ("POST", "/api/tokens") => (Filtered, Some("tokens.create"), true),
        ("GET", "/api/tenants") => (Filtered, Some("tenants.read"), true),
        ("POST", "/api/tenants") => (Filtered, Some("tenants.create"), true),
        ("GET", "/api/audit") => (Filtered, Some("audit.read"), true),
        ("GET", "/api/alerts") => (Filtered, Some("alerts.read"), true),
        ("GET", "/api/admins") => (Filtered, Some("admins.read"), true),
        ("GET", "/api/admin-actions") => (Filtered, Some("admin_actions.read"), true),
        ("POST", "/api/admins") => (Tenant, Some("admins.manage"), true),
        ("GET", "/api/tenants/{tenant_id}/sites") => (Tenant, Some("tenants.read"), true),
        ("POST", "/api/tenants/{tenant_id}/sites") => (Tenant, Some("sites.write"), true),
        ("POST", "/api/sites/{site_id}/claim-codes") => (Tenant, Some("claim_codes.create"), true),
        ("GET", "/api/tenants/{tenant_id}/devices") => (Tenant, Some("devices.read"), true),
        ("GET", "/api/tenants/{tenant_id}/policy") => (Tenant, Some("policy.read"), true),
        ("PUT", "/api/tenants/{tenant_id}/policy") => (Tenant, Some("policy.write"), true),
        ("GET", "/api/tenants/{tenant_id}/policy/versions") => (Tenant, Some("policy.read"), true),
        ("GET", "/api/devices/{device_id}/audit/verify") => (Tenant, Some("audit.read"), true),
        ("GET", "/api/tenants/{tenant_id}/audit/checkpoint") => (Tenant, Some("audit.read"), true),
        ("POST", "/api/tenants/{tenant_id}/audit/checkpoint") => (Tenant, Some("audit.sign"), true),
        // No events are recorded in this run: the legitimate answer is 404 too.
        ("GET", "/api/tenants/{tenant_id}/audit/proof") => (Tenant, Some("audit.read"), false),
        ("GET", "/api/tenants/{tenant_id}/audit/export") => (Tenant, Some("audit.read"), true),
        ("POST", "/api/admins/{admin_id}/disable") => (Tenant, Some("admins.manage"), true),
        ("DELETE", "/api/admins/{admin_id}/mfa") => (Tenant, Some("admins.manage"), true),
        // CAEP: the SET push endpoint authenticates the transmitter by the SET's signature.
        ("POST", "/api/tenants/{tenant_id}/caep/events") => (Public, None, false),
        ("PUT", "/api/tenants/{tenant_id}/caep/transmitter") => {
            (Tenant, Some("policy.write"), false)
        }
        // No transmitter is configured in this run: the legitimate answer is 404 too.
        ("GET", "/api/tenants/{tenant_id}/caep/transmitter") => {
            (Tenant, Some("policy.read"), false)
        }
        ("GET", "/api/tenants/{tenant_id}/caep/revocations") => (Tenant, Some("policy.read"), true),
        ("GET", "/api/tenants/{tenant_id}/inventory") => (Tenant, Some("policy.read"), true),
        ("GET", "/api/tenants/{tenant_id}/siem/sinks") => (Tenant, Some("audit.read"), true),
        ("GET", "/api/tenants/{tenant_id}/audit/retention") => (Tenant, Some("audit.read"), true),
        ("POST", "/api/tenants/{tenant_id}/policy/rollouts")
        | ("POST", "/api/tenants/{tenant_id}/policy/rollouts/promote")
        | ("POST", "/api/tenants/{tenant_id}/policy/rollback") => {
            (Tenant, Some("policy.write"), false)
        }
        ("POST", "/api/tenants/{tenant_id}/policy/dry-run") => (Tenant, Some("policy.read"), true),
        ("GET", "/api/tenants/{tenant_id}/policy/diff") => (Tenant, Some("policy.read"), false),
        ("GET", "/api/tenants/{tenant_id}/fleet/health") => (Tenant, Some("devices.read"), true),
        ("GET", "/api/policy-templates") => (Own, Some("policy.read"), true),
        ("GET", "/api/tenants/{tenant_id}/policy/drafts") => (Tenant, Some("policy.read"), true),
        ("POST", "/api/tenants/{tenant_id}/policy/drafts") => (Tenant, Some("policy.write"), true),
        ("GET", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}")
        | ("POST", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}/dry-run") => {
            (Tenant, Some("policy.read"), false)
        }
        ("PUT", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}")
        | ("DELETE", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}")
        | ("POST", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}/publish") => {
            (Tenant, Some("policy.write"), false)
        }
        ("POST", "/api/policy-templates") | ("PUT", "/api/policy-templates/{template_id}") => {
            (Own, Some("policy.write"), false)
        }
        ("GET", "/api/tenants/{tenant_id}/policy/source") => (Tenant, Some("policy.read"), false),
        ("PUT", "/api/tenants/{tenant_id}/policy/source")
        | ("DELETE", "/api/tenants/{tenant_id}/policy/source") => {
            (Tenant, Some("policy.write"), false)
        }
        ("GET", "/api/sites/{site_id}/claim-codes") => (Tenant, Some("devices.read"), true),
        ("POST", "/api/sites/{site_id}/claim-codes/bulk") => {
            (Tenant, Some("claim_codes.create"), false)
        }
        ("DELETE", "/api/sites/{site_id}/claim-codes/{code_id}") => {
            (Tenant, Some("claim_codes.create"), false)
        }
        ("POST", "/api/devices/{device_id}/decommission") => (Tenant, Some("sites.write"), false),
        ("POST", "/api/devices/{device_id}/reenroll") => {
            (Tenant, Some("claim_codes.create"), false)
        }
        ("GET", "/api/tenants/{tenant_id}/policy/rollouts/latest") => {
            (Tenant, Some("policy.read"), false)
        }
        ("PUT", "/api/tenants/{tenant_id}/audit/retention") => (Tenant, Some("audit.sign"), true),
        ("POST", "/api/tenants/{tenant_id}/audit/retention/run") => {
            (Tenant, Some("audit.sign"), true)
        }
        ("GET", "/api/tenants/{tenant_id}/audit/consistency") => {
            (Tenant, Some("audit.read"), false)
        }
        ("POST", "/api/tenants/{tenant_id}/siem/sinks") => (Tenant, Some("audit.sign"), true),
        ("DELETE", "/api/tenants/{tenant_id}/siem/sinks/{sink_id}") => {
            (Tenant, Some("audit.sign"), false)
        }
        ("GET", "/api/tenants/{tenant_id}/incidents") => (Tenant, Some("audit.read"), true),
        ("POST", "/api/tenants/{tenant_id}/incidents") => (Tenant, Some("incidents.manage"), true),
        ("GET", "/api/tenants/{tenant_id}/incidents/{incident_id}")
        | ("GET", "/api/tenants/{tenant_id}/incidents/{incident_id}/report") => {
            (Tenant, Some("audit.read"), false)
        }
        ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/events")
        | ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/submissions")
        | ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/close") => {
            (Tenant, Some("incidents.manage"), false)
        }
        ("GET", "/api/tenants/{tenant_id}/ztna/settings")
        | ("GET", "/api/tenants/{tenant_id}/ztna/sites")
        | ("GET", "/api/tenants/{tenant_id}/ztna/users")
        | ("GET", "/api/tenants/{tenant_id}/ztna/rules")
        | ("GET", "/api/tenants/{tenant_id}/ztna/devices")
        | ("GET", "/api/tenants/{tenant_id}/ztna/sessions") => (Tenant, Some("policy.read"), true),
        // Writes republish the tenant's policy: not sampled (tenant A's version count is checked).
        ("PUT", "/api/tenants/{tenant_id}/ztna/settings")
        | ("PUT", "/api/tenants/{tenant_id}/ztna/sites/{site_id}")
        | ("POST", "/api/tenants/{tenant_id}/ztna/users")
        | ("PUT", "/api/tenants/{tenant_id}/ztna/users/{user_id}/groups")
        | ("POST", "/api/tenants/{tenant_id}/ztna/users/{user_id}/totp")
        | ("POST", "/api/tenants/{tenant_id}/ztna/users/{user_id}/disable")
        | ("POST", "/api/tenants/{tenant_id}/ztna/users/{user_id}/enable")
        | ("POST", "/api/tenants/{tenant_id}/ztna/rules")
        | ("DELETE", "/api/tenants/{tenant_id}/ztna/rules/{rule_id}")
        | ("POST", "/api/tenants/{tenant_id}/ztna/devices/{device_id}/revoke")
        | ("POST", "/api/tenants/{tenant_id}/ztna/sessions/{session_id}/revoke") => {
            (Tenant, Some("policy.write"), false)
        }
        ("POST", "/api/ztna/login") => (Public, None, false),
        ("POST", "/api/ztna/logout")
        | ("POST", "/api/ztna/devices")
        | ("PUT", "/api/ztna/devices/{device_id}/posture")
        | ("GET", "/api/ztna/devices/{device_id}/config") => (Client, None, false),
        ("GET", "/api/openapi.json") => (Public, None, false),
        // The operator's own keys and firmware: owners of the operator's MSP (signing keys) or
        // MSP admins (updates) only; every customer credential is refused. Not sampled (an
        // announce or activate would rotate the key under the rest of the run).
        ("GET", "/api/signing-keys")
        | ("POST", "/api/signing-keys/next")
        | ("POST", "/api/signing-keys/activate")
        | ("GET", "/api/updates")
        | ("POST", "/api/updates")
        | ("POST", "/api/updates/{update_id}/offer")
        | ("GET", "/api/updates/{update_id}/devices") => (Tenant, Some("policy.write"), false),
        ("GET", "/api/edge/updates/{update_id}") => (Device, None, false),
        _ => return None,
    })
}

/// Permissions every role has: for these, the lower credential is a token scoped otherwise.
const READ_FOR_ALL: [&str; 6] = [
    "tenants.read",
    "devices.read",
    "policy.read",
    "audit.read",
    "alerts.read",
    "admin_actions.read",
];

struct Client<'a> {
    cp: &'a ControlPlane,
}

impl Client<'_> {
    async fn call(
        &self,
        method: &Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String)> {
        let mut req = self
            .cp
            .api
            .request(method.clone(), format!("{}{path_and_query}", self.cp.cp));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        match body {
            Some(Value::String(yaml)) => {
                req = req
                    .header("content-type", "application/yaml")
                    .body(yaml.clone());
            }
            Some(v) => req = req.json(v),
            None => {}
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok((status, resp.text().await?))
    }

    async fn json_ok(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, text) = self
            .call(&method, path, Some(bearer), body.as_ref())
            .await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn login(&self, username: &str) -> Result<String> {
        let v = self
            .json_ok(
                Method::POST,
                "/api/login",
                "",
                Some(json!({"username": username, "password": PASSWORD})),
            )
            .await?;
        v["session"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no session for {username}"))
    }

    async fn token(&self, session: &str, scopes: Option<&[&str]>) -> Result<String> {
        let mut body = json!({"name": "isolation", "ttl_hours": 1});
        if let Some(s) = scopes {
            body["scopes"] = json!(s);
        }
        let v = self
            .json_ok(Method::POST, "/api/tokens", session, Some(body))
            .await?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no token"))
    }

    async fn admin(
        &self,
        bearer: &str,
        username: &str,
        role: &str,
        tenant: Option<&str>,
    ) -> Result<String> {
        let v = self
            .json_ok(
                Method::POST,
                "/api/admins",
                bearer,
                Some(json!({"username": username, "password": PASSWORD, "role": role, "tenant_id": tenant})),
            )
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no admin id: {v}"))
    }
}

/// The objects of one tenant that requests are aimed at.
struct TenantFixture {
    tenant: String,
    site: String,
    device: String,
    admin_token: String,
    admin_session: String,
    auditor_id: String,
    auditor_session: String,
}

async fn tenant_fixture(
    cp: &ControlPlane,
    c: &Client<'_>,
    bins: &std::path::Path,
    work: &std::path::Path,
    letter: &str,
) -> Result<TenantFixture> {
    let (tenant, site) = cp.tenant_and_site(&format!("Customer {letter}")).await?;
    let device = cp
        .enrol(
            bins,
            &site,
            &work.join(format!("edge-{letter}")),
            &format!("edge-{letter}"),
        )
        .await
        .context("enrolment")?;
    c.json_ok(
        Method::PUT,
        &format!("/api/tenants/{tenant}/policy"),
        &cp.session,
        Some(Value::String(POLICY_YAML.to_string())),
    )
    .await?;
    let lower = letter.to_ascii_lowercase();
    c.admin(
        &cp.session,
        &format!("iso-{lower}-admin"),
        "customer_admin",
        Some(&tenant),
    )
    .await?;
    let admin_session = c.login(&format!("iso-{lower}-admin")).await?;
    let admin_token = c.token(&admin_session, None).await?;
    // The customer admin creates its auditor (least privilege: a role not above its own).
    let auditor_id = c
        .admin(
            &admin_token,
            &format!("iso-{lower}-auditor"),
            "customer_auditor",
            None,
        )
        .await?;
    let auditor_session = c.login(&format!("iso-{lower}-auditor")).await?;
    Ok(TenantFixture {
        tenant,
        site,
        device,
        admin_token,
        admin_session,
        auditor_id,
        auditor_session,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let work = args.work_dir.canonicalize()?;
    let cp = ControlPlane::start(&args.bin_dir, &work, args.database_url.as_deref(), &[]).await?;
    let c = Client { cp: &cp };
    let owner = cp.session.clone();

    let a = tenant_fixture(&cp, &c, &args.bin_dir, &work, "A").await?;
    let b = tenant_fixture(&cp, &c, &args.bin_dir, &work, "B").await?;
    c.admin(&owner, "iso-engineer", "msp_engineer", None)
        .await?;
    let engineer = c.token(&c.login("iso-engineer").await?, None).await?;
    // A's customer admin, with a token that carries one unrelated scope.
    let a_narrow = c.token(&a.admin_session, Some(&["sites.write"])).await?;
    // Throwaway admins for the legitimate disable and MFA-reset calls.
    let a_temp = c
        .admin(&a.admin_token, "iso-a-temp", "customer_auditor", None)
        .await?;

    // What must never appear in B's answers.
    let markers = [
        a.tenant.clone(),
        a.site.clone(),
        a.device.clone(),
        a.auditor_id.clone(),
        "Customer A".to_string(),
        "iso-a-admin".to_string(),
        "iso-a-auditor".to_string(),
    ];
    let ids = |fx: &TenantFixture, admin: &str| -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("{tenant_id}", fx.tenant.clone()),
            ("{site_id}", fx.site.clone()),
            ("{device_id}", fx.device.clone()),
            ("{admin_id}", admin.to_string()),
        ])
    };
    let a_ids = ids(&a, &a.auditor_id);

    let (status, doc) = c
        .call(&Method::GET, "/api/openapi.json", None, None)
        .await?;
    if status != StatusCode::OK {
        bail!("openapi document: {status}");
    }
    let doc: Value = serde_json::from_str(&doc)?;
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("no paths in the OpenAPI document"))?;

    let mut endpoints = 0usize;
    let mut leaks = 0usize;
    let mut checks = 0usize;
    let mut legit_ok = 0usize;
    let mut legit_failed = 0usize;
    let mut seq = 0usize;
    for (template, item) in paths {
        let Some(ops) = item.as_object() else {
            continue;
        };
        for (method_lc, _) in ops {
            let method_uc = method_lc.to_ascii_uppercase();
            let Ok(method) = Method::from_bytes(method_uc.as_bytes()) else {
                continue;
            };
            if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method_uc.as_str()) {
                continue;
            }
            let Some((scoping, perm, sample)) = classify(&method_uc, template) else {
                bail!("{method_uc} {template} is not classified in sase-isolation: add it");
            };
            endpoints += 1;
            seq += 1;
            let fill = |ids: &BTreeMap<&'static str, String>| {
                let mut p = template.clone();
                for (k, v) in ids {
                    p = p.replace(k, v);
                }
                p
            };
            let query = |ids: &BTreeMap<&'static str, String>| match template.as_str() {
                "/api/audit" | "/api/admin-actions" => format!("?tenant={}", ids["{tenant_id}"]),
                "/api/tenants/{tenant_id}/audit/proof" => {
                    format!("?device={}&seq=1", ids["{device_id}"])
                }
                _ => String::new(),
            };
            let body = |ids: &BTreeMap<&'static str, String>, n: usize| -> Option<Value> {
                match (method_uc.as_str(), template.as_str()) {
                    ("POST", "/api/tenants/{tenant_id}/policy/drafts")
                    | ("PUT", "/api/tenants/{tenant_id}/policy/drafts/{draft_id}") => {
                        Some(json!({"policy": {"resources": []}, "note": "iso"}))
                    }
                    ("PUT", "/api/tenants/{tenant_id}/policy/source") => {
                        Some(json!({"template_id": "tpl_none"}))
                    }
                    ("PUT", "/api/policy-templates/{template_id}") => {
                        Some(json!({"name": format!("iso-{n}"), "policy": {}}))
                    }
                    ("POST", "/api/policy-templates") => {
                        Some(json!({"name": format!("iso-{n}"), "policy": {}}))
                    }
                    ("PUT", "/api/tenants/{tenant_id}/audit/retention") => {
                        Some(json!({"months": 18}))
                    }
                    // Valid remote-access bodies, so that lower roles meet the permission
                    // check, not the body parser.
                    ("PUT", "/api/tenants/{tenant_id}/ztna/settings") => {
                        Some(json!({"session_ttl_secs": 3600}))
                    }
                    ("PUT", "/api/tenants/{tenant_id}/ztna/sites/{site_id}") => Some(json!({
                        "pool": "100.96.0.0/24", "endpoint": "192.0.2.1:51820",
                        "edge_public_key": "YUjJBhJJSc1XDWciyNQ9L+vBT6afvbvdV7tYPQ+2Tw0="})),
                    ("PUT", "/api/tenants/{tenant_id}/ztna/users/{user_id}/groups") => {
                        Some(json!({"groups": []}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/ztna/users") => Some(json!({
                        "username": format!("iso-user-{n}"), "password": PASSWORD})),
                    ("PUT", "/api/ztna/devices/{device_id}/posture") => Some(json!({"posture": {
                        "os": "linux", "os_version": "6", "disk_encryption": true,
                        "screen_lock": true, "firewall": true, "client_version": "0.1.0"}})),
                    ("PUT", _) => Some(Value::String(POLICY_YAML.to_string())),
                    ("POST", "/api/login") => {
                        Some(json!({"username": "iso-a-admin", "password": "wrong"}))
                    }
                    ("POST", "/api/enroll") => Some(
                        json!({"claim_code": "AAAA-BBBB-CCCC-DDDD-EEEE", "csr_pem": "x", "name": "x"}),
                    ),
                    ("POST", "/api/tenants") => Some(json!({"name": format!("Iso tenant {n}")})),
                    ("POST", "/api/tenants/{tenant_id}/sites") => {
                        Some(json!({"name": format!("iso-site-{n}")}))
                    }
                    ("POST", "/api/tokens") => Some(json!({"name": "iso"})),
                    ("POST", "/api/admins") => Some(json!({
                        "username": format!("iso-new-{n}"), "password": PASSWORD,
                        "role": "customer_auditor", "tenant_id": ids["{tenant_id}"]})),
                    ("POST", "/api/me/mfa/confirm") => Some(json!({"code": "000000"})),
                    // Too short a new password: refused before the current one is checked (a
                    // wrong current password would count as a failed sign-in).
                    ("POST", "/api/me/password") => {
                        Some(json!({"current_password": "x", "new_password": "short"}))
                    }
                    // Valid bodies, so that lower roles meet the permission check, not the
                    // body parser.
                    ("POST", "/api/tenants/{tenant_id}/siem/sinks") => Some(json!({
                        "name": format!("iso-{n}"), "format": "json_lines",
                        "transport": "tcp", "address": "127.0.0.1:9"})),
                    ("POST", "/api/devices/{device_id}/decommission") => {
                        Some(json!({"reason": "isolation check"}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/policy/dry-run") => {
                        Some(json!({"policy": {"resources": []}}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/policy/rollouts") => Some(json!({
                        "policy": {"resources": []}, "canary": {"percent": 50}})),
                    ("POST", "/api/tenants/{tenant_id}/incidents") => {
                        Some(json!({"title": format!("iso {n}"), "severity": "low"}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/events") => {
                        Some(json!({"references": []}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/submissions") => {
                        Some(json!({"milestone": "early_warning"}))
                    }
                    ("POST", "/api/tenants/{tenant_id}/incidents/{incident_id}/close") => {
                        Some(json!({"note": "iso"}))
                    }
                    // A valid body, so that lower roles meet the permission check.
                    ("POST", "/api/updates/{update_id}/offer") => {
                        Some(json!({"devices": ["dev_iso"]}))
                    }
                    ("POST", _) => Some(json!({})),
                    _ => None,
                }
            };
            let target = format!("{}{}", fill(&a_ids), query(&a_ids));
            let label = format!("{method_uc} {template}");

            // (a) another tenant's admin token (a fresh one for sign-out, which ends it).
            let b_token = if template == "/api/logout" {
                c.token(&b.admin_session, None).await?
            } else {
                b.admin_token.clone()
            };
            let (status, text) = c
                .call(&method, &target, Some(&b_token), body(&a_ids, seq).as_ref())
                .await?;
            checks += 1;
            let leaked_marker = markers.iter().find(|m| text.contains(m.as_str()));
            let refused = matches!(status.as_u16(), 401 | 403 | 404 | 400 | 422);
            let leak = match scoping {
                Scoping::Tenant | Scoping::Device | Scoping::Client => {
                    !refused || leaked_marker.is_some()
                }
                Scoping::Public | Scoping::Own | Scoping::Filtered => leaked_marker.is_some(),
            };
            if leak {
                leaks += 1;
                println!(
                    "LEAK (other tenant) {label}: {status} {}",
                    leaked_marker.map_or("", |m| m.as_str())
                );
            }
            // Lists with an explicit tenant of another customer: nothing (200 with no rows).
            if scoping == Scoping::Filtered && method == Method::GET {
                let (_, text) = c
                    .call(&method, &fill(&a_ids), Some(&b.admin_token), None)
                    .await?;
                checks += 1;
                if let Some(m) = markers.iter().find(|m| text.contains(m.as_str())) {
                    leaks += 1;
                    println!("LEAK (other tenant, unfiltered list) {label}: {m}");
                }
            }

            // (b) lower credentials of the same tenant.
            if let Some(perm) = perm {
                let mut lower: Vec<(&str, &str)> = Vec::new();
                if READ_FOR_ALL.contains(&perm) {
                    lower.push(("token scoped to sites.write", &a_narrow));
                } else {
                    lower.push(("customer_auditor", &a.auditor_session));
                }
                if matches!(perm, "tenants.create" | "admins.manage") {
                    lower.push(("msp_engineer", &engineer));
                }
                if perm == "tenants.create" {
                    lower.push(("customer_admin", &a.admin_token));
                }
                for (who, bearer) in lower {
                    let (status, text) = c
                        .call(
                            &method,
                            &target,
                            Some(bearer),
                            body(&a_ids, seq + 1000).as_ref(),
                        )
                        .await?;
                    checks += 1;
                    if !matches!(status.as_u16(), 401 | 403 | 404) {
                        leaks += 1;
                        println!("LEAK (lower role: {who}) {label}: {status} {text}");
                    }
                }
            }

            // (c) the legitimate role succeeds.
            if sample {
                let (bearer, ids_ok): (&str, BTreeMap<&'static str, String>) = match perm {
                    Some("tenants.create") => (&owner, a_ids.clone()),
                    Some("admins.manage") if template.contains("{admin_id}") => {
                        (&a.admin_token, ids(&a, &a_temp))
                    }
                    _ => (&a.admin_token, a_ids.clone()),
                };
                let path = format!("{}{}", fill(&ids_ok), query(&ids_ok));
                let (status, text) = c
                    .call(
                        &method,
                        &path,
                        Some(bearer),
                        body(&ids_ok, seq + 2000).as_ref(),
                    )
                    .await?;
                let shows_own = match template.as_str() {
                    "/api/tenants" if method == Method::GET => text.contains(&a.tenant),
                    "/api/admins" if method == Method::GET => text.contains("iso-a-auditor"),
                    "/api/admin-actions" => text.contains(&a.tenant),
                    _ => true,
                };
                if status.is_success() && shows_own {
                    legit_ok += 1;
                } else {
                    legit_failed += 1;
                    println!("LEGITIMATE CALL FAILED {label} ({path}): {status} {text}");
                }
            }
        }
    }

    // Nothing B tried changed A: one policy version from set-up, one from the legitimate PUT.
    let versions = c
        .json_ok(
            Method::GET,
            &format!("/api/tenants/{}/policy/versions", a.tenant),
            &a.admin_token,
            None,
        )
        .await?;
    let n_versions = versions.as_array().map_or(0, Vec::len);
    if n_versions != 2 {
        leaks += 1;
        println!("LEAK: tenant A has {n_versions} policy versions, expected 2");
    }

    println!("isolation checks={checks} legitimate_ok={legit_ok} legitimate_failed={legit_failed}");
    println!("isolation endpoints={endpoints} leaks={leaks}");
    if leaks > 0 || legit_failed > 0 || legit_ok < 10 {
        std::process::exit(1);
    }
    Ok(())
}
