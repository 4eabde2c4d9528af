//! `sase-connect`: the remote-access client of the SASE edge.
//!
//! * `login <control-plane-url>` — password + TOTP sign-in (`POST /api/ztna/login`); the CA of
//!   the control plane is pinned (`--ca-cert`, copied into the config dir, like the edge's
//!   enrolment); the session token and settings are stored 0600 in the config dir.
//! * `up` — keeps (or creates) the device's WireGuard key, registers the device with its
//!   posture, and runs a userspace WireGuard tunnel (boringtun, [`core::ClientCore`]) on a TUN
//!   device (`tun-rs`) with routes to the allowed resources, in the foreground until `down`.
//! * `down` — asks the running `up` to stop and waits for it.
//! * `status` — edge, handshake age, bytes, allowed and refused resources.
//! * `export-config` — registers the key without posture and prints a standard wg-quick file
//!   for the stock WireGuard apps (basic mode: rules that need posture are withheld).
//!
//! Without root or CAP_NET_ADMIN, `up` says what is missing.

mod core;

use std::io::{BufRead as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _, UdpSocket};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use sase_model::ztna::PostureReport;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::core::{Action, ClientCore};

#[derive(Parser)]
#[command(
    name = "sase-connect",
    version,
    about = "Remote access to the branch through the SASE edge"
)]
struct Cli {
    /// Where the session, the device key and the tunnel status are kept (mode 0700).
    #[arg(long, env = "SASE_CONNECT_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Signs in with password and TOTP and stores the client session.
    Login {
        /// The control plane, e.g. https://cp.example:8443
        url: String,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// User name.
        #[arg(long)]
        user: String,
        /// The site whose edge to connect to.
        #[arg(long)]
        site: String,
        /// The control plane's CA certificate (PEM), pinned.
        #[arg(long)]
        ca_cert: PathBuf,
        /// Environment variable holding the password (else read from standard input).
        #[arg(long, default_value = "SASE_CONNECT_PASSWORD")]
        password_env: String,
        /// The current TOTP code (else SASE_CONNECT_TOTP, else read from standard input).
        #[arg(long)]
        totp: Option<String>,
    },
    /// Registers the device and runs the tunnel (foreground, until `down`).
    Up {
        /// Device name to register.
        #[arg(long, default_value = "sase-connect")]
        device_name: String,
        /// TUN device name.
        #[arg(long, default_value = "sase-c0")]
        tun: String,
    },
    /// Stops the running tunnel.
    Down,
    /// Shows the tunnel: edge, handshake age, bytes, allowed resources.
    Status,
    /// Prints a wg-quick configuration for the stock WireGuard apps (no posture).
    ExportConfig {
        /// Device name to register.
        #[arg(long, default_value = "wireguard-app")]
        device_name: String,
    },
}

/// What `login` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    control_plane: String,
    tenant_id: String,
    username: String,
    site_id: String,
    token: String,
    session_id: String,
    expires_at_ms: i64,
}

fn config_dir(cli: &Cli) -> Result<PathBuf> {
    let dir = match &cli.config_dir {
        Some(d) => d.clone(),
        None => {
            let home =
                std::env::var_os("HOME").ok_or_else(|| anyhow!("set HOME or --config-dir"))?;
            PathBuf::from(home).join(".config/sase-connect")
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn load_session(dir: &Path) -> Result<Session> {
    let text = std::fs::read_to_string(dir.join("session.json")).map_err(|_| {
        anyhow!("not signed in: run `sase-connect login <control-plane-url>` first")
    })?;
    Ok(serde_json::from_str(&text)?)
}

fn http(dir: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(dir.join("ca.pem"))
        .context("the pinned CA (ca.pem) is missing: log in again")?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .timeout(Duration::from_secs(15))
        .build()?)
}

/// Calls the client API; a refusal becomes an error naming its stable code.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value> {
    let mut req = client.request(method, &url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("reaching {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        bail!(
            "refused ({}): {} — {}",
            status.as_u16(),
            value["error"].as_str().unwrap_or("error"),
            value["message"].as_str().unwrap_or("")
        );
    }
    Ok(value)
}

fn read_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn device_key(dir: &Path) -> Result<([u8; 32], String)> {
    let path = dir.join("device.key");
    let private: [u8; 32] = match std::fs::read_to_string(&path) {
        Ok(text) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow!("{} is not a WireGuard private key", path.display()))?,
        Err(_) => {
            let key: [u8; 32] = rand::random();
            write_private(
                &path,
                base64::engine::general_purpose::STANDARD
                    .encode(key)
                    .as_bytes(),
            )?;
            key
        }
    };
    let public =
        boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(private));
    Ok((
        private,
        base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
    ))
}

