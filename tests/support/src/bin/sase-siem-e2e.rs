//! SIEM forwarding end to end: a real control plane with an enrolled edge forwards its tenant's
//! audit trail (and the tenant's admin actions) to three sinks at once — a real rsyslog over TLS (RFC 5425, syslog RFC 5424),
//! a JSON-lines collector and an OCSF collector over TCP (small receivers in this driver) —
//! through traffic, through an rsyslog outage and restart, and checks that every stored event
//! arrived at every sink (duplicates allowed, gaps not), with the fields each format promises.
//!
//! Ends with `siem_e2e passed=<n> failed=<k> events=<e> lost=<l> duplicates=<d>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use sase_model::audit::AuditEvent;
use sase_testkit::checks::Checks;
use sase_testkit::process::{spawn_logged, ManagedChild};
use sase_testkit::stack::{start_demo_app, Stack, READY};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
struct Args {
    /// Directory with sase-control, sase-edge and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Work directory (emptied first).
    #[arg(long)]
    work_dir: PathBuf,
    /// rsyslogd binary.
    #[arg(long, default_value = "/usr/sbin/rsyslogd")]
    rsyslogd: PathBuf,
    /// Directory with the rsyslog TLS files: ca.pem, cert.pem, key.pem (for 127.0.0.1 and
    /// `siem.test`).
    #[arg(long)]
    tls_dir: PathBuf,
    /// Requests before the outage and again during it.
    #[arg(long, default_value_t = 150)]
    requests: u64,
}

/// Lines received by a driver-side collector.
type Received = Arc<Mutex<Vec<String>>>;

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn start_rsyslog(args: &Args, work: &Path, port: u16) -> Result<ManagedChild> {
    let dir = work.join("rsyslog");
    std::fs::create_dir_all(&dir)?;
    let tls = &args.tls_dir;
    let conf = format!(
        r#"global(
  workDirectory="{dir}"
  maxMessageSize="64k"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="sase" type="string" string="%structured-data%\t%msg%\n")
action(type="omfile" file="{out}" template="sase" asyncWriting="off" flushOnTXEnd="on")
"#,
        dir = dir.display(),
        ca = tls.join("ca.pem").display(),
        cert = tls.join("cert.pem").display(),
        key = tls.join("key.pem").display(),
        out = work.join("rsyslog-received.log").display(),
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf)?;
    let child = spawn_logged(
        Command::new(&args.rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid")),
        "rsyslogd",
        &work.join("rsyslog.log"),
    )?;
    // Ready when it accepts connections.
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > READY {
            bail!("rsyslogd did not listen on {port} (see rsyslog.log)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// A TCP collector of newline-delimited lines (what a SIEM's raw TCP input does).
async fn start_collector() -> Result<(SocketAddr, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received: Received = Arc::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut all) = sink.lock() {
                        all.push(line);
                    }
                }
            });
        }
    });
    Ok((addr, received))
}

async fn traffic(stack: &Stack, n: u64) -> Result<()> {
    let http = reqwest::Client::new();
    for i in 0..n {
        // Allowed and refused requests alternate, so both decisions reach the SIEM.
        let path = if i % 3 == 0 { "/nowhere" } else { "/health" };
        let status = http
            .get(format!("http://{}{path}", stack.edge_addr))
            .send()
            .await?
            .status();
        if status.is_server_error() {
            bail!("edge answered {status}");
        }
    }
    Ok(())
}

async fn sinks(stack: &Stack) -> Result<Vec<Value>> {
    let (status, body) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/tenants/{}/siem/sinks", stack.tenant_id),
            None,
        )
        .await?;
    if !status.is_success() {
        bail!("list sinks: {status} {body}");
    }
    body.as_array()
        .cloned()
        .ok_or_else(|| anyhow!("sinks: {body}"))
}

