//! Least privilege inside the edge process: once `sase-edge run` has opened what needs
//! privileges — the ZTNA tunnel's TUN device (`CAP_NET_ADMIN`) and its UDP socket, the published
//! HTTP/HTTPS listeners (ports below 1024 need `CAP_NET_BIND_SERVICE`) — it drops every
//! capability from the effective, permitted, inheritable and ambient sets (and from the bounding
//! set when it may), and sets `no_new_privs`, so neither the process nor anything it runs can
//! get them back.
//!
//! Capabilities are per thread in Linux and a new thread copies its creator's, so the drop must
//! happen while the process has a single thread: `main` opens the privileged resources and calls
//! [`drop_after_setup`] before the tokio runtime (and the tunnel threads) start, and
//! [`drop_after_setup`] refuses to run when `/proc/self/status` shows more than one thread.
//! One thread is not ours: jemalloc (loaded with libmodsecurity's dependencies, and then the
//! process's allocator) starts a background purge thread from a library constructor, before
//! `main`. [`single_threaded_or_reexec`] therefore executes the binary once more with
//! `MALLOC_CONF=background_thread:false` when it finds other threads at start.
//!
//! The one capability that may be kept is `CAP_NET_BIND_SERVICE`, and only when a socket bound
//! later needs it ([`bind_needs_capability`]): the published QUIC port is bound and closed again
//! as the policy changes (`crate::quic`), and the ops and QUIC-relay listeners are bound after
//! set-up. With all of them on ports at or above `net.ipv4.ip_unprivileged_port_start` (or
//! that sysctl lowered), nothing is kept.
//!
//! Crates: `caps` (capability sets, bounding set; maintained, MIT/Apache-2.0) and `nix`'s
//! `prctl` for `no_new_privs` (already in the graph through `tun-rs`), since the workspace
//! forbids `unsafe` in our own code.

use std::net::SocketAddr;

use caps::{CapSet, Capability, CapsHashSet};

/// Why the capabilities could not be dropped. The edge does not start then.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// Other threads exist; they would keep their capabilities.
    #[error("capabilities can be dropped only while the process has one thread (it has {0}: {1})")]
    Threads(usize, String),
    /// Executing the binary again without jemalloc's background thread failed.
    #[error("re-executing the binary without other threads: {0}")]
    Reexec(std::io::Error),
    /// A capability set could not be read or changed.
    #[error("capability set {set}: {source}")]
    Caps {
        /// Which set.
        set: &'static str,
        /// The error from `caps`.
        source: caps::errors::CapsError,
    },
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
}

/// What [`drop_after_setup`] did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReport {
    /// Capabilities the process held (in any set) and no longer holds, sorted.
    pub dropped: Vec<String>,
    /// Capabilities still effective and permitted, sorted (at most `CAP_NET_BIND_SERVICE`).
    pub kept: Vec<String>,
    /// Number of capabilities taken out of the bounding set (0 when the process lacks
    /// `CAP_SETPCAP`, e.g. under systemd with `CapabilityBoundingSet=`, which then bounds it).
    pub bounding_dropped: usize,
}

fn caps_err(set: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivError {
    move |source| PrivError::Caps { set, source }
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// The number of threads in a `/proc/<pid>/status` text.
pub fn threads_in_status(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Set on the re-executed process, so that it happens once.
const REEXEC_MARK: &str = "SASE_EDGE_REEXEC_SINGLE_THREADED";

fn thread_count() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(threads_in_status)
}

/// The names of this process's threads (`/proc/self/task/*/comm`), for the error message.
fn thread_names() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names.join(", ")
}

/// `MALLOC_CONF` with jemalloc's background thread turned off, keeping what the operator set.
pub fn malloc_conf_without_background_thread(current: Option<&str>) -> String {
    match current.filter(|c| !c.is_empty()) {
        Some(c) => format!("{c},background_thread:false"),
        None => "background_thread:false".to_string(),
    }
}

/// Returns when this process has a single thread (or was already executed again); otherwise
/// executes the same binary with the same arguments and `MALLOC_CONF` asking jemalloc for no
/// background thread (the process keeps its pid), and returns only if that fails. Call it first
/// thing in `main`.
///
/// # Errors
/// The `exec` failed.
pub fn single_threaded_or_reexec() -> Result<(), PrivError> {
    use std::os::unix::process::CommandExt as _;
    if thread_count().is_none_or(|n| n == 1) || std::env::var_os(REEXEC_MARK).is_some() {
        return Ok(());
    }
    let mut args = std::env::args_os();
    // The binary's own path rather than /proc/self/exe, so that the process keeps its name
    // (`comm`, what ps and the journal show).
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let conf = std::env::var("MALLOC_CONF").ok();
    let err = cmd
        .args(args)
        .env(
            "MALLOC_CONF",
            malloc_conf_without_background_thread(conf.as_deref()),
        )
        .env(REEXEC_MARK, "1")
        .exec();
    Err(PrivError::Reexec(err))
}

/// The lowest port an unprivileged process may bind, from the text of
/// `/proc/sys/net/ipv4/ip_unprivileged_port_start` (1024 when absent or unreadable).
pub fn unprivileged_port_start(sysctl: Option<&str>) -> u16 {
    sysctl.and_then(|t| t.trim().parse().ok()).unwrap_or(1024)
}

/// Whether binding any of `addrs` after the drop needs `CAP_NET_BIND_SERVICE`: a fixed port
/// below `start` (port 0 picks an unprivileged port).
pub fn bind_needs_capability(addrs: &[SocketAddr], start: u16) -> bool {
    addrs.iter().any(|a| a.port() != 0 && a.port() < start)
}

/// The running system's `ip_unprivileged_port_start`.
pub fn system_unprivileged_port_start() -> u16 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").ok();
    unprivileged_port_start(text.as_deref())
}

