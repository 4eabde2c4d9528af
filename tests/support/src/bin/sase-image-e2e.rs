//! Boot test of the appliance image under QEMU (software emulation) against a real control
//! plane: zero-touch enrolment from a claim file on the config partition, enforcement of a
//! pushed policy, then (full mode) a signed update with the A/B slot switch, a broken update
//! rolled back by the device itself, and tampered updates refused and audited.
//!
//! The VM's network is QEMU user networking with `restrict=on`: it reaches nothing but the
//! forwards set here, all to 127.0.0.1 (guest `10.0.2.100:8443` → the control plane,
//! `10.0.2.101:8080` → the demo app; host `127.0.0.1:<port>` → the edge's published listener).
//!
//! Ends with `image_boot passed=<n> failed=<m> image_size_mb=<x> boot_to_enforcing_s=<y>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use reqwest::{Method, StatusCode};
use sase_testkit::control::ControlPlane;
use sase_testkit::process::{spawn_logged, ManagedChild};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Appliance image boot test under QEMU")]
struct Args {
    /// Directory holding sase-control and sase-demo-app.
    #[arg(long)]
    bin_dir: PathBuf,
    /// Output of image/build.sh (disk image, vmlinuz, initrd.img, cmdline, build.json).
    #[arg(long)]
    image_dir: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work_dir: PathBuf,
    /// Signed update bundle of a newer, good version (full mode).
    #[arg(long)]
    update: Option<PathBuf>,
    /// Signed update bundle whose edge never starts (full mode).
    #[arg(long)]
    broken_update: Option<PathBuf>,
    /// Signed update bundle of an even newer version, to be tampered with (full mode).
    #[arg(long)]
    tamper_update: Option<PathBuf>,
    /// The same version signed with a key that is not the vendor's (full mode).
    #[arg(long)]
    foreign_update: Option<PathBuf>,
    /// Boot the disk through UEFI firmware (OVMF code file) instead of QEMU's `-kernel`.
    #[arg(long)]
    uefi: Option<PathBuf>,
}

const CP_GUEST: &str = "10.0.2.100";
const APP_GUEST: &str = "10.0.2.101";
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(900);

struct Run {
    passed: u32,
    failed: u32,
}

impl Run {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("ok   {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .ok_or_else(|| anyhow!("no port in {url}"))
}

fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes claim.txt and ca.pem onto the config partition of `disk` (FAT, through mtools).
fn provision(disk: &Path, work: &Path, cp: &str, claim: &str, ca: &Path) -> Result<()> {
    let table: Value =
        serde_json::from_str(&run_cmd(Command::new("sfdisk").arg("--json").arg(disk))?)?;
    let start = table["partitiontable"]["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "sase-config"))
        .and_then(|p| p["start"].as_u64())
        .ok_or_else(|| anyhow!("no sase-config partition in {table}"))?;
    let claim_file = work.join("claim.txt");
    std::fs::write(
        &claim_file,
        format!("control_plane={cp}\nclaim={claim}\nname=branch-qemu\n"),
    )?;
    let target = format!("{}@@{}", disk.display(), start * 512);
    run_cmd(
        Command::new("mcopy")
            .arg("-o")
            .arg("-i")
            .arg(&target)
            .arg(&claim_file)
            .arg(ca)
            .arg("::"),
    )?;
    Ok(())
}

struct Vm {
    child: ManagedChild,
    serial: PathBuf,
    http: String,
}

fn start_vm(args: &Args, disk: &Path, cp_port: u16, app_port: u16) -> Result<Vm> {
    let http_port = free_port()?;
    let cmdline = std::fs::read_to_string(args.image_dir.join("cmdline"))?;
    let netdev = format!(
        "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{http_port}-:80,\
         guestfwd=tcp:{CP_GUEST}:8443-cmd:socat - TCP:127.0.0.1:{cp_port},\
         guestfwd=tcp:{APP_GUEST}:8080-cmd:socat - TCP:127.0.0.1:{app_port}"
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
    ])
    .args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    match &args.uefi {
        // The disk boots itself: firmware → EFI/BOOT/BOOTX64.EFI on its boot partition.
        Some(code) => {
            let vars = args.work_dir.join("efivars.fd");
            let template = code.with_file_name(
                code.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .replace("CODE", "VARS"),
            );
            std::fs::copy(&template, &vars)
                .with_context(|| format!("copying {}", template.display()))?;
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        None => {
            cmd.arg("-kernel")
                .arg(args.image_dir.join("vmlinuz"))
                .arg("-initrd")
                .arg(args.image_dir.join("initrd.img"))
                .arg("-append")
                .arg(cmdline.trim());
        }
    }
    cmd.arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ))
        .arg("-netdev")
        .arg(netdev)
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(std::process::Stdio::null());
    let serial = args.work_dir.join("serial.log");
    let child = spawn_logged(&mut cmd, "qemu", &serial)?;
    Ok(Vm {
        child,
        serial,
        http: format!("http://127.0.0.1:{http_port}"),
    })
}