/// The posture Linux lets us read.
fn posture() -> PostureReport {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os_version = field("VERSION_ID")
        .map(|v| {
            format!(
                "{} {v} (kernel {})",
                field("ID").unwrap_or_default(),
                kernel.trim()
            )
        })
        .unwrap_or_else(|| kernel.trim().to_string());
    PostureReport {
        os: "linux".into(),
        os_version: os_version.chars().take(128).collect(),
        disk_encryption: root_is_encrypted(),
        screen_lock: screen_locks(),
        firewall: firewall_active(),
        client_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// The root file system sits on a dm-crypt (LUKS) device.
fn root_is_encrypted() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some(dev) = mounts
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?, w.next()?))
        })
        .filter(|(_, mp)| *mp == "/")
        .map(|(d, _)| d.to_string())
        .next_back()
    else {
        return false;
    };
    let Ok(real) = std::fs::canonicalize(&dev) else {
        return false;
    };
    let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    std::fs::read_to_string(format!("/sys/block/{name}/dm/uuid"))
        .map(|u| u.starts_with("CRYPT-"))
        .unwrap_or(false)
}

/// A desktop screen locker is enabled (GNOME's setting, when `gsettings` is there).
fn screen_locks() -> bool {
    std::process::Command::new("gsettings")
        .args(["get", "org.gnome.desktop.screensaver", "lock-enabled"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

/// A host firewall has tables loaded (iptables tables, or nf_tables in use).
fn firewall_active() -> bool {
    let iptables = std::fs::read_to_string("/proc/net/ip_tables_names")
        .map(|t| !t.trim().is_empty())
        .unwrap_or(false);
    let nft = std::fs::read_to_string("/sys/module/nf_tables/refcnt")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 0);
    iptables || nft
}

async fn register(
    dir: &Path,
    name: &str,
    with_posture: bool,
) -> Result<(Session, [u8; 32], Value)> {
    let session = load_session(dir)?;
    let (private, public) = device_key(dir)?;
    let client = http(dir)?;
    let mut body = json!({"site_id": session.site_id, "name": name, "public_key": public});
    if with_posture {
        body["posture"] = serde_json::to_value(posture())?;
    }
    let config = call(
        &client,
        reqwest::Method::POST,
        format!("{}/api/ztna/devices", session.control_plane),
        Some(&session.token),
        Some(body),
    )
    .await?;
    Ok((session, private, config))
}

fn b64_32(text: &str) -> Result<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| anyhow!("not a WireGuard key: {text:?}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn open_tun(name: &str, address: std::net::Ipv4Addr) -> Result<tun_rs::SyncDevice> {
    if !Path::new("/dev/net/tun").exists() {
        bail!("the tunnel needs /dev/net/tun (the tun kernel module), which this system lacks");
    }
    match tun_rs::DeviceBuilder::new()
        .name(name.to_string())
        .ipv4(address, 32, None)
        .mtu(1420)
        .build_sync()
    {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "creating the TUN device {name:?} was refused: `sase-connect up` needs root or the \
             CAP_NET_ADMIN capability (run it with sudo, or grant it once: \
             sudo setcap cap_net_admin+ep $(command -v sase-connect)); \
             `sase-connect export-config` works without it ({e})"
        ),
        Err(e) => Err(e).with_context(|| format!("creating the TUN device {name:?}")),
    }
}

fn lock(core: &Mutex<ClientCore>) -> std::sync::MutexGuard<'_, ClientCore> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn carry_out(actions: Vec<Action>, udp: &UdpSocket, tun: &tun_rs::SyncDevice) {
    for a in actions {
        match a {
            Action::Send(d) => {
                let _ = udp.send(&d);
            }
            Action::Deliver(p) => {
                let _ = tun.send(&p);
            }
        }
    }
}

