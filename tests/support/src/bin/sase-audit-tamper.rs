//! Tamper test of the audit trail against the real binaries: a control plane (SQLite, or
//! PostgreSQL with `SASE_E2E_DATABASE_URL`), the sample upstream and an enrolled edge. Requests
//! through the edge produce events that the edge signs and uploads; then, with everything still
//! running, each case edits the control plane's database directly, exports the tenant's audit
//! trail through the API and runs `sase-audit verify`, which must fail and name the record:
//!
//! * `edit_field` — an event's decision changed in place (hash column untouched);
//! * `delete` — an event removed;
//! * `reorder` — two neighbouring events' contents swapped;
//! * `rehash_chain` — an event changed and every following hash and link recomputed, the head
//!   moved along (only the device's batch signature and the signed checkpoint can catch it);
//! * `forge_append` — a well-formed event appended after the head, chained, hashed, given the
//!   next log position (not signed by the device).
//!
//! After each case the database is restored and the export must verify again. Ends with
//! `audit_tamper cases=<n> detected=<d>`; exits non-zero when a case was missed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_model::AuditEvent;
use sase_testkit::process::spawn_logged;
use sase_testkit::stack::{Stack, READY};
use serde_json::json;
use sqlx::{AnyPool, Row as _};

#[derive(Parser)]
#[command(about = "Audit tamper test against the real binaries")]
struct Args {
    /// Directory holding sase-control, sase-edge, sase-demo-app and sase-audit.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Scratch directory (wiped at start).
    #[arg(long)]
    work_dir: PathBuf,
    /// Control-plane database URL (default: SQLite in the work dir).
    #[arg(long, env = "SASE_E2E_DATABASE_URL")]
    database_url: Option<String>,
    /// Requests sent through the edge before tampering.
    #[arg(long, default_value_t = 400)]
    requests: u64,
}

/// What `sase-audit verify` named.
#[derive(Debug)]
struct Named {
    device: String,
    from: u64,
    to: u64,
    line: String,
}

fn parse_named(first_line: &str) -> Option<Named> {
    let rest = first_line.strip_prefix("FAIL first bad record: ")?;
    let device = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("device="))?;
    let seq = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("seq="))?;
    let (from, to) = match seq.split_once("..") {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => (seq.parse().ok()?, seq.parse().ok()?),
    };
    Some(Named {
        device: device.to_string(),
        from,
        to,
        line: first_line.to_string(),
    })
}

struct Ctx {
    stack: Stack,
    db: AnyPool,
    audit_bin: PathBuf,
    cp_key: String,
    work: PathBuf,
    exports: u32,
}

