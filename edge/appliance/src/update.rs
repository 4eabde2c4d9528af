//! Firmware updates of the appliance image: A/B root slots, trial boots, confirmation.
//!
//! Active only on the appliance image, where `/etc/sase/image.json` (or the file named by
//! `SASE_EDGE_IMAGE_CONFIG`) describes the running image: its version, the vendor's update key,
//! the slot devices and the boot-state file. Elsewhere offers are answered `refused`.
//!
//! The boot-state file (on the data partition; `key=value` lines) is shared with the image's
//! init (`image/initramfs/init`), which picks the slot at every boot:
//!
//! * `active` — the confirmed slot; `booted` — the slot this boot runs (written by init);
//! * `trial` + `tries` — a slot on trial and the boots it has left: init boots the trial slot
//!   while `tries > 0` (decrementing first) and otherwise goes back to `active`, recording
//!   `rolled_back=<slot>`;
//! * `trial_version`, `trial_update` — what the trial slot holds (for the reports).
//!
//! An offer is downloaded with the device certificate, verified (vendor signature, then the
//! payload's size and SHA-256 while it is copied to the inactive slot, see
//! [`sase_model::update`]), the slot is put on trial with one boot and the device reboots.
//! The new slot confirms itself (`active = booted`) once this daemon has its policy and the
//! control-plane channel is up; `sase-slot-watchdog` (a unit of the image) reboots a trial boot
//! that has not confirmed within its window, so a broken slot falls back by itself — even when
//! this daemon does not start at all. Every refusal, installation, confirmation and rollback is
//! an audit event and a report to the control plane.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use sase_model::audit::{Decision, EventKind};
use sase_model::channel::EdgeMessage;
use sase_model::update::{
    decode_header, header_len, RunningImage, UpdateError, UpdateManifest, UpdateOffer,
    UpdateReport, UpdateState, PREFIX_BYTES,
};
use sase_model::{AuditEvent, Reason};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::proxy::{new_reference, now_ms, Edge};

/// Default location of the image description.
pub const IMAGE_CONFIG: &str = "/etc/sase/image.json";

/// Boots a freshly installed slot gets before the device goes back.
const TRIAL_BOOTS: u32 = 1;

/// The running image, as written by `image/build.sh`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Image version (build number).
    pub version: u64,
    /// Human label.
    pub label: String,
    /// CPU architecture.
    pub arch: String,
    /// Kernel release the image's modules belong to.
    pub kernel_release: String,
    /// Vendor update key (Ed25519 public key, base64).
    pub vendor_key: String,
    /// Slot name (`a`, `b`) → block device.
    pub slots: BTreeMap<String, PathBuf>,
    /// Size of one slot in bytes.
    pub slot_bytes: u64,
    /// The boot-state file shared with init.
    pub boot_state: PathBuf,
    /// Where downloads are kept until installed.
    pub work_dir: PathBuf,
}

/// The boot-state file, parsed. Unknown keys are kept and written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootState(pub BTreeMap<String, String>);

impl BootState {
    /// Parses `key=value` lines (blank lines and `#` comments ignored).
    pub fn parse(text: &str) -> BootState {
        BootState(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    /// The text form (sorted keys; init reads it with a plain `while read` loop).
    pub fn render(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    /// A value, empty when absent.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", String::as_str)
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_string(), value.into());
    }

    /// Puts `slot` on trial for [`TRIAL_BOOTS`] boots.
    pub fn start_trial(&mut self, slot: &str, version: u64, update_id: &str) {
        self.set("trial", slot);
        self.set("tries", TRIAL_BOOTS.to_string());
        self.set("trial_version", version.to_string());
        self.set("trial_update", update_id);
        self.set("rolled_back", "");
    }

    /// Whether this boot runs a slot on trial.
    pub fn on_trial(&self) -> bool {
        !self.get("trial").is_empty() && self.get("trial") == self.get("booted")
    }

    /// Makes the booted trial slot the active one.
    pub fn confirm(&mut self) {
        let booted = self.get("booted").to_string();
        self.set("active", booted);
        for key in ["trial", "trial_version", "trial_update"] {
            self.set(key, "");
        }
        self.set("tries", "0");
    }

    /// The slot that is not booted now.
    pub fn inactive(&self) -> &'static str {
        if self.get("booted") == "b" {
            "a"
        } else {
            "b"
        }
    }
}