async fn up(dir: &Path, device_name: &str, tun_name: &str) -> Result<()> {
    let (session, private, config) = register(dir, device_name, true).await?;
    let address: std::net::Ipv4Addr = config["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("the control plane gave no IPv4 tunnel address: {config}"))?;
    let edge_key = b64_32(config["edge_public_key"].as_str().unwrap_or_default())?;
    let endpoint: SocketAddr = config["endpoint"]
        .as_str()
        .unwrap_or_default()
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve the edge endpoint"))?;
    let tun = Arc::new(open_tun(tun_name, address)?);
    for net in strings(&config["allowed_ips"]) {
        let ok = std::process::Command::new("ip")
            .args(["route", "replace", &net, "dev", tun_name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("sase-connect: warning: could not route {net} into {tun_name}");
        }
    }
    let udp = Arc::new(UdpSocket::bind(if endpoint.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?);
    udp.connect(endpoint)?;
    let core = Arc::new(Mutex::new(ClientCore::new(private, edge_key, Some(25))));
    carry_out(lock(&core).initiate(Instant::now()), &udp, &tun);
    {
        let (core, udp, tun) = (core.clone(), udp.clone(), tun.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; core::BUF];
            while let Ok(n) = udp.recv(&mut buf) {
                let actions = lock(&core).on_udp(&buf[..n], Instant::now());
                carry_out(actions, &udp, &tun);
            }
        });
    }
    {
        let (core, udp, tun) = (core.clone(), udp.clone(), tun.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; core::BUF];
            while let Ok(n) = tun.recv(&mut buf) {
                let actions = lock(&core).on_tun(&buf[..n], Instant::now());
                carry_out(actions, &udp, &tun);
            }
        });
    }
    let stop = dir.join("down.request");
    let _ = std::fs::remove_file(&stop);
    write_private(
        &dir.join("up.pid"),
        std::process::id().to_string().as_bytes(),
    )?;
    println!(
        "sase-connect up: device={} address={address} edge={endpoint} allowed={}",
        config["device_id"].as_str().unwrap_or_default(),
        strings(&config["allowed_ips"]).join(",")
    );
    let mut last_status = Instant::now() - Duration::from_secs(2);
    loop {
        let now = Instant::now();
        let actions = lock(&core).on_timer(now);
        carry_out(actions, &udp, &tun);
        if now.duration_since(last_status) >= Duration::from_secs(1) {
            last_status = now;
            let figures = lock(&core).figures(now);
            let status = json!({
                "state": "up", "pid": std::process::id(), "edge": endpoint.to_string(),
                "edge_public_key": config["edge_public_key"], "address": address.to_string(),
                "device_id": config["device_id"], "user": session.username,
                "session_expires_at_ms": session.expires_at_ms,
                "handshake_age_secs": figures.handshake_age_secs, "rx_bytes": figures.rx_bytes,
                "tx_bytes": figures.tx_bytes, "dropped": figures.dropped,
                "allowed_ips": config["allowed_ips"], "rules": config["rules"],
            });
            write_private(
                &dir.join("status.json"),
                serde_json::to_string_pretty(&status)?.as_bytes(),
            )?;
        }
        if stop.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_file(dir.join("status.json"));
    let _ = std::fs::remove_file(dir.join("up.pid"));
    println!("sase-connect down");
    // The reader threads block in recv: leave the process (the TUN device goes with it).
    std::process::exit(0);
}

fn running(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("up.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = config_dir(&cli)?;
    match &cli.command {
        Command::Login {
            url,
            tenant,
            user,
            site,
            ca_cert,
            password_env,
            totp,
        } => {
            let pem = std::fs::read(ca_cert).with_context(|| format!("{}", ca_cert.display()))?;
            reqwest::Certificate::from_pem(&pem).context("the CA certificate is not PEM")?;
            write_private(&dir.join("ca.pem"), &pem)?;
            let password = match std::env::var(password_env) {
                Ok(p) => p,
                Err(_) => read_line("password: ")?,
            };
            let code = match totp
                .clone()
                .or_else(|| std::env::var("SASE_CONNECT_TOTP").ok())
            {
                Some(c) => c,
                None => read_line("TOTP code: ")?,
            };
            let url = url.trim_end_matches('/').to_string();
            let answer = call(
                &http(&dir)?,
                reqwest::Method::POST,
                format!("{url}/api/ztna/login"),
                None,
                Some(json!({"tenant_id": tenant, "username": user, "password": password, "totp": code})),
            )
            .await?;
            let session = Session {
                control_plane: url,
                tenant_id: tenant.clone(),
                username: user.clone(),
                site_id: site.clone(),
                token: answer["token"].as_str().unwrap_or_default().to_string(),
                session_id: answer["session_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                expires_at_ms: answer["expires_at_ms"].as_i64().unwrap_or_default(),
            };
            write_private(
                &dir.join("session.json"),
                serde_json::to_string_pretty(&session)?.as_bytes(),
            )?;
            println!(
                "signed in as {user}: session {} until {} (Unix ms)",
                session.session_id, session.expires_at_ms
            );
        }
        Command::Up { device_name, tun } => {
            if let Some(pid) = running(&dir) {
                bail!("already up (pid {pid}); `sase-connect down` first");
            }
            up(&dir, device_name, tun).await?;
        }
        Command::Down => {
            let Some(pid) = running(&dir) else {
                println!("not up");
                return Ok(());
            };
            write_private(&dir.join("down.request"), b"down")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while running(&dir).is_some() {
                if Instant::now() > deadline {
                    bail!("the tunnel (pid {pid}) did not stop within 10 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            println!("down");
        }
        Command::Status => match (
            running(&dir),
            std::fs::read_to_string(dir.join("status.json")),
        ) {
            (Some(_), Ok(text)) => println!("{text}"),
            _ => println!("{}", json!({"state": "down"})),
        },
        Command::ExportConfig { device_name } => {
            let (_, private, config) = register(&dir, device_name, false).await?;
            println!("# sase-connect export-config: basic mode (no posture; rules that need it are withheld)");
            println!("[Interface]");
            println!(
                "PrivateKey = {}",
                base64::engine::general_purpose::STANDARD.encode(private)
            );
            println!(
                "Address = {}/32",
                config["address"].as_str().unwrap_or_default()
            );
            println!();
            println!("[Peer]");
            println!(
                "PublicKey = {}",
                config["edge_public_key"].as_str().unwrap_or_default()
            );
            println!(
                "Endpoint = {}",
                config["endpoint"].as_str().unwrap_or_default()
            );
            println!(
                "AllowedIPs = {}",
                strings(&config["allowed_ips"]).join(", ")
            );
            println!("PersistentKeepalive = 25");
        }
    }
    Ok(())
}
