//! Child-process helpers for end-to-end drivers: start a service with its
//! output captured in a log file, wait for it to become ready by watching the
//! log or probing its TCP port, and make sure it is stopped (SIGTERM, then
//! SIGKILL) when the handle is dropped.
//!
//! All waits here are readiness checks with a deadline, never fixed sleeps:
//! they poll every [`POLL_INTERVAL`] and fail with the tail of the log so a
//! broken start-up is diagnosable from the test output alone.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often readiness checks poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long [`ManagedChild::terminate`] waits after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// Number of log lines included in readiness-failure errors.
pub const TAIL_LINES: usize = 40;
/// Prefix of the marker line [`spawn_logged`] writes before starting a
/// child; log waits never match such lines (they contain the command line).
pub const MARKER_PREFIX: &str = "=== starting ";

/// A child process whose stdout and stderr go to a log file, terminated on drop.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    log_start: u64,
}

/// Starts `cmd` with stdin closed and stdout+stderr appended to `log_path`.
///
/// A `=== starting NAME: COMMAND ===` marker line ([`MARKER_PREFIX`]) is
/// appended first. The
/// returned handle sends SIGTERM (then SIGKILL after [`TERM_GRACE`]) when
/// dropped.
pub fn spawn_logged(cmd: &mut Command, name: &str, log_path: &Path) -> Result<ManagedChild> {
    if let Some(parent) = log_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("creating log directory {}", parent.display()))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening log {}", log_path.display()))?;
    writeln!(log, "{MARKER_PREFIX}{name}: {cmd:?} ===")
        .with_context(|| format!("writing {}", log_path.display()))?;
    // Child-scoped waits start after the marker line.
    let log_start = log
        .metadata()
        .with_context(|| format!("stat {}", log_path.display()))?
        .len();
    let stderr = log
        .try_clone()
        .with_context(|| format!("duplicating handle to {}", log_path.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("spawning {name}: {cmd:?}"))?;
    Ok(ManagedChild {
        name: name.to_owned(),
        child: Some(child),
        log_path: log_path.to_owned(),
        log_start,
    })
}

impl ManagedChild {
    /// The name given to [`spawn_logged`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file the child writes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Byte offset of the log file when this child was started; output before
    /// it belongs to earlier runs.
    pub fn log_start(&self) -> u64 {
        self.log_start
    }

    /// The OS process id, or `None` once the child has been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Mutable access to the underlying [`Child`] (`None` once reaped).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Returns the exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c
                .try_wait()
                .with_context(|| format!("polling {}", self.name)),
            None => bail!("{} was already terminated", self.name),
        }
    }

    /// Like [`wait_for_log_line`], but only looks at output written since this
    /// child started and fails immediately if the child exits first.
    pub fn wait_for_log_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = find_line(&self.log_path, self.log_start, needle)? {
                return Ok(line);
            }
            if let Some(status) = self.try_wait()? {
                // The line may have been written just before exiting.
                if let Some(line) = find_line(&self.log_path, self.log_start, needle)? {
                    return Ok(line);
                }
                bail!(
                    "{} exited ({status}) before logging {needle:?}; last lines of {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    tail_lines(&self.log_path, TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {} to log {needle:?}; last lines of {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    tail_lines(&self.log_path, TAIL_LINES)
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGTERM, waits up to [`TERM_GRACE`] for exit, then SIGKILLs.
    /// Returns the exit status. Calling it again is an error.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} was already terminated", self.name))?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // `unsafe_code` is forbidden in this workspace, so signal through kill(1).
        let term_sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if term_sent {
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
                thread::sleep(POLL_INTERVAL);
            }
        }
        // SIGKILL; an error here means it exited in the meantime.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping {}", self.name))
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
    }
}

/// Reads `path` from byte `offset` and returns the first complete line
/// containing `needle`, if any. A missing file counts as empty.
fn find_line(path: &Path, offset: u64, needle: &str) -> Result<Option<String>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let tail = &bytes[start..];
    // Only complete lines: a line still being written could be truncated.
    let complete = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => &tail[..end],
        None => return Ok(None),
    };
    Ok(String::from_utf8_lossy(complete)
        .lines()
        .find(|l| l.contains(needle) && !l.starts_with(MARKER_PREFIX))
        .map(|l| l.trim_end_matches('\r').to_owned()))
}

/// Polls `log_path` every [`POLL_INTERVAL`] until a complete line containing
/// `needle` appears and returns that line (without the newline). Marker
/// lines written by [`spawn_logged`] are skipped.
///
/// On timeout the error contains the last [`TAIL_LINES`] lines of the log.
/// The whole file is searched; use [`ManagedChild::wait_for_log_line`] to
/// ignore output from earlier runs appended to the same log.
pub fn wait_for_log_line(log_path: &Path, needle: &str, timeout: Duration) -> Result<String> {
    wait_for_log_line_from(log_path, 0, needle, timeout)
}