fn read_state(path: &Path) -> anyhow::Result<BootState> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(BootState::parse(&text))
}

fn write_state(path: &Path, state: &BootState) -> anyhow::Result<()> {
    crate::identity::write_atomic(path, state.render().as_bytes(), 0o644)
}

/// Reports waiting to go up the channel, and the wake-up of the channel loop.
static OUTBOX: Mutex<VecDeque<UpdateReport>> = Mutex::new(VecDeque::new());
static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static AGENT: OnceLock<Agent> = OnceLock::new();

struct Agent {
    config: ImageConfig,
    vendor_key: ed25519_dalek::VerifyingKey,
    tls: Arc<rustls::ClientConfig>,
    /// Set by the channel once the control plane answered on this boot.
    channel_up: AtomicBool,
    /// One installation at a time.
    busy: AtomicBool,
}

fn queue(report: UpdateReport) {
    if let Ok(mut q) = OUTBOX.lock() {
        q.push_back(report);
    }
    WAKE.notify_one();
}

/// Waits for reports to send and returns them as channel messages.
pub async fn outgoing() -> Vec<EdgeMessage> {
    loop {
        let drained: Vec<UpdateReport> = match OUTBOX.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        if !drained.is_empty() {
            return drained
                .into_iter()
                .map(|report| EdgeMessage::UpdateStatus { report })
                .collect();
        }
        WAKE.notified().await;
    }
}

/// Called by the channel after `hello`: reports the running image (nothing off the image).
pub fn session_started() {
    let Some(agent) = AGENT.get() else { return };
    agent.channel_up.store(true, Ordering::SeqCst);
    let state = read_state(&agent.config.boot_state).unwrap_or_default();
    queue(agent.report(None, UpdateState::Running, None, String::new(), &state));
}

impl Agent {
    fn report(
        &self,
        update_id: Option<String>,
        state: UpdateState,
        version: Option<u64>,
        detail: String,
        boot: &BootState,
    ) -> UpdateReport {
        UpdateReport {
            update_id,
            state,
            running_version: self.config.version,
            slot: boot.get("booted").to_string(),
            version,
            detail: detail.chars().take(400).collect(),
        }
    }

    fn running(&self) -> RunningImage {
        RunningImage {
            version: self.config.version,
            arch: self.config.arch.clone(),
            kernel_release: self.config.kernel_release.clone(),
            slot_bytes: self.config.slot_bytes,
        }
    }
}

/// The audit event of an update step.
fn update_event(edge: &Edge, kind: EventKind, reason: Reason, detail: String) -> AuditEvent {
    AuditEvent {
        seq: 0,
        prev_hash: String::new(),
        ts_ms: now_ms(),
        tenant_id: edge.identity.tenant_id.clone(),
        device_id: edge.identity.device_id.clone(),
        kind,
        decision: if reason == Reason::Allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason,
        reference: new_reference(),
        policy_version: edge.policy.snapshot().map_or(0, |p| p.version),
        identity: None,
        http: None,
        detail: Some(detail),
        waf: None,
        quic: None,
        tunnel: None,
    }
}

fn audit(edge: &Edge, kind: EventKind, reason: Reason, detail: String) {
    if let Err(err) = edge.spool.append(update_event(edge, kind, reason, detail)) {
        tracing::error!(%err, "could not audit an update step");
    }
}