impl Vm {
    /// Waits for a serial-console line containing `needle` that appears after byte `from`.
    fn wait_line(&mut self, needle: &str, from: u64, timeout: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            let text = std::fs::read(&self.serial).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
            if let Some(line) = tail.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("qemu exited ({status}) before {needle:?}");
            }
            if started.elapsed() > timeout {
                bail!("no {needle:?} on the serial console within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn serial_len(&self) -> u64 {
        std::fs::metadata(&self.serial).map_or(0, |m| m.len())
    }
}

async fn upload(cp: &ControlPlane, bundle: &Path) -> Result<Value> {
    let resp = cp
        .api
        .post(format!("{}/api/updates", cp.cp))
        .bearer_auth(&cp.session)
        .header("content-type", "application/octet-stream")
        .body(std::fs::read(bundle)?)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    if status != StatusCode::CREATED {
        bail!("upload refused: {status} {body}");
    }
    Ok(body)
}

/// Offers an update and waits for one of `terminal` states; returns the device's entry.
async fn offer_and_wait(
    cp: &ControlPlane,
    update_id: &str,
    device_id: &str,
    terminal: &[&str],
) -> Result<Value> {
    let (status, body) = cp
        .api_json(
            Method::POST,
            &format!("/api/updates/{update_id}/offer"),
            Some(json!({"devices": [device_id]})),
        )
        .await?;
    if status != StatusCode::OK {
        bail!("offer refused: {status} {body}");
    }
    let started = Instant::now();
    loop {
        let (_, list) = cp
            .api_json(
                Method::GET,
                &format!("/api/updates/{update_id}/devices"),
                None,
            )
            .await?;
        if let Some(entry) = list.as_array().and_then(|l| l.first()) {
            if terminal.iter().any(|t| entry["state"] == *t) {
                return Ok(entry.clone());
            }
        }
        if started.elapsed() > UPDATE_TIMEOUT {
            bail!(
                "update {update_id} reached none of {terminal:?} within {UPDATE_TIMEOUT:?}: {list}"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn events_of_kind(cp: &ControlPlane, tenant: &str, kind: &str) -> Result<Vec<Value>> {
    let (_, page) = cp
        .api_json(
            Method::GET,
            &format!("/api/audit?tenant={tenant}&limit=10000"),
            None,
        )
        .await?;
    Ok(page["events"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["kind"] == kind).cloned().collect())
        .unwrap_or_default())
}

async fn wait_event(cp: &ControlPlane, tenant: &str, kind: &str, n: usize) -> Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let events = events_of_kind(cp, tenant, kind).await?;
        if events.len() >= n || started.elapsed() > Duration::from_secs(120) {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn request(http: &reqwest::Client, url: &str) -> Result<(StatusCode, String, String)> {
    let resp = http.get(url).send().await?;
    let status = resp.status();
    let reference = resp
        .headers()
        .get("x-sase-reference")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((status, reference, resp.text().await.unwrap_or_default()))
}

async fn audit_reason(cp: &ControlPlane, reference: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        let (_, page) = cp
            .api_json(
                Method::GET,
                &format!("/api/audit?reference={reference}"),
                None,
            )
            .await?;
        if let Some(event) = page["events"].as_array().and_then(|e| e.first()) {
            return Ok(format!(
                "{}/{}",
                event["decision"].as_str().unwrap_or("?"),
                event["reason"].as_str().unwrap_or("?")
            ));
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Ok("missing".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    let work = args.work_dir.clone();
    let mut run = Run {
        passed: 0,
        failed: 0,
    };
    let build: Value = serde_json::from_slice(&std::fs::read(args.image_dir.join("build.json"))?)?;
    let image_size_mb = build["disk_mb"].as_u64().unwrap_or(0);
    let source_disk = PathBuf::from(
        build["disk"]
            .as_str()
            .ok_or_else(|| anyhow!("build.json: disk"))?,
    );

    // The upstream app and the control plane, both on 127.0.0.1 ephemeral ports.
    let mut app_cmd = Command::new(args.bin_dir.join("sase-demo-app"));
    app_cmd.args(["--listen", "127.0.0.1:0"]);
    let mut app = spawn_logged(&mut app_cmd, "sase-demo-app", &work.join("app.log"))?;
    let app_line = app.wait_for_log_line("listening on http://", Duration::from_secs(30))?;
    let app_port = port_of(app_line.split_whitespace().last().unwrap_or_default())?;
    let cp = ControlPlane::start(
        &args.bin_dir,
        &work,
        None,
        &[
            ("SASE_PUBLIC_URL", &format!("https://{CP_GUEST}:8443")),
            ("SASE_TLS_NAMES", CP_GUEST),
        ],
    )
    .await?;
    let cp_port = port_of(&cp.cp)?;
    let (tenant_id, site_id) = cp.tenant_and_site("Image test").await?;
    let policy = json!({
        "resources": [{
            "name": "branch-app",
            "upstream": format!("http://{APP_GUEST}:8080"),
            "routes": [{"id": "health", "methods": ["GET"], "path": "/health", "public": true}]
        }]
    });
    let (status, body) = cp
        .api_json(
            Method::PUT,
            &format!("/api/tenants/{tenant_id}/policy"),
            Some(policy),
        )
        .await?;
    if status != StatusCode::OK {
        bail!("policy refused: {status} {body}");
    }
    let (_, claim) = cp
        .api_json(
            Method::POST,
            &format!("/api/sites/{site_id}/claim-codes"),
            Some(json!({"ttl_minutes": 60})),
        )
        .await?;
    let code = claim["code"]
        .as_str()
        .ok_or_else(|| anyhow!("claim: {claim}"))?;

    // A private copy of the disk, provisioned the way an MSP does it: a file on the config
    // partition.
    let disk = work.join("disk.img");
    run_cmd(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&source_disk)
            .arg(&disk),
    )?;
    provision(
        &disk,
        &work,
        &format!("https://{CP_GUEST}:8443"),
        code,
        &cp.ca,
    )?;

    // --- first boot: enrol and enforce ------------------------------------------------------------
    let booted = Instant::now();
    let mut vm = start_vm(&args, &disk, cp_port, app_port)?;
    let enrolled = vm.wait_line("sase-firstboot: ENROLLED", 0, BOOT_TIMEOUT);
    run.check(
        "first boot enrols from the claim file on the config partition",
        enrolled.is_ok(),
        format!("{enrolled:?}"),
    );
    let line = vm.wait_line("state=enforcing", 0, BOOT_TIMEOUT)?;
    let boot_to_enforcing = booted.elapsed();
    println!("     serial: {line}");
    let (_, devices) = cp
        .api_json(
            Method::GET,
            &format!("/api/tenants/{tenant_id}/devices"),
            None,
        )
        .await?;
    let device_id = devices
        .as_array()
        .and_then(|d| d.first())
        .and_then(|d| d["id"].as_str())
        .ok_or_else(|| anyhow!("no device enrolled: {devices}"))?
        .to_string();
    run.check(
        "the serial console shows the device id and its state",
        line.contains(&format!("device={device_id}"))
            && line.contains("slot=a")
            && line.contains("image_version="),
        &line,
    );

    if args.uefi.is_some() {
        let efi = vm.wait_line("EFI stub:", 0, Duration::from_secs(5));
        run.check(
            "the disk boots itself through UEFI (unified kernel image on its boot partition)",
            efi.is_ok(),
            format!("{efi:?}"),
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (status, reference, _) = request(&http, &format!("{}/health", vm.http)).await?;
    let reason = audit_reason(&cp, &reference).await?;
    run.check(
        "allowed request through the appliance reaches the upstream (audited allow)",
        status == StatusCode::OK && reason == "allow/allowed",
        format!("{status} {reason}"),
    );
    let (status, reference, body) = request(&http, &format!("{}/admin/export", vm.http)).await?;
    let reason = audit_reason(&cp, &reference).await?;
    run.check(
        "denied request refused by the appliance (audited deny)",
        status == StatusCode::NOT_FOUND && reason == "deny/route_not_found",
        format!("{status} {reason} {body}"),
    );

    let full = args.update.is_some();
    if full {
        let at = vm.serial_len();
        // --- a signed update: slot switch -----------------------------------------------------------
        let up = upload(&cp, args.update.as_deref().unwrap_or(Path::new(""))).await?;
        let version = up["version"].as_u64().unwrap_or(0);
        let entry = offer_and_wait(
            &cp,
            up["id"].as_str().unwrap_or(""),
            &device_id,
            &["confirmed", "refused", "failed", "rolled_back"],
        )
        .await?;
        run.check(
            "signed update installed, booted on trial in slot b and confirmed",
            entry["state"] == "confirmed"
                && entry["slot"] == "b"
                && entry["running_version"] == version,
            &entry,
        );
        let line = vm.wait_line("state=enforcing", at, Duration::from_secs(60));
        run.check(
            "after the switch the console shows slot b enforcing the new version",
            line.as_ref().is_ok_and(|l| {
                l.contains("slot=b") && l.contains(&format!("image_version={version}"))
            }),
            format!("{line:?}"),
        );
        let installed = wait_event(&cp, &tenant_id, "update_installed", 1).await?;
        let confirmed = wait_event(&cp, &tenant_id, "update_confirmed", 1).await?;
        run.check(
            "update installed and confirmed are audit events",
            !installed.is_empty() && !confirmed.is_empty(),
            format!("{} {}", installed.len(), confirmed.len()),
        );
        let (status, _, _) = request(&http, &format!("{}/health", vm.http)).await?;
        run.check(
            "the updated appliance still enforces (allowed request)",
            status == StatusCode::OK,
            status,
        );

        // --- a broken update: automatic rollback ------------------------------------------------------
        let at = vm.serial_len();
        let up = upload(&cp, args.broken_update.as_deref().unwrap_or(Path::new(""))).await?;
        let entry = offer_and_wait(
            &cp,
            up["id"].as_str().unwrap_or(""),
            &device_id,
            &["rolled_back", "confirmed", "refused", "failed"],
        )
        .await?;
        run.check(
            "broken update rolled back by the device to slot b",
            entry["state"] == "rolled_back"
                && entry["slot"] == "b"
                && entry["running_version"] == version,
            &entry,
        );
        let line = vm.wait_line("ROLLBACK to slot b", at, Duration::from_secs(30));
        run.check(
            "init reports the rollback on the console",
            line.is_ok(),
            format!("{line:?}"),
        );
        let rolled = wait_event(&cp, &tenant_id, "update_rolled_back", 1).await?;
        run.check(
            "the rollback is audited (update_unhealthy)",
            rolled.iter().any(|e| e["reason"] == "update_unhealthy"),
            rolled.len(),
        );
        let (_, alerts) = cp.api_json(Method::GET, "/api/alerts", None).await?;
        run.check(
            "the rollback raised an alert",
            alerts.to_string().contains("update_rolled_back"),
            "no update_rolled_back alert",
        );
        let (status, _, _) = request(&http, &format!("{}/health", vm.http)).await?;
        run.check(
            "after the rollback the appliance enforces again",
            status == StatusCode::OK,
            status,
        );

        // --- tampered updates: refused and audited ---------------------------------------------------
        let mut tampered = std::fs::read(args.tamper_update.as_deref().unwrap_or(Path::new("")))?;
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x01;
        let tampered_path = work.join("tampered.sasu");
        std::fs::write(&tampered_path, &tampered)?;
        drop(tampered);
        let mut refused_ok = 0;
        for (name, path) in [
            ("payload byte changed", tampered_path.clone()),
            (
                "signed with another key",
                args.foreign_update.clone().unwrap_or_default(),
            ),
        ] {
            let up = upload(&cp, &path).await?;
            let entry = offer_and_wait(
                &cp,
                up["id"].as_str().unwrap_or(""),
                &device_id,
                &["refused", "confirmed", "rolled_back", "failed", "installed"],
            )
            .await?;
            let ok = entry["state"] == "refused"
                && entry["running_version"] == version
                && entry["slot"] == "b";
            refused_ok += u32::from(ok);
            run.check(
                &format!("tampered update ({name}) refused, still on slot b"),
                ok,
                &entry,
            );
        }
        let refused = wait_event(&cp, &tenant_id, "update_refused", 2).await?;
        run.check(
            "both refusals are audited as update_signature_invalid",
            refused
                .iter()
                .filter(|e| e["reason"] == "update_signature_invalid")
                .count()
                >= 2
                && refused_ok == 2,
            refused.len(),
        );
    }

    let _ = vm.child.terminate();
    let _ = app.terminate();
    println!(
        "image_boot passed={} failed={} image_size_mb={image_size_mb} boot_to_enforcing_s={:.1}",
        run.passed,
        run.failed,
        boot_to_enforcing.as_secs_f64()
    );
    if run.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
