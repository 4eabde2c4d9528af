//! Secrets at rest, signing-key rotation and backup/restore, against the real binaries
//! (control plane + enrolled edge, `tests/support/src/stack.rs`).
//!
//! * `hardening` — the `tests/security/hardening.d/20-secrets` part: with a supplied key, an
//!   enrolled edge, an admin with TOTP and a tenant CA, the raw database files (and a
//!   `pg_dump` on PostgreSQL) hold no PEM marker, no TOTP seed (base32 or raw), no signing-key
//!   seed and no CA key body; a legacy plaintext seed is sealed at the next start; a wrong or
//!   missing key is refused with a clear message; the key still opens everything (TOTP sign-in,
//!   enrolment with the tenant CA); key file 0600, data dir 0700; without a key a 0600 key is
//!   generated in the data dir with a warning. Prints `check <name> pass|fail …` lines.
//! * `rotation` — the policy signing key rotated with overlap: the edge keeps applying
//!   policy through announce and activate, retires the old key, refuses a bundle signed by it,
//!   and a newly enrolled edge pins the new key. Ends with `key_rotation passed=<n> failed=<k>`.
//! * `backup-restore` — audit events, `sase-control backup` while running, stop, restore onto
//!   a fresh data dir, start: the edge reconnects, stays enrolled, gets policy pushes, its new
//!   events are stored and the exported trail verifies with `sase-audit verify`. Ends with
//!   `backup_restore passed=<n> failed=<k>`.
//!
//! The sealed-value format is opened here independently of `sase-control` (AES-256-GCM, ring),
//! as documented in docs/OPERATIONS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sase_testkit::process::{spawn_logged, ManagedChild};
use sase_testkit::stack::{start_demo_app, Stack, READY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

#[derive(Parser)]
struct Args {
    /// Directory with sase-control, sase-edge, sase-demo-app and sase-audit.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
    /// PostgreSQL URL instead of SQLite (env SASE_E2E_DATABASE_URL).
    #[arg(long, env = "SASE_E2E_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand, Clone, Copy)]
enum Mode {
    /// Evidence for tests/security/hardening.d/20-secrets (`check` lines).
    Hardening,
    /// Signing-key rotation end to end.
    Rotation,
    /// Backup and restore onto a fresh data dir.
    BackupRestore,
}

/// Pass/fail lines in either format.
struct Report {
    hardening: bool,
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        match (self.hardening, ok) {
            (true, true) => println!("check {name} pass {detail}"),
            (true, false) => println!("check {name} fail {detail}"),
            (false, true) => println!("ok   {name}: {detail}"),
            (false, false) => println!("FAIL {name}: {detail}"),
        }
    }
}

fn policy(upstream: &str, marker: &str) -> Value {
    json!({"resources": [{"name": "app", "upstream": upstream, "routes": [
        {"id": "health", "methods": ["GET"], "path": "/health", "public": true},
        {"id": marker, "methods": ["GET"], "path": format!("/{marker}"), "public": true}
    ]}]})
}

// ---- the sealed-value format, opened independently ------------------------------------------

fn key_id(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"sase-secrets-key-id\0");
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

fn open_sealed(key: &[u8; 32], purpose: &str, stored: &str) -> Result<Vec<u8>> {
    let rest = stored
        .strip_prefix("sase-enc:v1:")
        .ok_or_else(|| anyhow!("{purpose}: not sealed: {:.20}…", stored))?;
    let (kid, body) = rest
        .split_once(':')
        .ok_or_else(|| anyhow!("{purpose}: no key id"))?;
    if kid != key_id(key) {
        bail!(
            "{purpose}: sealed with key id {kid}, ours is {}",
            key_id(key)
        );
    }
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body)?;
    let mut ct = raw.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| anyhow!("nonce"))?;
    let aes = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow!("key"))?);
    let aad = format!("sase-enc:v1:{kid}:{purpose}");
    let plain = aes
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut ct)
        .map_err(|_| anyhow!("{purpose}: does not open"))?;
    Ok(plain.to_vec())
}

fn write_key_file(path: &Path) -> Result<[u8; 32]> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(
        f,
        "{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )?;
    Ok(key)
}

fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