/// Loads the image description; `Ok(None)` off the appliance image.
///
/// # Errors
/// When the file exists but is damaged.
pub fn load_config() -> anyhow::Result<Option<ImageConfig>> {
    let path = std::env::var_os("SASE_EDGE_IMAGE_CONFIG")
        .map_or_else(|| PathBuf::from(IMAGE_CONFIG), PathBuf::from);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is damaged", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Starts the agent on the appliance image: records a rollback init made, and confirms a
/// trial slot once healthy. Does nothing elsewhere.
///
/// # Errors
/// When the image description is damaged.
pub fn start(edge: Arc<Edge>, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    let Some(config) = load_config()? else {
        return Ok(());
    };
    let vendor_key = sase_model::bundle::verifying_key_from_b64(&config.vendor_key)
        .map_err(|e| anyhow!("vendor key in the image description: {e}"))?;
    let agent = Agent {
        config,
        vendor_key,
        tls,
        channel_up: AtomicBool::new(false),
        busy: AtomicBool::new(false),
    };
    let agent = AGENT.get_or_init(|| agent);
    let path = agent.config.boot_state.clone();
    let mut state = read_state(&path)?;
    println!(
        "sase-image: version={} ({}) slot={} active={} trial={}",
        agent.config.version,
        agent.config.label,
        state.get("booted"),
        state.get("active"),
        if state.on_trial() { "yes" } else { "no" }
    );
    let rolled_back = state.get("rolled_back").to_string();
    if !rolled_back.is_empty() {
        let version = state.get("trial_version").parse::<u64>().ok();
        let update_id = Some(state.get("trial_update").to_string()).filter(|s| !s.is_empty());
        let detail = format!(
            "slot {rolled_back} (version {}) did not confirm healthy in time; running slot {} (version {}) again",
            version.map_or("?".into(), |v| v.to_string()),
            state.get("booted"),
            agent.config.version
        );
        println!("sase-image: ROLLED BACK: {detail}");
        if let Some(v) = version {
            remember_failed(&agent.config.work_dir, v);
        }
        audit(
            &edge,
            EventKind::UpdateRolledBack,
            Reason::UpdateUnhealthy,
            detail.clone(),
        );
        queue(agent.report(update_id, UpdateState::RolledBack, version, detail, &state));
        for key in ["rolled_back", "trial_version", "trial_update"] {
            state.set(key, "");
        }
        write_state(&path, &state)?;
    }
    if state.on_trial() {
        tokio::spawn(confirm_when_healthy(edge.clone()));
    }
    tokio::spawn(console_status(edge, state.get("booted").to_string()));
    Ok(())
}

/// Prints the device's state on the console (the appliance's serial console shows the
/// service's standard output) whenever it changes.
async fn console_status(edge: Arc<Edge>, slot: String) {
    let Some(agent) = AGENT.get() else { return };
    let mut last = None;
    loop {
        let now = (
            agent.channel_up.load(Ordering::SeqCst),
            edge.policy.snapshot().map(|p| p.version),
        );
        if last != Some(now) {
            let state = match now {
                (_, Some(_)) => "enforcing",
                (true, None) => "connected_waiting_for_policy",
                (false, None) => "waiting_for_control_plane",
            };
            println!(
                "sase-edge state: device={} state={state} policy_version={} channel={} image_version={} slot={slot}",
                edge.identity.device_id,
                now.1.map_or("none".to_string(), |v| v.to_string()),
                if now.0 { "up" } else { "down" },
                agent.config.version,
            );
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            last = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Confirms the booted trial slot once the policy is enforced and the channel is up.
async fn confirm_when_healthy(edge: Arc<Edge>) {
    let Some(agent) = AGENT.get() else { return };
    loop {
        if agent.channel_up.load(Ordering::SeqCst) && edge.policy.snapshot().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let path = &agent.config.boot_state;
    let result = read_state(path).and_then(|mut state| {
        let update_id = Some(state.get("trial_update").to_string()).filter(|s| !s.is_empty());
        state.confirm();
        write_state(path, &state)?;
        Ok((state, update_id))
    });
    match result {
        Ok((state, update_id)) => {
            let detail = format!(
                "slot {} (version {}) confirmed healthy and made active",
                state.get("booted"),
                agent.config.version
            );
            println!("sase-image: CONFIRMED {detail}");
            audit(
                &edge,
                EventKind::UpdateConfirmed,
                Reason::Allowed,
                detail.clone(),
            );
            queue(agent.report(
                update_id,
                UpdateState::Confirmed,
                Some(agent.config.version),
                detail,
                &state,
            ));
        }
        Err(err) => tracing::error!("confirming the trial slot failed: {err:#}"),
    }
}

/// Versions that rolled back on this device, one per line in `<work_dir>/failed-versions`.
fn failed_before(work_dir: &Path, version: u64) -> bool {
    std::fs::read_to_string(work_dir.join("failed-versions"))
        .is_ok_and(|t| t.lines().any(|l| l.trim().parse::<u64>() == Ok(version)))
}

fn remember_failed(work_dir: &Path, version: u64) {
    if failed_before(work_dir, version) {
        return;
    }
    let _ = std::fs::create_dir_all(work_dir);
    let path = work_dir.join("failed-versions");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!("{version}\n"));
    if let Err(err) = crate::identity::write_atomic(&path, text.as_bytes(), 0o644) {
        tracing::error!("recording the failed version {version}: {err:#}");
    }
}

/// Handles an offer from the control plane (in the background).
pub fn offered(edge: Arc<Edge>, offer: UpdateOffer) {
    let Some(agent) = AGENT.get() else {
        queue(UpdateReport {
            update_id: Some(offer.id),
            state: UpdateState::Refused,
            running_version: 0,
            slot: String::new(),
            version: Some(offer.version),
            detail: "this edge does not run the appliance image; it cannot install firmware".into(),
        });
        return;
    };
    let state = read_state(&agent.config.boot_state).unwrap_or_default();
    if failed_before(&agent.config.work_dir, offer.version) {
        // Re-offered after it rolled back here (the control plane re-sends open offers after
        // each hello): do not loop through the same broken firmware.
        queue(agent.report(
            Some(offer.id),
            UpdateState::RolledBack,
            Some(offer.version),
            format!(
                "version {} rolled back on this device before; not installing it again",
                offer.version
            ),
            &state,
        ));
        return;
    }
    if offer.version <= agent.config.version
        || state.on_trial()
        || agent.busy.swap(true, Ordering::SeqCst)
    {
        // Already running it (re-offer after a reboot), confirming a trial, or busy.
        if offer.version == agent.config.version && !state.on_trial() {
            queue(agent.report(
                Some(offer.id),
                UpdateState::Confirmed,
                Some(offer.version),
                "already running this version".into(),
                &state,
            ));
        }
        return;
    }
    tokio::spawn(async move {
        let id = offer.id.clone();
        let version = offer.version;
        let outcome = install(agent, &edge, &offer).await;
        agent.busy.store(false, Ordering::SeqCst);
        let state = read_state(&agent.config.boot_state).unwrap_or_default();
        match outcome {
            Ok(()) => {}
            Err(Failure::Refused(err)) => {
                let reason = if err.is_tampering() {
                    Reason::UpdateSignatureInvalid
                } else {
                    Reason::UpdateNotApplicable
                };
                let detail = format!("update {id} (version {version}) refused: {err}");
                println!("sase-image: REFUSED {detail}");
                audit(&edge, EventKind::UpdateRefused, reason, detail.clone());
                queue(agent.report(
                    Some(id),
                    UpdateState::Refused,
                    Some(version),
                    detail,
                    &state,
                ));
            }
            Err(Failure::Local(err)) => {
                let detail = format!("update {id} (version {version}) failed: {err:#}");
                tracing::error!("{detail}");
                queue(agent.report(Some(id), UpdateState::Failed, Some(version), detail, &state));
            }
        }
    });
}

enum Failure {
    Refused(UpdateError),
    Local(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        Failure::Local(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Failure {
        Failure::Local(err.into())
    }
}

impl From<UpdateError> for Failure {
    fn from(err: UpdateError) -> Failure {
        Failure::Refused(err)
    }
}

async fn install(
    agent: &'static Agent,
    edge: &Arc<Edge>,
    offer: &UpdateOffer,
) -> Result<(), Failure> {
    let state = read_state(&agent.config.boot_state)?;
    queue(agent.report(
        Some(offer.id.clone()),
        UpdateState::Downloading,
        Some(offer.version),
        String::new(),
        &state,
    ));
    let limit =
        agent.config.slot_bytes + (PREFIX_BYTES + sase_model::update::MAX_HEADER_BYTES) as u64;
    if offer.size > limit {
        return Err(UpdateError::NotApplicable(format!(
            "bundle of {} bytes is larger than a slot",
            offer.size
        ))
        .into());
    }
    std::fs::create_dir_all(&agent.config.work_dir)
        .with_context(|| format!("creating {}", agent.config.work_dir.display()))?;
    let file = agent.config.work_dir.join("download.bundle");
    download(agent, edge, offer, &file, limit).await?;
    let target_slot = state.inactive();
    let device = agent
        .config
        .slots
        .get(target_slot)
        .cloned()
        .ok_or_else(|| anyhow!("no device for slot {target_slot}"))?;
    let running = agent.running();
    let key = agent.vendor_key;
    let manifest = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || verify_and_write(&file, &key, &running, &device))
            .await
            .map_err(|e| anyhow!("install task: {e}"))??
    };
    let _ = std::fs::remove_file(&file);
    let mut state = read_state(&agent.config.boot_state)?;
    state.start_trial(target_slot, manifest.version, &offer.id);
    write_state(&agent.config.boot_state, &state)?;
    let detail = format!(
        "update {} version {} ({}) verified and written to slot {target_slot}; rebooting into it on trial",
        offer.id, manifest.version, manifest.label
    );
    println!("sase-image: INSTALLED {detail}");
    audit(
        edge,
        EventKind::UpdateInstalled,
        Reason::Allowed,
        detail.clone(),
    );
    queue(agent.report(
        Some(offer.id.clone()),
        UpdateState::Installed,
        Some(manifest.version),
        detail,
        &state,
    ));
    // Give the channel a moment to carry the report and the audit event, then reboot.
    let spool = edge.spool.clone();
    let _ = tokio::task::spawn_blocking(move || spool.sync()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while edge.spool.pending() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    reboot().await?;
    Ok(())
}

async fn download(
    agent: &Agent,
    edge: &Edge,
    offer: &UpdateOffer,
    file: &Path,
    limit: u64,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*agent.tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let base = edge.identity.control_plane_url.trim_end_matches('/');
    let url = format!("{base}/api/edge/updates/{}", offer.id);
    let mut resp = client
        .get(&url)
        .send()
        .await
        .context("downloading the update")?;
    if !resp.status().is_success() {
        bail!("control plane answered {} for {url}", resp.status());
    }
    let mut out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.context("reading the update")? {
        total += chunk.len() as u64;
        if total > limit {
            bail!("download exceeds {limit} bytes");
        }
        out.write_all(&chunk)?;
    }
    out.sync_all()?;
    Ok(())
}

/// Verifies a downloaded bundle and copies its payload to `device`, hashing as it goes; the
/// signature and applicability are checked before a byte is written.
fn verify_and_write(
    file: &Path,
    key: &ed25519_dalek::VerifyingKey,
    running: &RunningImage,
    device: &Path,
) -> Result<UpdateManifest, Failure> {
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut prefix = [0u8; PREFIX_BYTES];
    input
        .read_exact(&mut prefix)
        .map_err(|_| UpdateError::Malformed("shorter than its prefix".into()))?;
    let len = header_len(&prefix)?;
    let mut head = prefix.to_vec();
    head.resize(PREFIX_BYTES + len, 0);
    input
        .read_exact(&mut head[PREFIX_BYTES..])
        .map_err(|_| UpdateError::Malformed("truncated header".into()))?;
    let (signed, _) = decode_header(&head)?;
    let manifest = signed.verify(key)?;
    manifest.check_applicable(running)?;
    // First pass: hash the payload; nothing is written unless it matches.
    let (size, digest) = hash_stream(&mut input, None)?;
    manifest.check_payload(size, &digest)?;
    // Second pass: copy to the slot, hashing again (the file could change in between).
    let mut input = std::fs::File::open(file)?;
    std::io::copy(
        &mut (&mut input).take((PREFIX_BYTES + len) as u64),
        &mut std::io::sink(),
    )?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .with_context(|| format!("opening slot device {}", device.display()))?;
    let (size, digest) = hash_stream(&mut input, Some(&mut out))?;
    out.sync_all().context("syncing the slot")?;
    manifest.check_payload(size, &digest)?;
    Ok(manifest)
}

fn hash_stream(
    input: &mut std::fs::File,
    mut out: Option<&mut std::fs::File>,
) -> anyhow::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&buf[..n]).context("writing the slot")?;
        }
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

async fn reboot() -> anyhow::Result<()> {
    let status = tokio::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .await
        .context("running systemctl reboot")?;
    if !status.success() {
        bail!("systemctl reboot failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_confirm_and_inactive_slot() {
        let mut s = BootState::parse("active=a\nbooted=a\n# comment\n\nfuture=kept\n");
        assert_eq!(s.inactive(), "b");
        assert!(!s.on_trial());
        s.start_trial("b", 2, "upd_1");
        assert_eq!(s.get("tries"), "1");
        assert!(!s.on_trial(), "booted a, trial b: not on trial yet");
        // What init does on the next boot.
        s.set("booted", "b");
        s.set("tries", "0");
        assert!(s.on_trial());
        assert_eq!(s.inactive(), "a");
        s.confirm();
        assert_eq!(s.get("active"), "b");
        assert_eq!(s.get("trial"), "");
        assert!(!s.on_trial());
        let text = s.render();
        assert!(text.contains("future=kept\n"));
        assert_eq!(BootState::parse(&text), s);
    }

    #[test]
    fn verify_and_write_refuses_tampering_before_writing() {
        use sase_model::update::{SignedManifest, PRODUCT};
        let dir = crate::scratch::Scratch::new("update", "stage");
        std::fs::create_dir_all(&dir).expect("dir");
        let payload = vec![7u8; 3000];
        let vendor = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let manifest = UpdateManifest {
            product: PRODUCT.into(),
            arch: "x86_64".into(),
            version: 2,
            label: "v2".into(),
            kernel_release: "k".into(),
            payload_size: payload.len() as u64,
            payload_sha256: hex::encode(Sha256::digest(&payload)),
            created_at_ms: 0,
        };
        let mut bundle = SignedManifest::sign(&manifest, &vendor)
            .expect("sign")
            .encode_prefix()
            .expect("prefix");
        bundle.extend_from_slice(&payload);
        let running = RunningImage {
            version: 1,
            arch: "x86_64".into(),
            kernel_release: "k".into(),
            slot_bytes: 1 << 20,
        };
        let file = dir.join("b.bundle");
        let slot = dir.join("slot");
        std::fs::write(&slot, b"old slot").expect("slot");
        std::fs::write(&file, &bundle).expect("write");
        let got = verify_and_write(&file, &vendor.verifying_key(), &running, &slot);
        assert!(matches!(got, Ok(ref m) if m.version == 2));
        assert_eq!(std::fs::read(&slot).expect("slot"), payload);

        std::fs::write(&slot, b"old slot").expect("slot");
        let mut tampered = bundle.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        std::fs::write(&file, &tampered).expect("write");
        let got = verify_and_write(&file, &vendor.verifying_key(), &running, &slot);
        assert!(matches!(
            got,
            Err(Failure::Refused(UpdateError::PayloadMismatch(_)))
        ));
        assert_eq!(
            std::fs::read(&slot).expect("slot"),
            b"old slot",
            "nothing written"
        );

        let other = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
        std::fs::write(&file, &bundle).expect("write");
        let got = verify_and_write(&file, &other.verifying_key(), &running, &slot);
        assert!(matches!(
            got,
            Err(Failure::Refused(UpdateError::BadSignature))
        ));
        assert_eq!(
            std::fs::read(&slot).expect("slot"),
            b"old slot",
            "nothing written"
        );
    }
}