/// Waits until the device's chain holds at least `events` events.
async fn wait_stored(stack: &Stack, events: u64) -> Result<()> {
    let started = Instant::now();
    loop {
        let (_, report) = stack
            .api_json(
                reqwest::Method::GET,
                &format!("/api/devices/{}/audit/verify", stack.device_id),
                None,
            )
            .await?;
        if report["head_seq"].as_u64().is_some_and(|h| h >= events) {
            return Ok(());
        }
        if started.elapsed() > READY {
            bail!("{events} events not stored within {READY:?}: {report}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Trail positions of the tenant's admin actions.
async fn admin_seqs(stack: &Stack) -> Result<Vec<i64>> {
    let (status, page) = stack
        .api_json(
            reqwest::Method::GET,
            &format!("/api/admin-actions?tenant={}&limit=1000", stack.tenant_id),
            None,
        )
        .await?;
    if !status.is_success() {
        bail!("admin actions: {status} {page}");
    }
    let mut seqs: Vec<i64> = page["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["seq"].as_i64()).collect())
        .unwrap_or_default();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Waits until every sink has delivered the whole log (cursor = log size, no error) and every
/// admin action of the tenant.
async fn wait_caught_up(stack: &Stack) -> Result<u64> {
    let started = Instant::now();
    loop {
        let all = sinks(stack).await?;
        let size = all
            .first()
            .and_then(|s| s["log_size"].as_u64())
            .unwrap_or(0);
        let admin_head = admin_seqs(stack).await?.last().copied().unwrap_or(0);
        if size > 0
            && all.iter().all(|s| {
                s["lag"] == 0
                    && s["cursor"] == size
                    && s["admin_cursor"].as_i64() == Some(admin_head)
                    && s["last_error"].is_null()
            })
        {
            return Ok(size);
        }
        if started.elapsed() > READY {
            bail!("sinks did not catch up within {READY:?}: {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log positions received by rsyslog: from the `log_index` SD-PARAM of each line, with the
/// event in MSG checked against the SD-PARAMs.
fn rsyslog_positions(work: &Path) -> Result<(BTreeMap<u64, u32>, u32, Vec<i64>)> {
    let text = std::fs::read_to_string(work.join("rsyslog-received.log")).unwrap_or_default();
    let mut seen = BTreeMap::new();
    let mut malformed = 0;
    let mut admin = Vec::new();
    for line in text.lines() {
        let Some((sd, msg)) = line.split_once('\t') else {
            malformed += 1;
            continue;
        };
        let msg = msg.trim_start_matches('\u{feff}').trim();
        if sd.contains(" kind=\"admin_action\"") {
            let v: Value = serde_json::from_str(msg).unwrap_or(Value::Null);
            match v["seq"].as_i64() {
                Some(seq) if v["action"].is_string() && v["hash"].is_string() => admin.push(seq),
                _ => malformed += 1,
            }
            continue;
        }
        let event: Option<AuditEvent> = serde_json::from_str(msg).ok();
        let param = |name: &str| {
            sd.split(&format!(" {name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let index = param("log_index").and_then(|v| v.parse::<u64>().ok());
        match (event, index) {
            (Some(event), Some(index))
                if sd.starts_with("[sase@32473 ")
                    && param("seq") == Some(event.seq.to_string())
                    && param("decision").as_deref() == Some(event.decision.as_str())
                    && param("reason").as_deref() == Some(event.reason.as_str()) =>
            {
                *seen.entry(index).or_insert(0) += 1;
            }
            _ => malformed += 1,
        }
    }
    Ok((seen, malformed, admin))
}

fn json_positions(lines: &Received) -> (BTreeMap<u64, u32>, u32, Vec<i64>) {
    let mut seen = BTreeMap::new();
    let mut malformed = 0;
    let mut admin = Vec::new();
    for line in lines.lock().map(|l| l.clone()).unwrap_or_default() {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(seq) = v["admin_action"]["seq"].as_i64() {
            admin.push(seq);
            continue;
        }
        let event: Option<AuditEvent> = serde_json::from_value(v["event"].clone()).ok();
        // The hash travels with the event: a SIEM can check it against the chain.
        match (v["log_index"].as_u64(), event) {
            (Some(index), Some(event)) if v["hash"] == event.hash().as_str() => {
                *seen.entry(index).or_insert(0) += 1;
            }
            _ => malformed += 1,
        }
    }
    (seen, malformed, admin)
}

fn ocsf_positions(lines: &Received, tenant: &str) -> (BTreeMap<u64, u32>, u32, u32, Vec<i64>) {
    let mut seen = BTreeMap::new();
    let mut malformed = 0;
    let mut http = 0;
    let mut admin = Vec::new();
    for line in lines.lock().map(|l| l.clone()).unwrap_or_default() {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let class = v["class_uid"].as_u64();
        let well_formed = v["metadata"]["version"] == "1.1.0"
            && v["metadata"]["tenant_uid"] == tenant
            && v["type_uid"].as_u64()
                == class.map(|c| c * 100 + v["activity_id"].as_u64().unwrap_or(0))
            && v["time"].is_i64()
            && v["unmapped"]["hash"].is_string();
        if !well_formed {
            malformed += 1;
            continue;
        }
        if v["metadata"]["log_name"] == "sase-admin-actions" {
            // Authentication, Account Change or API Activity.
            match (class, v["metadata"]["sequence"].as_i64()) {
                (Some(3001 | 3002 | 6003), Some(seq)) => admin.push(seq),
                _ => malformed += 1,
            }
            continue;
        }
        // HTTP decisions: HTTP Activity, or Detection Finding with the request as evidence when
        // the WAF matched rules (CRS flags the numeric Host of these loopback requests).
        if class == Some(4002)
            || (class == Some(2004) && v["evidences"][0]["http_request"].is_object())
        {
            http += 1;
        }
        // OCSF has no log position; with one device in the tenant, position = seq - 1.
        if let Some(seq) = v["metadata"]["sequence"].as_u64().filter(|s| *s > 0) {
            *seen.entry(seq - 1).or_insert(0) += 1;
        }
    }
    (seen, malformed, http, admin)
}

fn gaps(seen: &BTreeMap<u64, u32>, size: u64) -> u64 {
    (0..size).filter(|i| !seen.contains_key(i)).count() as u64
}

fn duplicates(seen: &BTreeMap<u64, u32>) -> u64 {
    seen.values().map(|n| u64::from(n.saturating_sub(1))).sum()
}

async fn run(args: &Args, checks: &mut Checks) -> Result<(u64, u64, u64)> {
    let bins = &args.bin_dir;
    let work = &args.work_dir;
    std::env::set_var("SASE_SIEM_POLL_MS", "100");
    let (_app, upstream) = start_demo_app(bins, work)?;
    let policy = json!({
        "resources": [{
            "name": "app", "upstream": upstream,
            "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
        }]
    });
    let stack = Stack::start(bins, work, None, &policy, "127.0.0.1:0").await?;

    let port = free_port()?;
    let mut rsyslog = Some(start_rsyslog(args, work, port)?);
    let (json_addr, json_lines) = start_collector().await?;
    let (ocsf_addr, ocsf_lines) = start_collector().await?;
    let ca = std::fs::read_to_string(args.tls_dir.join("ca.pem"))?;
    let sinks_path = format!("/api/tenants/{}/siem/sinks", stack.tenant_id);

    // Bad configurations are refused with a clear error.
    for (body, why) in [
        (
            json!({"name": "x", "format": "syslog", "transport": "tls", "address": format!("127.0.0.1:{port}")}),
            "ca_pem",
        ),
        (
            json!({"name": "x", "format": "syslog", "transport": "tcp", "address": "nohost"}),
            "address",
        ),
        (
            json!({"name": "x", "format": "cef", "transport": "tcp", "address": "127.0.0.1:1"}),
            "format",
        ),
        (
            json!({"name": "x", "format": "syslog", "transport": "tls", "address": "127.0.0.1:1", "ca_pem": "not a pem"}),
            "ca_pem",
        ),
    ] {
        let (status, answer) = stack
            .api_json(reqwest::Method::POST, &sinks_path, Some(body))
            .await?;
        checks.check(
            status.is_client_error() && answer.to_string().contains(why),
            &format!("bad sink refused ({why}): {status}"),
        );
    }

    traffic(&stack, args.requests).await?;
    for body in [
        json!({"name": "rsyslog-tls", "format": "syslog", "transport": "tls",
               "address": format!("127.0.0.1:{port}"), "ca_pem": ca, "server_name": "siem.test"}),
        json!({"name": "json", "format": "json_lines", "transport": "tcp", "address": json_addr.to_string()}),
        json!({"name": "ocsf", "format": "ocsf", "transport": "tcp", "address": ocsf_addr.to_string()}),
    ] {
        let (status, answer) = stack
            .api_json(reqwest::Method::POST, &sinks_path, Some(body))
            .await?;
        checks.check(
            status == reqwest::StatusCode::CREATED,
            &format!("sink created: {status} {}", answer["name"]),
        );
    }
    let (status, _) = stack
        .api_json(
            reqwest::Method::POST,
            &sinks_path,
            Some(json!({"name": "json", "format": "json_lines", "transport": "tcp", "address": json_addr.to_string()})),
        )
        .await?;
    checks.check(
        status == reqwest::StatusCode::CONFLICT,
        &format!("a second sink with the same name is refused: {status}"),
    );

    // Everything stored before the sinks existed is delivered (they start at the beginning).
    wait_stored(&stack, args.requests + 1).await?;
    let started = Instant::now();
    let size = wait_caught_up(&stack).await?;
    println!(
        "     {size} events delivered to 3 sinks in {} ms",
        started.elapsed().as_millis()
    );

    // Outage: rsyslog stops; events keep coming; the sink reports the error and its lag.
    if let Some(mut child) = rsyslog.take() {
        child.terminate()?;
    }
    traffic(&stack, args.requests).await?;
    let outage_started = Instant::now();
    let mut reported = None;
    while outage_started.elapsed() < READY {
        let all = sinks(&stack).await?;
        if let Some(s) = all.iter().find(|s| {
            s["name"] == "rsyslog-tls"
                && !s["last_error"].is_null()
                && s["lag"].as_u64().is_some_and(|l| l > 0)
        }) {
            reported = Some(s.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    checks.check(
        reported.is_some(),
        &format!(
            "outage visible on the sink: last_error={} lag={}",
            reported
                .as_ref()
                .map_or(Value::Null, |s| s["last_error"].clone()),
            reported.as_ref().map_or(Value::Null, |s| s["lag"].clone())
        ),
    );
    let (_, alerts) = stack
        .api_json(reqwest::Method::GET, "/api/alerts", None)
        .await?;
    checks.check(
        alerts.to_string().contains("siem_delivery_failed"),
        "outage raised a siem_delivery_failed alert",
    );

    // rsyslog comes back on the same port: the backlog arrives, nothing is missing.
    rsyslog = Some(start_rsyslog(args, work, port)?);
    wait_stored(&stack, 2 * args.requests + 1).await?;
    let recovered = Instant::now();
    let size = wait_caught_up(&stack).await?;
    println!(
        "     backlog delivered {} ms after rsyslog came back",
        recovered.elapsed().as_millis()
    );
    // rsyslog writes what it took before it acknowledges nothing: give its file a moment to
    // show the last batch (readiness: poll until complete or the deadline).
    let deadline = Instant::now() + Duration::from_secs(20);
    let expected_admin = admin_seqs(&stack).await?;
    let (mut syslog_seen, mut syslog_bad, mut syslog_admin) = rsyslog_positions(work)?;
    while (gaps(&syslog_seen, size) > 0 || expected_admin.iter().any(|s| !syslog_admin.contains(s)))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (syslog_seen, syslog_bad, syslog_admin) = rsyslog_positions(work)?;
    }
    let (json_seen, json_bad, json_admin) = json_positions(&json_lines);
    let (ocsf_seen, ocsf_bad, ocsf_http, ocsf_admin) =
        ocsf_positions(&ocsf_lines, &stack.tenant_id);
    for (name, got) in [
        ("rsyslog-tls", &syslog_admin),
        ("json", &json_admin),
        ("ocsf", &ocsf_admin),
    ] {
        let missing = expected_admin.iter().filter(|s| !got.contains(s)).count();
        checks.check(
            missing == 0 && !expected_admin.is_empty(),
            &format!(
                "{name}: the tenant's {} admin actions (sites, claim codes, policy, sinks) arrived ({missing} missing)",
                expected_admin.len()
            ),
        );
    }

    println!();
    println!(
        "| sink | format | transport | received | distinct | missing | duplicates | malformed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let rows = [
        (
            "rsyslog-tls",
            "syslog 5424",
            "tls",
            &syslog_seen,
            syslog_bad,
        ),
        ("json", "json_lines", "tcp", &json_seen, json_bad),
        ("ocsf", "ocsf 1.1", "tcp", &ocsf_seen, ocsf_bad),
    ];
    let mut lost = 0;
    let mut dups = 0;
    let mut verdicts = Vec::new();
    for (name, format, transport, seen, bad) in rows {
        let received: u32 = seen.values().sum();
        let missing = gaps(seen, size);
        println!(
            "| {name} | {format} | {transport} | {received} | {} | {missing} | {} | {bad} |",
            seen.len(),
            duplicates(seen)
        );
        lost += missing;
        dups += duplicates(seen);
        verdicts.push((
            missing == 0 && bad == 0,
            format!("{name}: all {size} events, none malformed"),
        ));
    }
    println!();
    for (ok, what) in verdicts {
        checks.check(ok, &what);
    }
    println!();
    checks.check(
        ocsf_http > 0 && ocsf_http < ocsf_seen.values().sum::<u32>(),
        &format!(
            "OCSF: HTTP events ({ocsf_http}, HTTP Activity or Detection Finding) and a config-state event (policy applied)"
        ),
    );

    // Deleting a sink stops forwarding to it.
    let all = sinks(&stack).await?;
    let json_id = all
        .iter()
        .find(|s| s["name"] == "json")
        .and_then(|s| s["id"].as_str())
        .ok_or_else(|| anyhow!("json sink missing"))?
        .to_string();
    let (status, _) = stack
        .api_json(
            reqwest::Method::DELETE,
            &format!("{sinks_path}/{json_id}"),
            None,
        )
        .await?;
    checks.check(status == reqwest::StatusCode::NO_CONTENT, "sink deleted");
    let before = json_lines.lock().map(|l| l.len()).unwrap_or(0);
    traffic(&stack, 10).await?;
    wait_stored(&stack, 2 * args.requests + 11).await?;
    wait_caught_up(&stack).await?;
    let after = json_lines.lock().map(|l| l.len()).unwrap_or(0);
    checks.check(
        after == before,
        &format!("no events to a deleted sink ({before} -> {after})"),
    );
    let (_, actions) = stack
        .api_json(reqwest::Method::GET, "/api/admin-actions", None)
        .await?;
    let text = actions.to_string();
    checks.check(
        text.contains("siem.sink_create") && text.contains("siem.sink_delete"),
        "sink changes are in the admin-action trail",
    );
    drop(rsyslog);
    Ok((size, lost, dups))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("work dir {}", args.work_dir.display()))?;
    let mut checks = Checks::default();
    let (events, lost, dups) = match run(&args, &mut checks).await {
        Ok(figures) => figures,
        Err(err) => {
            checks.check(false, &format!("scenario: {err:#}"));
            (0, 1, 0)
        }
    };
    println!(
        "siem_e2e passed={} failed={} events={events} lost={lost} duplicates={dups}",
        checks.passed, checks.failed
    );
    if checks.failed > 0 || lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}