// ---- TOTP (RFC 6238, SHA-1, 6 digits, 30 s) ---------------------------------------------------

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())?;
        bits = (bits << 5) | u32::try_from(v).ok()?;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn totp(seed: &[u8], step: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, seed);
    let mac = ring::hmac::sign(&key, &step.to_be_bytes());
    let h = mac.as_ref();
    let off = usize::from(h[19] & 0x0f);
    let bin = (u32::from(h[off]) & 0x7f) << 24
        | u32::from(h[off + 1]) << 16
        | u32::from(h[off + 2]) << 8
        | u32::from(h[off + 3]);
    format!("{:06}", bin % 1_000_000)
}

fn now_step() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 30)
}

// ---- helpers -----------------------------------------------------------------------------------

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

async fn db(url: &str) -> Result<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("opening {url}"))
}

async fn setting(pool: &sqlx::AnyPool, key: &str) -> Result<String> {
    let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("value")?)
}

/// Starts `sase-control serve` on a data dir; waits for "listening" (or returns the exit).
fn start_control(
    bins: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
    listen: &str,
    key_file: Option<&Path>,
    log: &Path,
) -> Result<ManagedChild> {
    let mut cmd = Command::new(bins.join("sase-control"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .env("SASE_ADMIN_PASSWORD", "e2e-admin-password")
        .env("RUST_LOG", "info,sqlx=warn")
        .env_remove("SASE_SECRETS_KEY")
        .env_remove("SASE_SECRETS_KEY_FILE");
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    if let Some(k) = key_file {
        cmd.arg("--secrets-key-file").arg(k);
    }
    spawn_logged(&mut cmd, "sase-control", log)
}

/// Waits for a process to exit; its status and the log text.
fn wait_exit(
    child: &mut ManagedChild,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

async fn login(
    stack: &Stack,
    user: &str,
    password: &str,
    totp: Option<&str>,
) -> Result<(u16, Value)> {
    let resp = stack
        .api
        .post(format!("{}/api/login", stack.cp))
        .json(&json!({"username": user, "password": password, "totp": totp}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

async fn call(
    stack: &Stack,
    bearer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = stack
        .api
        .request(method, format!("{}{path}", stack.cp))
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Enrols one more edge on the stack's first site; returns its data dir.
async fn enrol_another(stack: &Stack, bins: &Path, name: &str) -> Result<PathBuf> {
    let (_, sites) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/sites", stack.tenant_id),
            None,
        )
        .await?;
    let site = sites
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["id"].as_str())
        .ok_or_else(|| anyhow!("no site: {sites}"))?
        .to_string();
    let (_, claim) = stack
        .api_json(
            reqwest::Method::POST,
            &format!("/api/sites/{site}/claim-codes"),
            Some(json!({"ttl_minutes": 10})),
        )
        .await?;
    let code = claim["code"]
        .as_str()
        .ok_or_else(|| anyhow!("claim: {claim}"))?;
    let dir = stack.work.join(name);
    let out = Command::new(bins.join("sase-edge"))
        .args([
            "enroll",
            "--control-plane",
            &stack.cp,
            "--claim",
            code,
            "--name",
            name,
        ])
        .arg("--ca-cert")
        .arg(stack.work.join("control/tls/ca.pem"))
        .arg("--data-dir")
        .arg(&dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "enrolment of {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dir)
}

fn stack_port(stack: &Stack) -> Result<String> {
    stack
        .cp
        .rsplit(':')
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no port in {}", stack.cp))
}

// ---- hardening -----------------------------------------------------------------------------

async fn hardening(args: &Args, r: &mut Report) -> Result<()> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let key_file = work.join("operator-secrets.key");
    let key = write_key_file(&key_file)?;
    std::env::set_var("SASE_SECRETS_KEY_FILE", &key_file);
    let mut stack = Stack::start(
        bins,
        work,
        args.database_url.as_deref(),
        &policy("http://127.0.0.1:1", "one"),
        "127.0.0.1:0",
    )
    .await?;
    std::env::remove_var("SASE_SECRETS_KEY_FILE");
    let data_dir = work.join("control");
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("control.db").display()));

    // An admin with TOTP.
    let (status, _) = stack
        .api_json(
            reqwest::Method::POST,
            "/api/admins",
            Some(json!({"username": "mfa-admin", "password": "mfa-admin-password", "role": "msp_engineer"})),
        )
        .await?;
    if status.as_u16() != 201 && status.as_u16() != 200 {
        bail!("creating mfa-admin: {status}");
    }
    let (_, session) = login(&stack, "mfa-admin", "mfa-admin-password", None).await?;
    let bearer = session["session"]
        .as_str()
        .ok_or_else(|| anyhow!("login: {session}"))?
        .to_string();
    let (_, enrolment) = call(&stack, &bearer, reqwest::Method::POST, "/api/me/mfa", None).await?;
    let seed_b32 = enrolment["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("mfa: {enrolment}"))?
        .to_string();
    let seed = base32_decode(&seed_b32).ok_or_else(|| anyhow!("seed not base32"))?;
    let step = now_step();
    let (status, body) = call(
        &stack,
        &bearer,
        reqwest::Method::POST,
        "/api/me/mfa/confirm",
        Some(json!({"code": totp(&seed, step)})),
    )
    .await?;
    if !(200..300).contains(&status) {
        bail!("confirming MFA: {status} {body}");
    }
    // A second tenant with its CA.
    let (_, tenant) = stack
        .api_json(
            reqwest::Method::POST,
            "/api/tenants",
            Some(json!({"name": "Secrets Co"})),
        )
        .await?;
    let second_tenant = tenant["id"]
        .as_str()
        .ok_or_else(|| anyhow!("tenant: {tenant}"))?
        .to_string();

    // The plaintexts to look for, opened with the operator's key.
    let pool = db(&db_url).await?;
    let signing_seed_b64 = String::from_utf8(open_sealed(
        &key,
        "settings:policy_signing_key",
        &setting(&pool, "policy_signing_key").await?,
    )?)?;
    let signing_seed = base64::engine::general_purpose::STANDARD.decode(signing_seed_b64.trim())?;
    let row = sqlx::query("SELECT ca_key_pem FROM tenants WHERE id = $1")
        .bind(&second_tenant)
        .fetch_one(&pool)
        .await?;
    let ca_key_sealed: String = row.try_get("ca_key_pem")?;
    let ca_key_pem = String::from_utf8(open_sealed(
        &key,
        &format!("tenants.ca_key_pem:{second_tenant}"),
        &ca_key_sealed,
    )?)?;
    let ca_key_body = ca_key_pem
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .unwrap_or_default()
        .to_string();
    let sealed_rows: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM tenants WHERE ca_key_pem LIKE 'sase-enc:v1:%'")
            .fetch_one(&pool)
            .await?
            .try_get("n")?;
    let tenants: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
        .fetch_one(&pool)
        .await?
        .try_get("n")?;
    r.check(
        "secrets-tenant-ca-keys-sealed",
        sealed_rows == tenants && tenants >= 2,
        format!(
            "{sealed_rows}/{tenants} tenant CA keys sealed (sase-enc:v1:{})",
            key_id(&key)
        ),
    );
    pool.close().await;

    // Stop the control plane and read the raw database.
    if let Some(mut c) = stack.control.take() {
        c.terminate()?;
    }
    let needles: Vec<(&str, Vec<u8>)> = vec![
        // Any private key in PEM (`-----BEGIN PRIVATE KEY-----`, `… EC PRIVATE KEY-----`);
        // certificates are public and stay PEM.
        ("private-key-pem-marker", b"PRIVATE KEY-----".to_vec()),
        ("totp-seed-base32", seed_b32.as_bytes().to_vec()),
        ("totp-seed-raw", seed.clone()),
        ("signing-seed-raw", signing_seed.clone()),
        (
            "signing-seed-base64",
            signing_seed_b64.trim().as_bytes().to_vec(),
        ),
        ("tenant-ca-key-body", ca_key_body.as_bytes().to_vec()),
    ];
    let mut scanned = Vec::new();
    if args.database_url.is_none() {
        for name in ["control.db", "control.db-wal", "control.db-shm"] {
            let p = data_dir.join(name);
            if p.exists() {
                scanned.push((name.to_string(), std::fs::read(&p)?));
            }
        }
    } else {
        let out = Command::new("pg_dump")
            .arg("--dbname")
            .arg(&db_url)
            .output()
            .context("running pg_dump")?;
        if !out.status.success() {
            bail!("pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        }
        scanned.push(("pg_dump".to_string(), out.stdout));
    }
    let total: usize = scanned.iter().map(|(_, b)| b.len()).sum();
    for (what, needle) in &needles {
        let found: Vec<&str> = scanned
            .iter()
            .filter(|(_, bytes)| contains(bytes, needle))
            .map(|(n, _)| n.as_str())
            .collect();
        r.check(
            &format!("secrets-db-no-{what}"),
            found.is_empty(),
            if found.is_empty() {
                format!(
                    "not in {total} bytes of {}",
                    scanned
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!("found in {}", found.join(", "))
            },
        );
    }
    // The sanity of the scan itself: the public half of the CA is there in clear.
    let ca_cert_there = scanned.iter().any(|(_, b)| contains(b, b"CERTIFICATE"));
    r.check(
        "secrets-db-scan-sees-public-certs",
        ca_cert_there,
        "certificates (public) are found by the same scan",
    );

    // A legacy plaintext TOTP seed (as an older version stored it) is sealed at the next start.
    let pool = db(&db_url).await?;
    sqlx::query("UPDATE admins SET totp_secret = $1 WHERE username = 'mfa-admin'")
        .bind(&seed_b32)
        .execute(&pool)
        .await?;
    pool.close().await;

    // Wrong key: refused, clearly, before serving.
    let wrong = work.join("wrong.key");
    write_key_file(&wrong)?;
    let log = work.join("control-wrong.log");
    let mut c = start_control(
        bins,
        &data_dir,
        args.database_url.as_deref(),
        "127.0.0.1:0",
        Some(&wrong),
        &log,
    )?;
    let status = wait_exit(&mut c, READY)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    r.check(
        "secrets-wrong-key-refused",
        status.is_some_and(|s| !s.success())
            && text.contains("does not match the database")
            && !text.contains("listening on https"),
        text.lines()
            .find(|l| l.contains("does not match"))
            .unwrap_or("no message")
            .trim(),
    );
    // No key at all (none given, none in the data dir): refused, no key generated.
    let log = work.join("control-nokey.log");
    let mut c = start_control(
        bins,
        &data_dir,
        args.database_url.as_deref(),
        "127.0.0.1:0",
        None,
        &log,
    )?;
    let status = wait_exit(&mut c, READY)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    r.check(
        "secrets-missing-key-refused",
        status.is_some_and(|s| !s.success())
            && text.contains("no secrets key was given")
            && !data_dir.join("secrets.key").exists(),
        text.lines()
            .find(|l| l.contains("no secrets key"))
            .unwrap_or("no message")
            .trim(),
    );

    // The right key: starts, seals the legacy seed, TOTP sign-in and enrolment still work.
    let port = stack_port(&stack)?;
    let log = work.join("control-again.log");
    let mut c = start_control(
        bins,
        &data_dir,
        args.database_url.as_deref(),
        &format!("127.0.0.1:{port}"),
        Some(&key_file),
        &log,
    )?;
    c.wait_for_log_line("sase-control listening on https://", READY)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    stack.control = Some(c);
    let pool = db(&db_url).await?;
    let stored: String = sqlx::query("SELECT totp_secret FROM admins WHERE username = 'mfa-admin'")
        .fetch_one(&pool)
        .await?
        .try_get("totp_secret")?;
    pool.close().await;
    r.check(
        "secrets-plaintext-migrated",
        stored.starts_with("sase-enc:v1:")
            && (text.contains("\"migrated\":1") || text.contains("migrated=1")),
        format!("legacy TOTP seed sealed at start ({:.30}…)", stored),
    );
    let (status, _) = login(
        &stack,
        "mfa-admin",
        "mfa-admin-password",
        Some(&totp(&seed, step + 1)),
    )
    .await?;
    r.check(
        "secrets-totp-sign-in-after-restart",
        status == 200,
        format!("sign-in with TOTP: {status}"),
    );
    let enrolled = enrol_another(&stack, bins, "edge2").await;
    r.check(
        "secrets-enrolment-uses-sealed-ca",
        enrolled.is_ok(),
        match &enrolled {
            Ok(_) => "a device enrolled with the sealed tenant CA key".to_string(),
            Err(e) => format!("{e:#}"),
        },
    );
    // Modes.
    let m = mode_of(&key_file)?;
    r.check("secrets-key-file-0600", m == 0o600, format!("{m:o}"));
    let m = mode_of(&data_dir)?;
    r.check("secrets-data-dir-0700", m == 0o700, format!("{m:o}"));
    drop(stack);

    // Zero set-up default: a key generated in the data dir, 0600, with a warning.
    let dev_dir = work.join("dev-control");
    let log = work.join("control-dev.log");
    // (Always SQLite: the default set-up.)
    let mut c = start_control(bins, &dev_dir, None, "127.0.0.1:0", None, &log)?;
    c.wait_for_log_line("sase-control listening on https://", READY)?;
    c.terminate()?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let generated = dev_dir.join("secrets.key");
    let m = mode_of(&generated).unwrap_or(0);
    r.check(
        "secrets-default-key-generated-0600",
        m == 0o600 && mode_of(&dev_dir)? == 0o700,
        format!("{} mode {m:o}", generated.display()),
    );
    r.check(
        "secrets-default-key-warns",
        text.contains("supply it separately"),
        "start-up warns that production should supply the key separately",
    );
    Ok(())
}

// ---- rotation --------------------------------------------------------------------------------

fn trusted_keys(edge_dir: &Path) -> Vec<String> {
    std::fs::read(edge_dir.join("signing-keys.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["keys"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

async fn wait_for(mut probe: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe()
}

async fn rotation(args: &Args, r: &mut Report) -> Result<()> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let key_file = work.join("operator-secrets.key");
    let key = write_key_file(&key_file)?;
    std::env::set_var("SASE_SECRETS_KEY_FILE", &key_file);
    let (_app, upstream) = start_demo_app(bins, work)?;
    let mut stack = Stack::start(
        bins,
        work,
        args.database_url.as_deref(),
        &policy(&upstream, "one"),
        "127.0.0.1:0",
    )
    .await?;
    std::env::remove_var("SASE_SECRETS_KEY_FILE");
    let edge_dir = work.join("edge");
    let (_, before) = stack
        .api_json(reqwest::Method::GET, "/api/signing-keys", None)
        .await?;
    let k1 = before["current_public_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let identity: Value = serde_json::from_slice(&std::fs::read(edge_dir.join("device.json"))?)?;
    r.check(
        "edge-pinned-current-key",
        identity["policy_signing_key"] == k1.as_str(),
        format!("key id {}", before["current_key_id"]),
    );

    // Refused for a customer admin.
    let (_, t) = stack.api_json(reqwest::Method::POST, "/api/admins", Some(json!({"username": "cust", "password": "customer-password", "role": "customer_admin", "tenant_id": stack.tenant_id}))).await?;
    let _ = t;
    let (_, s) = login(&stack, "cust", "customer-password", None).await?;
    let cust = s["session"].as_str().unwrap_or_default().to_string();
    let (status, _) = call(
        &stack,
        &cust,
        reqwest::Method::POST,
        "/api/signing-keys/next",
        None,
    )
    .await?;
    // Outside the customer's scope: 404 (the API's convention for scope), never 2xx.
    r.check(
        "rotation-refused-for-customer-admin",
        status == 403 || status == 404,
        format!("{status}"),
    );

    // 1. Announce.
    let (status, announced) = stack
        .api_json(reqwest::Method::POST, "/api/signing-keys/next", None)
        .await?;
    let next_id = announced["next_key_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    r.check(
        "rotation-announce",
        status.as_u16() == 201 && !next_id.is_empty(),
        format!("{status} next {next_id}"),
    );
    let told = wait_for(|| trusted_keys(&edge_dir).len() == 2, READY).await;
    r.check(
        "edge-trusts-both-keys-during-overlap",
        told,
        format!("{:?}", trusted_keys(&edge_dir).len()),
    );
    let (status, _) = stack
        .api_json(reqwest::Method::POST, "/api/signing-keys/next", None)
        .await?;
    r.check(
        "rotation-second-announce-refused",
        status.as_u16() == 409,
        format!("{status}"),
    );

    // Overlap: still signed with the old key, applied.
    let v = stack.put_policy(&policy(&upstream, "two")).await?;
    let ok = stack.wait_applied(v, READY).await.is_ok();
    r.check(
        "policy-applied-during-overlap",
        ok,
        format!("version {v} (old key)"),
    );

    // 2. Activate: republished with the new key.
    let (status, activated) = stack
        .api_json(reqwest::Method::POST, "/api/signing-keys/activate", None)
        .await?;
    let k2 = activated["current_public_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    r.check(
        "rotation-activate",
        status.as_u16() == 200 && activated["current_key_id"] == next_id.as_str() && k2 != k1,
        format!("{status} current {}", activated["current_key_id"]),
    );
    let retired = wait_for(|| trusted_keys(&edge_dir) == vec![k2.clone()], READY).await;
    r.check(
        "edge-retired-old-key",
        retired,
        format!("trusted {:?}", trusted_keys(&edge_dir).len()),
    );
    let v = stack.put_policy(&policy(&upstream, "three")).await?;
    let ok = stack.wait_applied(v, READY).await.is_ok();
    r.check(
        "policy-applied-after-rotation",
        ok,
        format!("version {v} (new key)"),
    );
    let resp = reqwest::get(format!("http://{}/three", stack.edge_addr)).await?;
    r.check(
        "new-policy-enforced",
        resp.status().as_u16() == 200,
        format!("GET /three {}", resp.status()),
    );

    // Audit trail of the operator's actions.
    let (_, actions) = stack
        .api_json(reqwest::Method::GET, "/api/admin-actions?limit=1000", None)
        .await?;
    let names: Vec<String> = actions
        .as_array()
        .or_else(|| actions["actions"].as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["action"].as_str().map(str::to_string))
        .collect();
    r.check(
        "rotation-audited",
        names.iter().any(|n| n == "signing_key.announce")
            && names.iter().any(|n| n == "signing_key.activate"),
        "signing_key.announce and signing_key.activate in the admin-action trail",
    );

    // A bundle signed with the retired key: refused by the edge.
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", work.join("control/control.db").display()));
    let pool = db(&db_url).await?;
    let first = String::from_utf8(open_sealed(
        &key,
        "settings:policy_signing_key",
        &setting(&pool, "policy_signing_key").await?,
    )?)?;
    pool.close().await;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(first.trim())?
        .try_into()
        .map_err(|_| anyhow!("seed length"))?;
    let old = ed25519_dalek::SigningKey::from_bytes(&seed);
    r.check(
        "retired-key-is-the-first-key",
        sase_model::bundle::verifying_key_to_b64(&old.verifying_key()) == k1,
        "opened from the database with the operator's key",
    );
    let forged = sase_model::SignedBundle::sign(
        &sase_model::BundlePayload {
            tenant_id: stack.tenant_id.clone(),
            version: v + 100,
            issued_at_ms: 0,
            policy: sase_model::Policy::parse_json(&policy(&upstream, "forged").to_string())?,
        },
        &old,
    )?;
    if let Some(mut e) = stack.edge.take() {
        e.terminate()?;
    }
    std::fs::write(edge_dir.join("bundle.json"), forged.to_json())?;
    let mut cmd = Command::new(bins.join("sase-edge"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&edge_dir)
        .arg("--http-listen")
        .arg(stack.edge_addr.to_string())
        .env("RUST_LOG", "info");
    let mut edge = spawn_logged(&mut cmd, "sase-edge", &work.join("edge.log"))?;
    let refused = edge.wait_for_log_line("stored policy bundle refused", READY);
    r.check(
        "edge-refuses-bundle-signed-by-retired-key",
        refused.as_ref().is_ok_and(|l| l.contains("signature")),
        refused.map_or_else(|e| format!("{e:#}"), |l| l.chars().take(160).collect()),
    );
    let back = stack.wait_applied(v, READY).await.is_ok();
    edge.wait_for_log_line("policy applied", READY).ok();
    let resp = reqwest::get(format!("http://{}/forged", stack.edge_addr)).await;
    r.check(
        "edge-back-on-the-real-policy",
        back && resp.is_ok_and(|r| r.status().as_u16() == 404 || r.status().as_u16() == 403),
        format!("version {v} re-applied from the control plane; /forged not routed"),
    );
    stack.edge = Some(edge);

    // A device enrolled now pins the new key.
    let dir = enrol_another(&stack, bins, "edge-new").await?;
    let identity: Value = serde_json::from_slice(&std::fs::read(dir.join("device.json"))?)?;
    r.check(
        "new-enrolment-pins-new-key",
        identity["policy_signing_key"] == k2.as_str(),
        "device.json",
    );
    Ok(())
}

// ---- backup and restore ----------------------------------------------------------------------

async fn stored_events(stack: &Stack) -> Result<usize> {
    let (_, page) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/audit?tenant={}&limit=10000", stack.tenant_id),
            None,
        )
        .await?;
    Ok(page["events"].as_array().map_or(0, Vec::len))
}

async fn export_and_verify(stack: &Stack, audit_bin: &Path, path: &Path) -> Result<(bool, String)> {
    let (_, checkpoint) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/audit/checkpoint", stack.tenant_id),
            None,
        )
        .await?;
    let key = checkpoint["public_key"]
        .as_str()
        .ok_or_else(|| anyhow!("checkpoint: {checkpoint}"))?;
    let resp = stack
        .api
        .get(format!(
            "{}/api/tenants/{}/audit/export",
            stack.cp, stack.tenant_id
        ))
        .bearer_auth(&stack.session)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("export: {}", resp.status());
    }
    std::fs::write(path, resp.bytes().await?)?;
    let out = Command::new(audit_bin)
        .arg("verify")
        .arg(path)
        .arg("--control-plane-key")
        .arg(key)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((
        out.status.success(),
        text.lines().last().unwrap_or("").to_string(),
    ))
}

async fn wait_events(stack: &Stack, at_least: usize) -> Result<usize> {
    let started = Instant::now();
    loop {
        let n = stored_events(stack).await?;
        if n >= at_least || started.elapsed() > READY {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn backup_restore(args: &Args, r: &mut Report) -> Result<()> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    let key_file = work.join("operator-secrets.key");
    write_key_file(&key_file)?;
    std::env::set_var("SASE_SECRETS_KEY_FILE", &key_file);
    let (_app, upstream) = start_demo_app(bins, work)?;
    let db = args.database_url.as_deref();
    let mut stack = Stack::start(bins, work, db, &policy(&upstream, "one"), "127.0.0.1:0").await?;
    std::env::remove_var("SASE_SECRETS_KEY_FILE");
    let client = reqwest::Client::new();
    let before = stored_events(&stack).await?;
    for i in 0..20 {
        let path = if i % 4 == 0 { "/nowhere" } else { "/one" };
        client
            .get(format!("http://{}{path}", stack.edge_addr))
            .send()
            .await?;
    }
    let n = wait_events(&stack, before + 20).await?;
    r.check(
        "events-stored-before-backup",
        n >= before + 20,
        format!("{n} events"),
    );
    let audit_bin = bins.join("sase-audit");
    let (ok, line) =
        export_and_verify(&stack, &audit_bin, &work.join("export-before.jsonl")).await?;
    r.check("export-verifies-before-backup", ok, line);

    // Backup while the control plane runs.
    let data_dir = work.join("control");
    let backup_dir = work.join("backup");
    let mut cmd = Command::new(bins.join("sase-control"));
    cmd.arg("backup")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--out")
        .arg(&backup_dir);
    if let Some(url) = db {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    r.check(
        "backup-while-running",
        out.status.success() && backup_dir.join("MANIFEST.json").exists(),
        text.lines().last().unwrap_or("").trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(300)
                .collect::<String>(),
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup_dir.join("MANIFEST.json"))?)?;
    // On PostgreSQL the database is not in the backup: pg_dump it alongside, as
    // docs/OPERATIONS.md says (custom format, restored with pg_restore).
    let dump = backup_dir.join("control.pgdump");
    if let Some(url) = db {
        let out = Command::new("pg_dump")
            .arg("--format=custom")
            .arg("--file")
            .arg(&dump)
            .arg(url)
            .output()
            .context("running pg_dump")?;
        r.check(
            "pg-dump-while-running",
            out.status.success() && dump.exists(),
            format!(
                "{} bytes {}",
                std::fs::metadata(&dump).map_or(0, |m| m.len()),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
    }
    r.check(
        "backup-holds-db-and-tls-not-the-key",
        (db.is_some() || manifest["files"]["control.db"].is_string())
            && manifest["files"]["tls/ca.pem"].is_string()
            && manifest["secrets_key_included"] == false,
        format!(
            "{} files, key supplied separately",
            manifest["files"].as_object().map_or(0, |f| f.len())
        ),
    );

    // The machine is lost: stop it, move its data dir away.
    let port = stack_port(&stack)?;
    if let Some(mut c) = stack.control.take() {
        c.terminate()?;
    }
    std::fs::rename(&data_dir, work.join("control-lost"))?;
    // On PostgreSQL the database is lost with the machine: drop it, restore the dump into a
    // new one on a fresh database server's worth of state (same server, new database).
    let restored_url = match db {
        Some(url) => Some(restore_pg_dump(url, &dump, r).await?),
        None => None,
    };
    let fresh = work.join("fresh-machine/control");
    let out = Command::new(bins.join("sase-control"))
        .arg("restore")
        .arg("--from")
        .arg(&backup_dir)
        .arg("--data-dir")
        .arg(&fresh)
        .output()?;
    r.check(
        "restore-onto-fresh-data-dir",
        out.status.success() && (db.is_some() || fresh.join("control.db").exists()),
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(300)
                .collect::<String>(),
    );
    // Start the restored control plane at the address edges know.
    let mut c = start_control(
        bins,
        &fresh,
        restored_url.as_deref(),
        &format!("127.0.0.1:{port}"),
        Some(&key_file),
        &work.join("control-restored.log"),
    )?;
    c.wait_for_log_line("sase-control listening on https://", READY)?;
    stack.control = Some(c);
    let (status, _) = stack
        .api_json(reqwest::Method::GET, "/api/me", None)
        .await?;
    r.check(
        "admin-session-survives-restore",
        status.as_u16() == 200,
        format!("{status}"),
    );
    let v = stack.put_policy(&policy(&upstream, "after")).await?;
    let applied = stack.wait_applied(v, READY).await;
    r.check(
        "edge-reconnects-and-gets-policy",
        applied.is_ok(),
        applied.map_or_else(
            |e| format!("{e:#}"),
            |d| format!("version {v} applied in {} ms", d.as_millis()),
        ),
    );
    let resp = client
        .get(format!("http://{}/after", stack.edge_addr))
        .send()
        .await?;
    r.check(
        "restored-policy-enforced",
        resp.status().as_u16() == 200,
        format!("GET /after {}", resp.status()),
    );
    let before = stored_events(&stack).await?;
    for _ in 0..5 {
        client
            .get(format!("http://{}/after", stack.edge_addr))
            .send()
            .await?;
    }
    let n = wait_events(&stack, before + 5).await?;
    r.check(
        "new-events-continue-the-chain",
        n >= before + 5,
        format!("{n} events"),
    );
    let (_, alerts) = stack
        .api_json(reqwest::Method::GET, "/api/alerts", None)
        .await?;
    let gaps = alerts.as_array().map_or(0, |a| {
        a.iter()
            .filter(|x| {
                x["kind"]
                    .as_str()
                    .is_some_and(|k| k.contains("gap") || k.contains("fork"))
            })
            .count()
    });
    r.check(
        "no-chain-gap-after-restore",
        gaps == 0,
        format!("{gaps} gap/fork alerts"),
    );
    // Checkpoints are made every minute by default; the export verifies with what is there.
    let (ok, line) =
        export_and_verify(&stack, &audit_bin, &work.join("export-after.jsonl")).await?;
    r.check("export-verifies-after-restore", ok, line);
    Ok(())
}

/// Drops the control plane's database (`url`) and restores `dump` into a new database on the
/// same server with `pg_restore`; returns the new database's URL.
async fn restore_pg_dump(url: &str, dump: &Path, r: &mut Report) -> Result<String> {
    let (server, lost) = url
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("no database name in {url}"))?;
    let admin = sqlx::PgPool::connect(&format!("{server}/template1")).await?;
    sqlx::query(&format!("DROP DATABASE \"{lost}\" WITH (FORCE)"))
        .execute(&admin)
        .await?;
    let fresh = format!("sase_restored_{}", std::process::id());
    // From template0: this connection is on template1, the default template.
    sqlx::query(&format!("CREATE DATABASE \"{fresh}\" TEMPLATE template0"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let fresh_url = format!("{server}/{fresh}");
    let out = Command::new("pg_restore")
        .arg("--dbname")
        .arg(&fresh_url)
        .arg("--no-owner")
        .arg(dump)
        .output()
        .context("running pg_restore")?;
    r.check(
        "pg-restore-into-fresh-database",
        out.status.success(),
        format!(
            "database {lost} dropped, dump restored into {fresh} {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    );
    Ok(fresh_url)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    // Ephemeral ops listeners for every process started from here.
    std::env::set_var("SASE_METRICS_LISTEN", "127.0.0.1:0");
    std::env::set_var("SASE_EDGE_METRICS_LISTEN", "127.0.0.1:0");
    let mode = args.command;
    let mut r = Report {
        hardening: matches!(mode, Mode::Hardening),
        passed: 0,
        failed: 0,
    };
    let started = Instant::now();
    let result = match mode {
        Mode::Hardening => hardening(&args, &mut r).await,
        Mode::Rotation => rotation(&args, &mut r).await,
        Mode::BackupRestore => backup_restore(&args, &mut r).await,
    };
    if let Err(err) = &result {
        r.check(
            "secrets-driver-completes",
            false,
            format!("{err:#}").replace('\n', " | "),
        );
    }
    let secs = started.elapsed().as_secs_f64();
    match mode {
        Mode::Hardening => println!(
            "secrets checks={} failed={} ({secs:.1} s)",
            r.passed + r.failed,
            r.failed
        ),
        Mode::Rotation => println!("key_rotation passed={} failed={}", r.passed, r.failed),
        Mode::BackupRestore => println!("backup_restore passed={} failed={}", r.passed, r.failed),
    }
    if r.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