/// [`wait_for_log_line`] considering only bytes at or after `offset`.
pub fn wait_for_log_line_from(
    log_path: &Path,
    offset: u64,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = find_line(log_path, offset, needle)? {
            return Ok(line);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {timeout:?} waiting for {needle:?} in {}; last lines:\n{}",
                log_path.display(),
                tail_lines(log_path, TAIL_LINES)
            );
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Polls until a TCP connection to `addr` succeeds (every [`POLL_INTERVAL`]).
///
/// `addr` may be anything [`ToSocketAddrs`] accepts (`"127.0.0.1:9000"`,
/// a [`SocketAddr`], ...); resolution failures are retried until the deadline.
pub fn wait_for_tcp<A: ToSocketAddrs + std::fmt::Debug>(addr: A, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = String::from("no attempt made");
    loop {
        match addr.to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                for a in &addrs {
                    let remaining = deadline
                        .saturating_duration_since(Instant::now())
                        .max(POLL_INTERVAL);
                    match TcpStream::connect_timeout(a, remaining.min(Duration::from_secs(1))) {
                        Ok(_) => return Ok(()),
                        Err(e) => last_err = format!("{a}: {e}"),
                    }
                }
                if addrs.is_empty() {
                    last_err = "resolved to no addresses".to_owned();
                }
            }
            Err(e) => last_err = format!("resolving: {e}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for TCP {addr:?} to accept ({last_err})");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The last `n` lines of the file at `path` (lossy UTF-8), or a note saying
/// why it could not be read. Intended for error messages.
pub fn tail_lines(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "sase-testkit-{tag}-{}-{:?}.log",
            std::process::id(),
            thread::current().id()
        ))
    }

    #[test]
    fn waits_for_line_and_terminates_on_drop() {
        let log = temp_log("spawn");
        let _ = fs::remove_file(&log);
        // An old run's output must not satisfy the child-scoped wait.
        fs::write(&log, "ready old-run\n").expect("seed log");
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "echo 'ready now'; echo oops >&2; exec sleep 30"]),
            "sleeper",
            &log,
        )
        .expect("spawn");
        let line = child
            .wait_for_log_line("ready", Duration::from_secs(10))
            .expect("ready line");
        assert_eq!(line, "ready now");
        wait_for_log_line(&log, "oops", Duration::from_secs(10)).expect("stderr captured");
        // The marker line (which contains the command text) never matches.
        assert!(wait_for_log_line(&log, "exec sleep", Duration::from_millis(60)).is_err());
        assert_eq!(
            wait_for_log_line(&log, "ready", Duration::from_secs(1)).expect("whole file"),
            "ready old-run"
        );

        let pid = child.id().expect("pid");
        let started = Instant::now();
        drop(child);
        assert!(started.elapsed() < TERM_GRACE, "SIGTERM should suffice");
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("kill -0")
            .success();
        assert!(!alive, "child {pid} still alive after drop");
        let _ = fs::remove_file(&log);
    }

    #[test]
    fn sigkill_after_grace_when_sigterm_ignored() {
        let log = temp_log("stubborn");
        let _ = fs::remove_file(&log);
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "trap '' TERM; echo armed; while :; do sleep 1; done"]),
            "stubborn",
            &log,
        )
        .expect("spawn");
        child
            .wait_for_log_line("armed", Duration::from_secs(10))
            .expect("armed");
        let started = Instant::now();
        let status = child.terminate().expect("terminate");
        assert!(!status.success());
        assert!(started.elapsed() >= TERM_GRACE);
        assert!(child.terminate().is_err());
        let _ = fs::remove_file(&log);
    }

    #[test]
    fn early_exit_and_timeout_report_log_tail() {
        let log = temp_log("exit");
        let _ = fs::remove_file(&log);
        let mut child = spawn_logged(
            Command::new("sh").args(["-c", "echo boom-diagnostic; exit 3"]),
            "crasher",
            &log,
        )
        .expect("spawn");
        let err = child
            .wait_for_log_line("never", Duration::from_secs(10))
            .expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(msg.contains("exited"), "{msg}");
        assert!(msg.contains("boom-diagnostic"), "{msg}");

        let err = wait_for_log_line(&log, "never", Duration::from_millis(100))
            .expect_err("must time out");
        assert!(format!("{err:#}").contains("boom-diagnostic"));
        let _ = fs::remove_file(&log);
    }

    #[test]
    fn partial_line_is_not_matched() {
        let log = temp_log("partial");
        fs::write(&log, "listening on http://127.0").expect("write");
        assert!(wait_for_log_line(&log, "listening", Duration::from_millis(60)).is_err());
        fs::write(&log, "listening on http://127.0.0.1:1\n").expect("write");
        assert_eq!(
            wait_for_log_line(&log, "listening", Duration::from_millis(60)).expect("line"),
            "listening on http://127.0.0.1:1"
        );
        let _ = fs::remove_file(&log);
    }

    #[test]
    fn tcp_readiness() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        wait_for_tcp(addr, Duration::from_secs(5)).expect("listening");
        drop(listener);
        assert!(wait_for_tcp(addr, Duration::from_millis(100)).is_err());
    }
}