/// Drops every capability but `CAP_NET_BIND_SERVICE` when `keep_bind` (see the module doc) from
/// the effective, permitted, inheritable and ambient sets of this process, drops what it may from
/// the bounding set, and sets `no_new_privs`. Call it once, after the privileged set-up and
/// before any other thread starts.
///
/// # Errors
/// More than one thread, or a set that cannot be changed: the caller must not go on.
pub fn drop_after_setup(keep_bind: bool) -> Result<DropReport, PrivError> {
    if let Some(n) = thread_count().filter(|&n| n != 1) {
        return Err(PrivError::Threads(n, thread_names()));
    }
    let mut keep = CapsHashSet::new();
    if keep_bind {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    let mut held = CapsHashSet::new();
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
    ] {
        held.extend(caps::read(None, set).map_err(caps_err(name))?);
    }
    // The bounding set first: that needs CAP_SETPCAP, which is about to go.
    let mut bounding_dropped = 0;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
        .map_err(caps_err("effective"))?
    {
        for cap in caps::read(None, CapSet::Bounding).map_err(caps_err("bounding"))? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("bounding"))?;
                bounding_dropped += 1;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("inheritable"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("permitted"))?;
    let kept: CapsHashSet = keep.intersection(&permitted).copied().collect();
    // Effective must stay a subset of permitted: shrink it first.
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err("effective"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("permitted"))?;
    nix::sys::prctl::set_no_new_privs().map_err(PrivError::NoNewPrivs)?;
    let dropped: CapsHashSet = held.difference(&kept).copied().collect();
    Ok(DropReport {
        dropped: names(&dropped),
        kept: names(&kept),
        bounding_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_is_read_from_status() {
        let status = "Name:\tsase-edge\nUmask:\t0077\nThreads:\t7\nSigQ:\t0/1\n";
        assert_eq!(threads_in_status(status), Some(7));
        assert_eq!(threads_in_status("Name:\tx\n"), None);
    }

    #[test]
    fn later_binds_decide_whether_bind_service_is_kept() {
        assert_eq!(unprivileged_port_start(Some("1024\n")), 1024);
        assert_eq!(unprivileged_port_start(Some("443\n")), 443);
        assert_eq!(unprivileged_port_start(Some("junk")), 1024);
        assert_eq!(unprivileged_port_start(None), 1024);
        let addr = |s: &str| -> SocketAddr { s.parse().expect("address") };
        // QUIC on 443 is re-bound as the policy changes: the capability stays.
        assert!(bind_needs_capability(
            &[addr("0.0.0.0:443"), addr("127.0.0.1:9464")],
            1024
        ));
        // ... unless the sysctl lets anyone bind 443.
        assert!(!bind_needs_capability(&[addr("0.0.0.0:443")], 443));
        // Port 0 and high ports never need it.
        assert!(!bind_needs_capability(
            &[addr("127.0.0.1:0"), addr("127.0.0.1:9464")],
            1024
        ));
        assert!(!bind_needs_capability(&[], 1024));
    }

    #[test]
    fn malloc_conf_keeps_the_operators_settings() {
        assert_eq!(
            malloc_conf_without_background_thread(None),
            "background_thread:false"
        );
        assert_eq!(
            malloc_conf_without_background_thread(Some("")),
            "background_thread:false"
        );
        assert_eq!(
            malloc_conf_without_background_thread(Some("narenas:2")),
            "narenas:2,background_thread:false"
        );
    }

    #[test]
    fn refuses_with_other_threads() {
        // The test harness runs tests on threads of their own: the drop must refuse (and so
        // leave this test process's capabilities alone).
        let extra = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let err = drop_after_setup(false).expect_err("more than one thread");
        assert!(matches!(err, PrivError::Threads(n, _) if n >= 2), "{err}");
        let _ = extra.join();
    }
}