impl Ctx {
    /// Exports the tenant's trail and runs `sase-audit verify`; returns (exit ok, stdout).
    async fn export_and_verify(&mut self) -> Result<(bool, String)> {
        let resp = self
            .stack
            .api
            .get(format!(
                "{}/api/tenants/{}/audit/export",
                self.stack.cp, self.stack.tenant_id
            ))
            .bearer_auth(&self.stack.session)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("export: {}", resp.status());
        }
        let body = resp.bytes().await?;
        self.exports += 1;
        let path = self.work.join(format!("export-{}.jsonl", self.exports));
        std::fs::write(&path, &body)?;
        let out = Command::new(&self.audit_bin)
            .arg("verify")
            .arg(&path)
            .arg("--control-plane-key")
            .arg(&self.cp_key)
            .output()
            .context("running sase-audit")?;
        if out.status.code() == Some(2) {
            bail!(
                "sase-audit could not read the export: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Copies the device's events from `from_seq` on, its head and the tenant's log size.
    async fn backup(&self, from_seq: i64) -> Result<()> {
        let device = &self.stack.device_id;
        for sql in [
            "DROP TABLE IF EXISTS tamper_events",
            "DROP TABLE IF EXISTS tamper_heads",
            "DROP TABLE IF EXISTS tamper_logs",
        ] {
            sqlx::query(sql).execute(&self.db).await?;
        }
        sqlx::query(&format!(
            "CREATE TABLE tamper_events AS SELECT * FROM audit_events WHERE device_id = '{device}' AND seq >= {from_seq}"
        ))
        .execute(&self.db)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE tamper_heads AS SELECT * FROM audit_heads WHERE device_id = '{device}'"
        ))
        .execute(&self.db)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE tamper_logs AS SELECT * FROM audit_logs WHERE tenant_id = '{}'",
            self.stack.tenant_id
        ))
        .execute(&self.db)
        .await?;
        Ok(())
    }

    async fn restore(&self, from_seq: i64) -> Result<()> {
        let device = &self.stack.device_id;
        let mut tx = self.db.begin().await?;
        for sql in [
            format!("DELETE FROM audit_events WHERE device_id = '{device}' AND seq >= {from_seq}"),
            "INSERT INTO audit_events SELECT * FROM tamper_events".to_string(),
            format!("DELETE FROM audit_heads WHERE device_id = '{device}'"),
            "INSERT INTO audit_heads SELECT * FROM tamper_heads".to_string(),
            format!(
                "DELETE FROM audit_logs WHERE tenant_id = '{}'",
                self.stack.tenant_id
            ),
            "INSERT INTO audit_logs SELECT * FROM tamper_logs".to_string(),
        ] {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn event(&self, seq: i64) -> Result<AuditEvent> {
        let row =
            sqlx::query("SELECT event_json FROM audit_events WHERE device_id = $1 AND seq = $2")
                .bind(&self.stack.device_id)
                .bind(seq)
                .fetch_one(&self.db)
                .await?;
        let text: String = row.try_get("event_json")?;
        Ok(serde_json::from_str(&text)?)
    }

    async fn write_event(&self, seq: i64, event: &AuditEvent, hash: &str) -> Result<()> {
        sqlx::query(
            "UPDATE audit_events SET event_json = $1, hash = $2 WHERE device_id = $3 AND seq = $4",
        )
        .bind(serde_json::to_string(event)?)
        .bind(hash)
        .bind(&self.stack.device_id)
        .bind(seq)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    async fn head(&self) -> Result<i64> {
        let row = sqlx::query("SELECT last_seq FROM audit_heads WHERE device_id = $1")
            .bind(&self.stack.device_id)
            .fetch_one(&self.db)
            .await?;
        Ok(row.try_get("last_seq")?)
    }
}

/// Applies one tampering; returns the seq the verifier must name.
async fn tamper(ctx: &Ctx, case: &str, k: i64) -> Result<u64> {
    let device = ctx.stack.device_id.clone();
    match case {
        "edit_field" => {
            let row = sqlx::query(
                "SELECT event_json FROM audit_events WHERE device_id = $1 AND seq = $2",
            )
            .bind(&device)
            .bind(k)
            .fetch_one(&ctx.db)
            .await?;
            let text: String = row.try_get("event_json")?;
            let edited = text.replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
            if edited == text {
                bail!("event {k} has no allow decision to edit: {text}");
            }
            sqlx::query(
                "UPDATE audit_events SET event_json = $1 WHERE device_id = $2 AND seq = $3",
            )
            .bind(edited)
            .bind(&device)
            .bind(k)
            .execute(&ctx.db)
            .await?;
        }
        "delete" => {
            sqlx::query("DELETE FROM audit_events WHERE device_id = $1 AND seq = $2")
                .bind(&device)
                .bind(k)
                .execute(&ctx.db)
                .await?;
        }
        "reorder" => {
            let a = ctx.event(k).await?;
            let b = ctx.event(k + 1).await?;
            let (ha, hb) = (a.hash(), b.hash());
            ctx.write_event(k, &b, &hb).await?;
            ctx.write_event(k + 1, &a, &ha).await?;
        }
        "rehash_chain" => {
            let head = ctx.head().await?;
            let mut prev = ctx.event(k - 1).await?.hash();
            for seq in k..=head {
                let mut e = ctx.event(seq).await?;
                if seq == k {
                    e.decision = sase_model::audit::Decision::Deny;
                }
                e.prev_hash = prev;
                prev = e.hash();
                ctx.write_event(seq, &e, &prev).await?;
            }
            sqlx::query("UPDATE audit_heads SET last_hash = $1 WHERE device_id = $2")
                .bind(&prev)
                .bind(&device)
                .execute(&ctx.db)
                .await?;
        }
        "forge_append" => {
            let head = ctx.head().await?;
            let last = ctx.event(head).await?;
            let mut forged = last.clone();
            forged.seq = last.seq + 1;
            forged.prev_hash = last.hash();
            forged.reference = "forged-by-tamper-test".into();
            forged.ts_ms += 1;
            let hash = forged.hash();
            let size: i64 = sqlx::query("SELECT size FROM audit_logs WHERE tenant_id = $1")
                .bind(&ctx.stack.tenant_id)
                .fetch_one(&ctx.db)
                .await?
                .try_get("size")?;
            sqlx::query(
                "INSERT INTO audit_events (device_id, seq, tenant_id, ts_ms, kind, decision, reason, reference, hash, event_json, received_at_ms, log_index) VALUES ($1, $2, $3, $4, 'http_request', 'allow', 'allowed', $5, $6, $7, $8, $9)",
            )
            .bind(&device)
            .bind(head + 1)
            .bind(&forged.tenant_id)
            .bind(forged.ts_ms)
            .bind(&forged.reference)
            .bind(&hash)
            .bind(serde_json::to_string(&forged)?)
            .bind(forged.ts_ms)
            .bind(size)
            .execute(&ctx.db)
            .await?;
            sqlx::query("UPDATE audit_logs SET size = size + 1 WHERE tenant_id = $1")
                .bind(&ctx.stack.tenant_id)
                .execute(&ctx.db)
                .await?;
            sqlx::query(
                "UPDATE audit_heads SET last_seq = $1, last_hash = $2 WHERE device_id = $3",
            )
            .bind(head + 1)
            .bind(&hash)
            .bind(&device)
            .execute(&ctx.db)
            .await?;
            return Ok(u64::try_from(head + 1)?);
        }
        other => bail!("unknown case {other}"),
    }
    Ok(u64::try_from(k)?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let (cases, detected) = match run(&args).await {
        Ok(counts) => counts,
        Err(err) => {
            println!("FAIL tamper scenario: {err:#}");
            (5, 0)
        }
    };
    println!("audit_tamper cases={cases} detected={detected}");
    if detected != cases {
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: &Args) -> Result<(u32, u32)> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    // Checkpoints are signed by the exports (and every hour), not behind the test's back.
    std::env::set_var("SASE_AUDIT_CHECKPOINT_SECS", "3600");
    let mut app = spawn_logged(
        Command::new(bins.join("sase-demo-app")).args(["--listen", "127.0.0.1:0"]),
        "sase-demo-app",
        &work.join("app.log"),
    )?;
    let line = app.wait_for_log_line("listening on http://", READY)?;
    let upstream = line
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("no upstream URL"))?
        .to_string();
    let policy = json!({
        "resources": [{
            "name": "app", "upstream": upstream,
            "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
        }]
    });
    let stack = Stack::start(
        bins,
        work,
        args.database_url.as_deref(),
        &policy,
        "127.0.0.1:0",
    )
    .await?;

    // Traffic: every request becomes an event the edge signs and uploads.
    let http = reqwest::Client::new();
    let url = format!("http://{}/health", stack.edge_addr);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (http, url) = (http.clone(), url.clone());
        let n = args.requests / 8 + u64::from(w < args.requests % 8);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let status = http.get(&url).send().await?.status();
                if !status.is_success() {
                    bail!("edge answered {status}");
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Every request plus the "policy applied" event, stored and acknowledged.
    let expected = args.requests + 1;
    let started = Instant::now();
    loop {
        let (_, report) = stack
            .api_json(
                reqwest::Method::GET,
                &format!("/api/devices/{}/audit/verify", stack.device_id),
                None,
            )
            .await?;
        if report["head_seq"].as_u64().is_some_and(|h| h >= expected) {
            break;
        }
        if started.elapsed() > READY {
            bail!("events not stored within {READY:?}: {report}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ok   {expected} events stored (signed batches)");

    let (_, checkpoint) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/audit/checkpoint", stack.tenant_id),
            None,
        )
        .await?;
    let cp_key = checkpoint["public_key"]
        .as_str()
        .ok_or_else(|| anyhow!("no public key: {checkpoint}"))?
        .to_string();
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", work.join("control/control.db").display()),
    };
    sqlx::any::install_default_drivers();
    let db = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let mut ctx = Ctx {
        stack,
        db,
        audit_bin: bins.join("sase-audit"),
        cp_key,
        work: work.to_path_buf(),
        exports: 0,
    };
    let (ok, out) = ctx.export_and_verify().await?;
    if !ok {
        bail!("the untouched export does not verify:\n{out}");
    }
    println!(
        "ok   untouched export verifies: {}",
        out.lines().last().unwrap_or("")
    );

    let k = i64::try_from(expected / 2)?;
    let cases = [
        "edit_field",
        "delete",
        "reorder",
        "rehash_chain",
        "forge_append",
    ];
    let mut detected = 0;
    for case in cases {
        ctx.backup(k - 1).await?;
        let want = tamper(&ctx, case, k).await?;
        let (ok, out) = ctx.export_and_verify().await?;
        let first = out.lines().next().unwrap_or_default().to_string();
        let named = parse_named(&first);
        let hit = !ok
            && named
                .as_ref()
                .is_some_and(|n| n.device == ctx.stack.device_id && n.from <= want && want <= n.to);
        if hit {
            detected += 1;
            println!(
                "ok   {case}: detected, seq {want} named: {}",
                named.map(|n| n.line).unwrap_or_default()
            );
        } else {
            println!("FAIL {case}: seq {want} not named; sase-audit said:\n{out}");
        }
        ctx.restore(k - 1).await?;
        if case == "forge_append" {
            // The export signed a checkpoint over the forged event (its chain and hash were
            // well-formed); removing it again is itself a detectable change, so the
            // "restored export verifies" check does not apply after this last case.
            continue;
        }
        let (ok, out) = ctx.export_and_verify().await?;
        if !ok {
            bail!("after restoring from {case}, the export does not verify:\n{out}");
        }
    }
    drop(ctx);
    drop(app);
    Ok((u32::try_from(cases.len())?, detected))
}
