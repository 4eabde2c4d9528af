//! Audit delivery under faults, against the real binaries: requests stream through an enrolled
//! edge while the edge, then the control plane, then both are SIGKILLed and restarted. Every
//! request the edge answered must end up stored exactly once (by seq and by reference) with an
//! intact chain. Then the spool bound: with the control plane away, a small spool in `alert`
//! mode keeps serving and reports exactly what it dropped; in `fail-closed` mode it refuses
//! with 503 `audit_spool_full` and reports how many it refused.
//!
//! Ends with `audit_faults events=<n> lost=0 duplicated=0`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use sase_testkit::checks::Checks;
use sase_testkit::process::{spawn_logged, ManagedChild};
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
    /// Events to produce between two faults (three faults; the test wants 10,000 in all).
    #[arg(long, default_value_t = 3500)]
    per_phase: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

/// References of requests the edge answered, with the status it gave.
#[derive(Default)]
struct Answered {
    by_reference: Mutex<BTreeMap<String, u16>>,
    count: AtomicU64,
}

/// A load of `clients` concurrent request loops against the edge; connection failures (the
/// edge is down) are retried after a short pause.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_load(edge: std::net::SocketAddr, clients: usize, answered: Arc<Answered>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let tasks = (0..clients)
        .map(|i| {
            let (http, stop, answered) = (http.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let url = format!("http://{edge}/health?c={i}");
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            if let Some(reference) = resp
                                .headers()
                                .get("x-sase-reference")
                                .and_then(|v| v.to_str().ok())
                            {
                                if let Ok(mut all) = answered.by_reference.lock() {
                                    all.insert(reference.to_string(), status);
                                }
                                answered.count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    Load { stop, tasks }
}

impl Load {
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn wait_answered(answered: &Answered, target: u64) -> Result<()> {
    let started = Instant::now();
    while answered.count.load(Ordering::Relaxed) < target {
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} answered requests after 300 s",
                answered.count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn sigkill(child: &mut Option<ManagedChild>) -> Result<()> {
    if let Some(mut c) = child.take() {
        if let Some(process) = c.child_mut() {
            process.kill().context("SIGKILL")?;
        }
        c.terminate()?;
    }
    Ok(())
}

fn start_control(bins: &Path, work: &Path, cp: &str) -> Result<ManagedChild> {
    let listen = cp.trim_start_matches("https://");
    let mut cmd = Command::new(bins.join("sase-control"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(work.join("control"))
        .arg("--listen")
        .arg(listen)
        .env("SASE_ADMIN_PASSWORD", "e2e-admin-password")
        .env("RUST_LOG", "info,sqlx=warn");
    let mut child = spawn_logged(&mut cmd, "sase-control", &work.join("control.log"))?;
    child.wait_for_log_line("sase-control listening on https://", READY)?;
    Ok(child)
}

fn start_edge(bins: &Path, work: &Path, listen: &str, extra: &[&str]) -> Result<ManagedChild> {
    let mut cmd = Command::new(bins.join("sase-edge"));
    cmd.arg("run")
        .arg("--data-dir")
        .arg(work.join("edge"))
        .arg("--http-listen")
        .arg(listen)
        .args(extra)
        .env("RUST_LOG", "info");
    let mut child = spawn_logged(&mut cmd, "sase-edge", &work.join("edge.log"))?;
    child.wait_for_log_line("sase-edge running", READY)?;
    // Connected (and so told what the control plane already stored) before the next fault.
    child.wait_for_log_line("control-plane channel open", READY)?;
    Ok(child)
}

/// The device's stored events: seq -> (reference, kind, detail).
async fn stored(
    db: &sqlx::AnyPool,
    device: &str,
) -> Result<BTreeMap<i64, (String, String, Value)>> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT seq, reference, kind, event_json FROM audit_events WHERE device_id = $1 ORDER BY seq",
    )
    .bind(device)
    .fetch_all(db)
    .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let json: String = row.try_get("event_json")?;
        let event: Value = serde_json::from_str(&json)?;
        out.insert(
            row.try_get::<i64, _>("seq")?,
            (
                row.try_get("reference")?,
                row.try_get("kind")?,
                event["detail"].clone(),
            ),
        );
    }
    Ok(out)
}

/// Waits until the stored chain stops growing and reaches at least `min_head`.
async fn settle(stack: &Stack, min_head: u64) -> Result<Value> {
    let started = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let (_, report) = stack
            .api_json(
                reqwest::Method::GET,
                &format!("/api/devices/{}/audit/verify", stack.device_id),
                None,
            )
            .await?;
        let head = report["head_seq"].as_u64().unwrap_or(0);
        if head != last.0 {
            last = (head, Instant::now());
        } else if head >= min_head && last.1.elapsed() > Duration::from_secs(2) {
            return Ok(report);
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("chain did not settle: {report}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a `spool_recovered` event after `after` is stored and the chain settled; returns
/// the stored events and the settled report.
async fn wait_recovered(
    stack: &Stack,
    db: &sqlx::AnyPool,
    after: i64,
) -> Result<(BTreeMap<i64, (String, String, Value)>, Value)> {
    let started = Instant::now();
    loop {
        let events = stored(db, &stack.device_id).await?;
        if let Some((seq, _)) = events
            .range(after + 1..)
            .find(|(_, (_, k, _))| k == "spool_recovered")
        {
            let report = settle(stack, u64::try_from(*seq).unwrap_or(0)).await?;
            return Ok((stored(db, &stack.device_id).await?, report));
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("no spool_recovered event after seq {after} within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn detail_number(detail: &Value, key: &str) -> Option<u64> {
    detail.as_str()?.split_whitespace().find_map(|kv| {
        kv.strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    })
}

async fn run(args: &Args, checks: &mut Checks) -> Result<(u64, u64, u64)> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    // Silence alerts are for another test; uploads as fast as the edge makes them.
    std::env::set_var("SASE_AUDIT_CHECKPOINT_SECS", "3600");
    let (_app, upstream) = start_demo_app(bins, work)?;
    let policy = json!({
        "resources": [{
            "name": "app", "upstream": upstream,
            "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
        }]
    });
    let mut stack = Stack::start(bins, work, None, &policy, "127.0.0.1:0").await?;
    let edge_listen = stack.edge_addr.to_string();
    let cp = stack.cp.clone();
    sqlx::any::install_default_drivers();
    let db_url = format!("sqlite://{}", work.join("control/control.db").display());

    // ---- kills under load ---------------------------------------------------------------
    let answered = Arc::new(Answered::default());
    let load = start_load(stack.edge_addr, args.clients, answered.clone());
    let per = args.per_phase;
    wait_answered(&answered, per).await?;
    sigkill(&mut stack.edge)?;
    println!(
        "     SIGKILL edge at {} answered",
        answered.count.load(Ordering::Relaxed)
    );
    stack.edge = Some(start_edge(bins, work, &edge_listen, &[])?);
    wait_answered(&answered, 2 * per).await?;
    sigkill(&mut stack.control)?;
    println!(
        "     SIGKILL control plane at {} answered (the edge spools)",
        answered.count.load(Ordering::Relaxed)
    );
    wait_answered(&answered, 2 * per + per / 2).await?;
    stack.control = Some(start_control(bins, work, &cp)?);
    wait_answered(&answered, 3 * per).await?;
    sigkill(&mut stack.edge)?;
    sigkill(&mut stack.control)?;
    println!(
        "     SIGKILL edge and control plane at {} answered",
        answered.count.load(Ordering::Relaxed)
    );
    stack.control = Some(start_control(bins, work, &cp)?);
    stack.edge = Some(start_edge(bins, work, &edge_listen, &[])?);
    wait_answered(&answered, 3 * per + per / 2).await?;
    load.finish().await;
    let total_answered = answered.count.load(Ordering::Relaxed);

    let report = settle(&stack, total_answered).await?;
    let db = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await?;
    let events = stored(&db, &stack.device_id).await?;
    let head = report["head_seq"].as_u64().unwrap_or(0);
    checks.check(
        report["intact"] == true,
        &format!("chain intact after the kills: {report}"),
    );
    let seqs_complete = events.len() as u64 == head
        && events
            .keys()
            .copied()
            .eq(1..=i64::try_from(head).unwrap_or(0));
    checks.check(
        seqs_complete,
        &format!("seq 1..={head} stored once each ({} rows)", events.len()),
    );
    let stored_refs: Vec<&str> = events.values().map(|(r, _, _)| r.as_str()).collect();
    let distinct: HashSet<&str> = stored_refs.iter().copied().collect();
    let duplicated = (stored_refs.len() - distinct.len()) as u64;
    let answered_refs: Vec<String> = answered
        .by_reference
        .lock()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let lost = answered_refs
        .iter()
        .filter(|r| !distinct.contains(r.as_str()))
        .count() as u64;
    checks.check(
        lost == 0 && duplicated == 0,
        &format!(
            "every answered request stored exactly once: answered={} stored_http={} lost={lost} duplicated={duplicated}",
            answered_refs.len(),
            events.values().filter(|(_, k, _)| k == "http_request").count()
        ),
    );
    checks.check(
        total_answered >= 10_000 || args.per_phase < 3000,
        &format!("at least 10,000 events in flight across the faults ({total_answered})"),
    );

    // ---- full spool, alert ----------------------------------------------------------------
    let bound = 200u64;
    sigkill(&mut stack.edge)?;
    stack.edge = Some(start_edge(
        bins,
        work,
        &edge_listen,
        &[
            "--spool-max-events",
            &bound.to_string(),
            "--spool-when-full",
            "alert",
        ],
    )?);
    sigkill(&mut stack.control)?;
    let http = reqwest::Client::new();
    let mut ok = 0;
    let mut alert_refs = Vec::new();
    for _ in 0..(bound + 150) {
        let resp = http
            .get(format!("http://{edge_listen}/health"))
            .send()
            .await?;
        if resp.status().is_success() {
            ok += 1;
        }
        if let Some(r) = resp
            .headers()
            .get("x-sase-reference")
            .and_then(|v| v.to_str().ok())
        {
            alert_refs.push(r.to_string());
        }
    }
    checks.check(
        ok == bound + 150,
        &format!("alert mode: every request served while the spool is full ({ok})"),
    );
    stack.control = Some(start_control(bins, work, &cp)?);
    let before = i64::try_from(head).unwrap_or(0);
    let (events, settled) = wait_recovered(&stack, &db, before).await?;
    let new: Vec<_> = events.range(before + 1..).collect();
    let full = new.iter().find(|(_, (_, k, _))| k == "spool_full");
    let recovered = new.iter().find(|(_, (_, k, _))| k == "spool_recovered");
    let stored_new: HashSet<&str> = new.iter().map(|(_, (r, _, _))| r.as_str()).collect();
    let not_stored = alert_refs
        .iter()
        .filter(|r| !stored_new.contains(r.as_str()))
        .count() as u64;
    let dropped = recovered.and_then(|(_, (_, _, d))| detail_number(d, "dropped"));
    checks.check(
        full.is_some() && dropped == Some(not_stored) && not_stored > 0,
        &format!(
            "alert mode: spool_full and spool_recovered in the chain; dropped={dropped:?} equals the {not_stored} answered requests not stored"
        ),
    );
    checks.check(
        settled["intact"] == true,
        "alert mode: chain intact across the episode",
    );

    // ---- full spool, fail closed ----------------------------------------------------------
    sigkill(&mut stack.edge)?;
    stack.edge = Some(start_edge(
        bins,
        work,
        &edge_listen,
        &[
            "--spool-max-events",
            &bound.to_string(),
            "--spool-when-full",
            "fail-closed",
        ],
    )?);
    sigkill(&mut stack.control)?;
    let mut served = 0u64;
    let mut refused = 0u64;
    for _ in 0..(bound + 100) {
        let resp = http
            .get(format!("http://{edge_listen}/health"))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match status {
            200 => served += 1,
            503 if body.contains("audit_spool_full") => refused += 1,
            other => bail!("fail-closed: unexpected answer {other}: {body}"),
        }
    }
    checks.check(
        served <= bound && refused >= 100,
        &format!(
            "fail-closed mode: {served} served, then {refused} refused with 503 audit_spool_full"
        ),
    );
    stack.control = Some(start_control(bins, work, &cp)?);
    let before = settled["head_seq"].as_i64().unwrap_or(0);
    let (events, settled) = wait_recovered(&stack, &db, before).await?;
    let recovered = events
        .range(before + 1..)
        .find(|(_, (_, k, _))| k == "spool_recovered")
        .and_then(|(_, (_, _, d))| detail_number(d, "refused"));
    checks.check(
        recovered == Some(refused),
        &format!("fail-closed mode: spool_recovered reports refused={recovered:?} (client saw {refused})"),
    );
    checks.check(
        settled["intact"] == true,
        "fail-closed mode: chain intact across the episode",
    );
    let (_, alerts) = stack
        .api_json(reqwest::Method::GET, "/api/alerts", None)
        .await?;
    let text = alerts.to_string();
    checks.check(
        text.contains("audit_spool_full") && text.contains("audit_events_dropped"),
        "the control plane raised audit_spool_full and audit_events_dropped alerts",
    );
    Ok((total_answered, lost, duplicated))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;
    let mut checks = Checks::default();
    let (events, lost, duplicated) = match run(&args, &mut checks).await {
        Ok(figures) => figures,
        Err(err) => {
            checks.check(false, &format!("scenario: {err:#}"));
            (0, 1, 0)
        }
    };
    println!("checks passed={} failed={}", checks.passed, checks.failed);
    println!("audit_faults events={events} lost={lost} duplicated={duplicated}");
    if checks.failed > 0 || lost > 0 || duplicated > 0 {
        std::process::exit(1);
    }
    Ok(())
}
