//! Hardening checks of the control plane (issue 11), against a real `sase-control` on SQLite
//! (or the database of `SASE_E2E_DATABASE_URL`): security headers, CSRF for cookie calls,
//! session revocation (password change, sign-out), TLS versions and suites (`openssl
//! s_client`), certificate reload without restart, brute force on one account (429 + audited
//! lockout, right password refused during the lock), password spraying from one address.
//!
//! Prints one `check <name> pass|fail <detail>` line per check (the format of
//! `tests/security/hardening.sh`) and exits non-zero when one failed.
//!
//! The sign-in checks run last: they lock 127.0.0.1, from where every request comes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use reqwest::{Method, StatusCode};
use sase_testkit::control::ControlPlane;
use sase_testkit::process::wait_for_log_line_from;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Directory with sase-control.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (created).
    #[arg(long)]
    work_dir: PathBuf,
}

#[derive(Default)]
struct Tally {
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("check {name} pass {detail}");
        } else {
            self.failed += 1;
            println!("check {name} fail {detail}");
        }
    }
}

/// Budget of failed sign-ins from one address for this run (the default is 30; smaller keeps
/// the spraying check short).
const ADDRESS_BUDGET: u32 = 12;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let db = std::env::var("SASE_E2E_DATABASE_URL").ok();
    let budget = ADDRESS_BUDGET.to_string();
    let cp = ControlPlane::start(
        &args.bin_dir,
        &args.work_dir,
        db.as_deref(),
        &[
            ("SASE_LOGIN_ADDRESS_FAILURES", budget.as_str()),
            ("SASE_TLS_RELOAD_SECS", "1"),
            ("SASE_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await?;
    let mut t = Tally::default();
    headers(&cp, &mut t).await?;
    csrf(&cp, &mut t).await?;
    sessions(&cp, &mut t).await?;
    tls_versions(&cp, &mut t)?;
    cert_reload(&cp, &args.work_dir, &mut t).await?;
    sighup_reload(&args.bin_dir, &args.work_dir.join("sighup"), &mut t).await?;
    // On PostgreSQL a second replica on the same database must see the same lock.
    let secrets_key = args
        .work_dir
        .join("control/secrets.key")
        .display()
        .to_string();
    let replica = match db.as_deref() {
        Some(url) => Some(
            ControlPlane::start(
                &args.bin_dir,
                &args.work_dir.join("replica-2"),
                Some(url),
                &[
                    ("SASE_LOGIN_ADDRESS_FAILURES", budget.as_str()),
                    ("SASE_METRICS_LISTEN", "127.0.0.1:0"),
                    // The replicas share the database, so also the key its secrets are sealed with.
                    ("SASE_SECRETS_KEY_FILE", secrets_key.as_str()),
                ],
            )
            .await?,
        ),
        None => None,
    };
    brute_force(&cp, replica.as_ref(), &mut t).await?;
    spraying(&cp, &mut t).await?;
    if t.failed > 0 {
        println!("control-plane hardening: {} check(s) failed", t.failed);
        std::process::exit(1);
    }
    Ok(())
}

async fn headers(cp: &ControlPlane, t: &mut Tally) -> Result<()> {
    let root = cp.api.get(format!("{}/", cp.cp)).send().await?;
    let api = cp
        .api
        .get(format!("{}/api/tenants", cp.cp))
        .bearer_auth(&cp.session)
        .send()
        .await?;
    for (what, resp) in [("root", root), ("api", api)] {
        let h = resp.headers();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let csp = get("content-security-policy");
        let wanted_csp = [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ];
        let missing: Vec<&str> = wanted_csp
            .iter()
            .copied()
            .filter(|p| !csp.contains(p))
            .collect();
        let ok = missing.is_empty()
            && get("strict-transport-security").starts_with("max-age=")
            && get("x-content-type-options") == "nosniff"
            && get("referrer-policy") == "no-referrer"
            && get("x-frame-options") == "DENY"
            && get("cache-control") == "no-store"
            && !get("permissions-policy").is_empty();
        t.check(
            &format!("cp-security-headers-{what}"),
            ok,
            format!(
                "status={} csp={csp:?} hsts={:?} missing={missing:?}",
                resp.status(),
                get("strict-transport-security")
            ),
        );
    }
    Ok(())
}

/// Signs in with a password; (session, csrf token) or the refusal's status and body.
async fn sign_in(
    cp: &ControlPlane,
    username: &str,
    password: &str,
) -> Result<std::result::Result<(String, String), (StatusCode, Value, Option<String>)>> {
    let resp = cp
        .api
        .post(format!("{}/api/login", cp.cp))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK {
        return Ok(Err((status, body, retry)));
    }
    let field = |n: &str| {
        body[n]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {n} in {body}"))
    };
    Ok(Ok((field("session")?, field("csrf_token")?)))
}

async fn admin_actions(cp: &ControlPlane, action: &str) -> Result<Vec<Value>> {
    let (_, trail) = cp
        .api_json(Method::GET, "/api/admin-actions?limit=1000", None)
        .await?;
    Ok(trail["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["action"] == action)
        .collect())
}

async fn csrf(cp: &ControlPlane, t: &mut Tally) -> Result<()> {
    let (session, token) = sign_in(cp, "admin", "e2e-admin-password")
        .await?
        .map_err(|e| anyhow!("admin sign-in refused: {e:?}"))?;
    let host = cp.cp.trim_start_matches("https://").to_string();
    let post = |csrf: Option<&str>, name: &str| {
        let mut req = cp
            .api
            .post(format!("{}/api/tenants", cp.cp))
            .header("cookie", format!("sase_session={session}"))
            .header("origin", format!("https://{host}"))
            .json(&json!({"name": name}));
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.send()
    };
    let refused = post(None, "csrf-none").await?;
    let status = refused.status();
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    t.check(
        "cp-csrf-cookie-post-without-token-refused",
        status == StatusCode::FORBIDDEN && body["error"] == "csrf_refused",
        format!("status={status} error={}", body["error"]),
    );
    let audited = admin_actions(cp, "admin.csrf_refused").await?;
    t.check(
        "cp-csrf-refusal-audited",
        !audited.is_empty(),
        format!("admin.csrf_refused records={}", audited.len()),
    );
    let ok = post(Some(&token), "csrf-with-token").await?.status();
    t.check(
        "cp-csrf-cookie-post-with-token-ok",
        ok == StatusCode::CREATED,
        format!("status={ok}"),
    );
    let bearer = cp
        .api
        .post(format!("{}/api/tenants", cp.cp))
        .bearer_auth(&session)
        .json(&json!({"name": "csrf-bearer"}))
        .send()
        .await?
        .status();
    t.check(
        "cp-csrf-bearer-post-without-token-ok",
        bearer == StatusCode::CREATED,
        format!("status={bearer}"),
    );
    Ok(())
}

async fn me(cp: &ControlPlane, session: &str) -> Result<StatusCode> {
    Ok(cp
        .api
        .get(format!("{}/api/me", cp.cp))
        .bearer_auth(session)
        .send()
        .await?
        .status())
}

async fn create_admin(cp: &ControlPlane, username: &str, password: &str) -> Result<()> {
    let (status, body) = cp
        .api_json(
            Method::POST,
            "/api/admins",
            Some(json!({"username": username, "password": password, "role": "msp_engineer"})),
        )
        .await?;
    if status != StatusCode::CREATED {
        return Err(anyhow!("creating admin {username}: {status} {body}"));
    }
    Ok(())
}

async fn sessions(cp: &ControlPlane, t: &mut Tally) -> Result<()> {
    let old_password = "first password 12345";
    create_admin(cp, "pwchange", old_password).await?;
    let signed = |p: &'static str| sign_in(cp, "pwchange", p);
    let (a, _) = signed(old_password)
        .await?
        .map_err(|e| anyhow!("sign-in refused: {e:?}"))?;
    let (b, _) = signed(old_password)
        .await?
        .map_err(|e| anyhow!("sign-in refused: {e:?}"))?;
    let before = me(cp, &b).await?;
    let changed = cp
        .api
        .post(format!("{}/api/me/password", cp.cp))
        .bearer_auth(&a)
        .json(&json!({"current_password": old_password, "new_password": "second password 67890"}))
        .send()
        .await?
        .status();
    let (after_other, after_own) = (me(cp, &b).await?, me(cp, &a).await?);
    t.check(
        "cp-session-revoked-after-password-change",
        before == StatusCode::OK
            && changed == StatusCode::NO_CONTENT
            && after_other == StatusCode::UNAUTHORIZED
            && after_own == StatusCode::OK,
        format!(
            "other session before={before} change={changed} other after={after_other} own after={after_own}"
        ),
    );
    let out = cp
        .api
        .post(format!("{}/api/logout", cp.cp))
        .bearer_auth(&a)
        .send()
        .await?
        .status();
    let after = me(cp, &a).await?;
    t.check(
        "cp-session-revoked-by-sign-out",
        out == StatusCode::NO_CONTENT && after == StatusCode::UNAUTHORIZED,
        format!("logout={out} then={after}"),
    );
    Ok(())
}

/// `openssl s_client` against the control plane; (handshake completed, protocol, cipher).
fn s_client(addr: &str, extra: &[&str]) -> Result<(bool, String, String)> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running openssl s_client")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let new_line = text
        .lines()
        .find(|l| l.starts_with("New, "))
        .unwrap_or("")
        .to_string();
    // "New, TLSv1.3, Cipher is …" is printed right after the handshake; the session block's
    // "Protocol :" only once a TLS 1.3 ticket arrived, which s_client may not wait for.
    let protocol = new_line
        .split(", ")
        .nth(1)
        .filter(|p| p.starts_with("TLS"))
        .map_or_else(|| field("Protocol  :"), str::to_string);
    let cipher = field("Cipher    :");
    let done = out.status.success() && new_line.starts_with("New, TLS") && !cipher.contains("0000");
    Ok((
        done,
        protocol,
        format!("{cipher} {new_line}").trim().to_string(),
    ))
}

fn tls_versions(cp: &ControlPlane, t: &mut Tally) -> Result<()> {
    let addr = cp.cp.trim_start_matches("https://").to_string();
    // The client is told to allow the old protocols (security level 0), so a refusal is the
    // server's.
    for (name, flags) in [
        (
            "cp-tls1.0-refused",
            vec!["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        ),
        (
            "cp-tls1.1-refused",
            vec!["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        ),
        (
            "cp-tls1.2-weak-suite-refused",
            vec!["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"],
        ),
        (
            "cp-tls1.2-cbc-ecdhe-refused",
            vec![
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0",
            ],
        ),
    ] {
        let (done, protocol, cipher) = s_client(&addr, &flags)?;
        t.check(
            name,
            !done,
            format!("handshake={done} protocol={protocol:?} {cipher}"),
        );
    }
    let (done, protocol, cipher) = s_client(&addr, &["-tls1_3"])?;
    t.check(
        "cp-tls1.3-accepted",
        done && protocol == "TLSv1.3",
        format!("protocol={protocol:?} {cipher}"),
    );
    let (done, protocol, cipher) = s_client(&addr, &["-tls1_2"])?;
    t.check(
        "cp-tls1.2-aead-accepted",
        done && protocol == "TLSv1.2" && (cipher.contains("GCM") || cipher.contains("CHACHA")),
        format!("protocol={protocol:?} {cipher}"),
    );
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A TLS connection to the control plane trusting `ca_pem`, with the server certificate it
/// was given and an HTTP/1.1 sender on it.
async fn connect(addr: &str, ca_pem: &[u8]) -> Result<(Vec<u8>, Sender)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| anyhow!("no server certificate"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok((cert, sender))
}

async fn healthz(sender: &mut Sender, addr: &str) -> Result<u16> {
    sender.ready().await?;
    let req = http::Request::get("/healthz")
        .header("host", addr)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await?;
    Ok(status)
}

/// A new server certificate for 127.0.0.1 / localhost under the control plane's local CA,
/// with the given serial; (cert PEM, key PEM, cert DER).
fn new_server_cert(tls_dir: &Path, serial: u64) -> Result<(String, String, Vec<u8>)> {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls_dir.join("ca.key"))?)?;
    let ca_params = rcgen::CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(
        tls_dir.join("ca.pem"),
    )?)?;
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_be_bytes().to_vec()));
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok((
        format!(
            "{}{}",
            cert.pem(),
            std::fs::read_to_string(tls_dir.join("ca.pem"))?
        ),
        key.serialize_pem(),
        cert.der().to_vec(),
    ))
}

/// Writes a file by rename, as an operator's tooling should.
fn replace(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

async fn cert_reload(cp: &ControlPlane, work: &Path, t: &mut Tally) -> Result<()> {
    let tls_dir = work.join("control/tls");
    let log = work.join("control.log");
    let addr = cp.cp.trim_start_matches("https://").to_string();
    let ca_pem = std::fs::read(tls_dir.join("ca.pem"))?;
    let (old_cert, mut old) = connect(&addr, &ca_pem).await?;
    let first = healthz(&mut old, &addr).await?;

    let serial = 0x5A5E_0000_0000_0001_u64 | u64::from(std::process::id());
    let (cert_pem, key_pem, der) = new_server_cert(&tls_dir, serial)?;
    let offset = log_len(&log);
    replace(&tls_dir.join("server.key"), &key_pem)?;
    replace(&tls_dir.join("server.pem"), &cert_pem)?;
    let started = Instant::now();
    let reloaded = tokio::task::block_in_place(|| {
        wait_for_log_line_from(
            &log,
            offset,
            "TLS certificate reloaded",
            Duration::from_secs(15),
        )
    });
    let (new_cert, mut new) = connect(&addr, &ca_pem).await?;
    let new_status = healthz(&mut new, &addr).await?;
    t.check(
        "cp-cert-reload-new-connection-sees-new-cert",
        reloaded.is_ok() && new_cert == der && new_status == 200,
        format!(
            "serial={serial:x} reloaded_after_ms={} new_cert_matches={} status={new_status}",
            started.elapsed().as_millis(),
            new_cert == der
        ),
    );
    let again = healthz(&mut old, &addr).await;
    t.check(
        "cp-cert-reload-old-connection-unaffected",
        first == 200 && matches!(again, Ok(200)) && old_cert != der,
        format!(
            "before={first} after={again:?} old_cert_kept={}",
            old_cert != der
        ),
    );

    // A broken certificate file: logged, the last good certificate stays in use.
    let offset = log_len(&log);
    replace(
        &tls_dir.join("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )?;
    let refused = tokio::task::block_in_place(|| {
        wait_for_log_line_from(
            &log,
            offset,
            "TLS certificate reload refused",
            Duration::from_secs(15),
        )
    });
    let (kept, mut conn) = connect(&addr, &ca_pem).await?;
    let status = healthz(&mut conn, &addr).await?;
    t.check(
        "cp-cert-reload-broken-file-keeps-old-cert",
        refused.is_ok() && kept == der && status == 200,
        format!(
            "refusal_logged={} cert_kept={} status={status}",
            refused.is_ok(),
            kept == der
        ),
    );
    replace(&tls_dir.join("server.pem"), &cert_pem)?;
    Ok(())
}

/// Reload on SIGHUP: a control plane that would look at its files only once an hour switches
/// certificates as soon as it gets the signal.
async fn sighup_reload(bins: &Path, work: &Path, t: &mut Tally) -> Result<()> {
    std::fs::create_dir_all(work)?;
    let cp = ControlPlane::start(
        bins,
        work,
        None,
        &[
            ("SASE_TLS_RELOAD_SECS", "3600"),
            ("SASE_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await?;
    let tls_dir = work.join("control/tls");
    let log = work.join("control.log");
    let addr = cp.cp.trim_start_matches("https://").to_string();
    let ca_pem = std::fs::read(tls_dir.join("ca.pem"))?;
    let serial = 0x5167_0000_0000_0000_u64 | u64::from(std::process::id());
    let (cert_pem, key_pem, der) = new_server_cert(&tls_dir, serial)?;
    let offset = log_len(&log);
    replace(&tls_dir.join("server.key"), &key_pem)?;
    replace(&tls_dir.join("server.pem"), &cert_pem)?;
    let pid = cp
        .child
        .id()
        .ok_or_else(|| anyhow!("sase-control has no pid"))?;
    let started = Instant::now();
    let sent = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?
        .success();
    let reloaded = tokio::task::block_in_place(|| {
        wait_for_log_line_from(
            &log,
            offset,
            "TLS certificate reloaded",
            Duration::from_secs(10),
        )
    });
    let (seen, mut conn) = connect(&addr, &ca_pem).await?;
    let status = healthz(&mut conn, &addr).await?;
    t.check(
        "cp-cert-reload-on-sighup",
        sent && reloaded.is_ok() && seen == der && status == 200,
        format!(
            "poll interval 3600 s, reloaded after {} ms, new cert seen={} status={status}",
            started.elapsed().as_millis(),
            seen == der
        ),
    );
    Ok(())
}

async fn brute_force(
    cp: &ControlPlane,
    replica: Option<&ControlPlane>,
    t: &mut Tally,
) -> Result<()> {
    let password = "victim password 12345";
    create_admin(cp, "victim", password).await?;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(match sign_in(cp, "victim", "guess").await? {
            Ok(_) => StatusCode::OK,
            Err((status, _, _)) => status,
        });
    }
    let sixth = sign_in(cp, "victim", "guess again").await?;
    let (status, body, retry) = match &sixth {
        Ok(_) => (StatusCode::OK, Value::Null, None),
        Err(e) => e.clone(),
    };
    t.check(
        "cp-brute-force-429-after-threshold",
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED)
            && status == StatusCode::TOO_MANY_REQUESTS
            && body["error"] == "account_locked"
            && retry
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
                .is_some_and(|r| r > 0),
        format!(
            "first five={statuses:?} sixth={status} error={} retry-after={retry:?}",
            body["error"]
        ),
    );
    let right = sign_in(cp, "victim", password).await?;
    let (status, body) = match &right {
        Ok(_) => (StatusCode::OK, Value::Null),
        Err((s, b, _)) => (*s, b.clone()),
    };
    t.check(
        "cp-lockout-refuses-right-password",
        status == StatusCode::TOO_MANY_REQUESTS && body["error"] == "account_locked",
        format!("status={status} error={}", body["error"]),
    );
    if let Some(other) = replica {
        let (status, body) = match sign_in(other, "victim", password).await? {
            Ok(_) => (StatusCode::OK, Value::Null),
            Err((s, b, _)) => (s, b),
        };
        t.check(
            "cp-lockout-shared-by-replicas",
            status == StatusCode::TOO_MANY_REQUESTS && body["error"] == "account_locked",
            format!(
                "second replica on the same database: status={status} error={}",
                body["error"]
            ),
        );
    }
    let lockouts = admin_actions(cp, "admin.lockout").await?;
    let victim = lockouts
        .iter()
        .find(|a| a["actor"] == "victim" && a["diff"]["after"]["reason"] == "account_locked");
    let throttled = admin_actions(cp, "admin.sign_in_throttled").await?;
    t.check(
        "cp-lockout-audited",
        victim.is_some() && throttled.iter().filter(|a| a["actor"] == "victim").count() >= 2,
        format!(
            "lockout={} throttled_attempts={}",
            victim.map_or_else(|| "none".to_string(), |a| a["diff"]["after"].to_string()),
            throttled.len()
        ),
    );
    Ok(())
}

async fn spraying(cp: &ControlPlane, t: &mut Tally) -> Result<()> {
    // Five failures of the brute force already count against 127.0.0.1.
    let mut refused_at = None;
    let mut last = (StatusCode::OK, Value::Null);
    for i in 0..ADDRESS_BUDGET {
        match sign_in(cp, &format!("spray-{i}"), "Winter2026!").await? {
            Ok(_) => return Err(anyhow!("a sprayed sign-in succeeded")),
            Err((status, body, _)) => {
                if status == StatusCode::TOO_MANY_REQUESTS {
                    refused_at = Some(i);
                    last = (status, body);
                    break;
                }
                last = (status, body);
            }
        }
    }
    // Even the real admin, with the right password, is now refused from this address.
    let admin = sign_in(cp, "admin", "e2e-admin-password").await?;
    let admin_status = match &admin {
        Ok(_) => StatusCode::OK,
        Err((s, b, _)) => {
            if b["error"] != "login_throttled" {
                StatusCode::IM_A_TEAPOT
            } else {
                *s
            }
        }
    };
    let lockouts = admin_actions(cp, "admin.lockout").await?;
    let address = lockouts.iter().any(|a| {
        a["target"] == "address:127.0.0.1" && a["diff"]["after"]["reason"] == "login_throttled"
    });
    t.check(
        "cp-spraying-from-one-address-throttled",
        refused_at == Some(ADDRESS_BUDGET - 5)
            && last.1["error"] == "login_throttled"
            && admin_status == StatusCode::TOO_MANY_REQUESTS
            && address,
        format!(
            "refused after {refused_at:?} more accounts (budget {ADDRESS_BUDGET}, 5 used) error={} admin={admin_status} address_lockout_audited={address}",
            last.1["error"]
        ),
    );
    Ok(())
}
