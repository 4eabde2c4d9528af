//! The audit spool: every event the edge produces is linked into the device's hash chain and
//! appended to a segment file on disk *before* the request it describes is answered, and is
//! deleted only after the control plane acknowledged it.
//!
//! Segments are JSON-lines files `seg-<first seq>.jsonl` of at most [`SEGMENT_EVENTS`] events;
//! each line is the event's canonical JSON, the bytes its chain hash covers (serialised once).
//! A write is one `write(2)` of a whole line, so a killed process leaves at most a torn last
//! line, which [`Spool::open`] cuts off. The chain head (last seq and hash) is recovered from the
//! last line on disk; the newest segment is never deleted so the head is always there. Data
//! reach the page cache at once (surviving a process crash) and are fsynced by
//! [`Spool::sync`], which the daemon calls periodically (surviving power loss up to that
//! interval). The fsync runs outside the lock the writers take: it can take milliseconds, and
//! every request's audit append waits for that lock.
//!
//! The spool is bounded ([`SpoolBound`]): when it holds `max_pending` unacknowledged events
//! (the control plane is away too long), ordinary events are no longer written. What happens
//! then is configured ([`WhenFull`]): `alert` keeps serving and counts the events it could not
//! record; `fail_closed` refuses requests (nothing unrecorded happens). Either way the chain
//! itself says so: a `spool_full` event is written when the bound is hit and a
//! `spool_recovered` event, with how many events were dropped or requests refused and over
//! which time span, once acknowledgements made room again. These two logging-health events
//! are always written (two per episode), so the trail never has a silent hole, and the
//! control plane raises an alert for each.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sase_model::audit::{Decision, EventKind};
use sase_model::canonical::to_canonical_json;
use sase_model::{AuditEvent, Reason, GENESIS_HASH};

/// Events per segment file.
pub const SEGMENT_EVENTS: u64 = 1000;

/// Default bound: about 1 GB of spooled events at roughly 500 bytes each.
pub const DEFAULT_MAX_PENDING: u64 = 2_000_000;

/// What the edge does while its spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFull {
    /// Keep serving; events that cannot be recorded are counted and reported in the chain.
    Alert,
    /// Refuse requests (503 `audit_spool_full`) until there is room again.
    FailClosed,
}

impl WhenFull {
    fn as_str(self) -> &'static str {
        match self {
            WhenFull::Alert => "alert",
            WhenFull::FailClosed => "fail_closed",
        }
    }
}

/// How many unacknowledged events the spool holds at most, and what happens beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolBound {
    /// Unacknowledged events at most.
    pub max_pending: u64,
    /// Behaviour when full.
    pub when_full: WhenFull,
}

impl Default for SpoolBound {
    fn default() -> SpoolBound {
        SpoolBound {
            max_pending: DEFAULT_MAX_PENDING,
            when_full: WhenFull::Alert,
        }
    }
}

/// The daemon's options for the spool bound.
#[derive(Debug, Clone, clap::Args)]
pub struct SpoolArgs {
    /// Unacknowledged audit events the spool holds at most (about 500 bytes each on disk).
    #[arg(long = "spool-max-events", env = "SASE_EDGE_SPOOL_MAX_EVENTS", default_value_t = DEFAULT_MAX_PENDING, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: u64,
    /// What to do while the spool is full: `alert` keeps serving and counts what it could not
    /// record; `fail-closed` refuses requests (503) until the control plane catches up.
    #[arg(
        long = "spool-when-full",
        env = "SASE_EDGE_SPOOL_WHEN_FULL",
        value_enum,
        default_value = "alert"
    )]
    pub when_full: WhenFull,
}

impl SpoolArgs {
    /// The bound these options describe.
    pub fn bound(&self) -> SpoolBound {
        SpoolBound {
            max_pending: self.max_events,
            when_full: self.when_full,
        }
    }
}

/// One episode of a full spool.
#[derive(Debug, Clone)]
struct FullEpisode {
    tenant_id: String,
    device_id: String,
    /// Events not recorded (`alert`) or requests refused (`fail_closed`).
    missed: u64,
    first_ts_ms: i64,
    last_ts_ms: i64,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its maximum of unacknowledged events; the event was not written.
    #[error("audit spool full: {limit} unacknowledged events")]
    Full {
        /// The bound.
        limit: u64,
        /// Whether the edge refuses requests while full.
        fail_closed: bool,
    },
    /// Disk I/O failed.
    #[error("audit spool I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A spooled line does not parse.
    #[error("audit spool file {path} is damaged at line {line}: {why}")]
    Damaged {
        /// File.
        path: String,
        /// 1-based line.
        line: usize,
        /// Parser message.
        why: String,
    },
}

#[derive(Debug)]
struct Segment {
    first: u64,
    last: u64,
    path: PathBuf,
}

struct Inner {
    dir: PathBuf,
    /// Sequence number and hash of the newest event in the chain (`(0, GENESIS_HASH)` when none).
    head_seq: u64,
    head_hash: String,
    /// The segment being appended to (shared with [`Spool::sync`], which syncs it unlocked).
    file: Option<Arc<File>>,
    /// Segments closed by a rotation since the last [`Spool::sync`], which syncs them too.
    unsynced: Vec<Arc<File>>,
    segments: VecDeque<Segment>,
    acked: u64,
    bound: SpoolBound,
    full: Option<FullEpisode>,
}

/// The on-disk spool (shared by request handlers and the uploader).
pub struct Spool {
    inner: Mutex<Inner>,
    appended: tokio::sync::Notify,
    /// [`Spool::refusing`] as of the last change of the counters or the bound: every request
    /// asks, so it reads an atomic instead of taking the lock the writers hold.
    refusing: AtomicBool,
}

fn health_template() -> AuditEvent {
    AuditEvent {
        seq: 0,
        prev_hash: String::new(),
        ts_ms: 0,
        tenant_id: String::new(),
        device_id: String::new(),
        kind: EventKind::SpoolFull,
        decision: Decision::Deny,
        reason: Reason::AuditSpoolFull,
        reference: String::new(),
        policy_version: 0,
        identity: None,
        http: None,
        detail: None,
        waf: None,
        quic: None,
        tunnel: None,
    }
}

/// A logging-health event about the spool, for the device and time of `like`.
fn health_event(like: &AuditEvent, kind: EventKind, detail: String) -> AuditEvent {
    use rand::RngCore as _;
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    AuditEvent {
        ts_ms: like.ts_ms,
        tenant_id: like.tenant_id.clone(),
        device_id: like.device_id.clone(),
        kind,
        decision: match kind {
            EventKind::SpoolRecovered => Decision::Allow,
            _ => Decision::Deny,
        },
        reason: Reason::AuditSpoolFull,
        reference: format!("spool-{}", hex::encode(id)),
        policy_version: like.policy_version,
        detail: Some(detail),
        ..health_template()
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.jsonl"))
}

fn read_segment(path: &Path) -> Result<Vec<AuditEvent>, SpoolError> {
    let reader = BufReader::new(File::open(path)?);
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|e| SpoolError::Damaged {
            path: path.display().to_string(),
            line: i + 1,
            why: e.to_string(),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Checks that a segment's events continue the sequence numbers of the segments before it
/// (`expected`: the next number, `None` before the first event): the spool only ever appends
/// `head + 1` and deletes whole segments from the front, so anything else is damage — refused
/// here rather than met later as a wrapped counter or a chain that jumps.
fn check_sequence(
    path: &Path,
    events: &[AuditEvent],
    expected: &mut Option<u64>,
) -> Result<(), SpoolError> {
    for (i, event) in events.iter().enumerate() {
        let fits = match *expected {
            Some(next) => event.seq == next,
            None => event.seq >= 1,
        };
        let next = event.seq.checked_add(1).filter(|_| fits);
        let Some(next) = next else {
            return Err(SpoolError::Damaged {
                path: path.display().to_string(),
                line: i + 1,
                why: match *expected {
                    Some(want) => format!("event {} has seq {}, expected {want}", i + 1, event.seq),
                    None => format!("event {} has seq {}", i + 1, event.seq),
                },
            });
        };
        *expected = Some(next);
    }
    Ok(())
}

/// Cuts a torn (unterminated) last line left by a crash mid-write.
fn repair_tail(path: &Path) -> Result<(), SpoolError> {
    let bytes = std::fs::read(path)?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep != bytes.len() {
        tracing::warn!(path = %path.display(), dropped = bytes.len() - keep, "cutting torn last line of audit spool");
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(keep as u64)?;
        file.sync_all()?;
    }
    Ok(())
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and recovers the chain head.
    ///
    /// # Errors
    /// I/O failures or a damaged segment.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir)?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".jsonl"))
            })
            .collect();
        paths.sort();
        let mut segments = VecDeque::new();
        let mut head = (0, GENESIS_HASH.to_string());
        let mut expected = None;
        for path in paths {
            // A crash tears at most the last line of the newest segment; cutting an
            // unterminated line in any segment also keeps the next append from being glued to
            // it (found by the spool_segments fuzz target: a head segment without its final
            // newline, followed by empty ones). A cut line in an older segment leaves a gap in
            // the sequence, which check_sequence refuses.
            repair_tail(&path)?;
            let events = read_segment(&path)?;
            check_sequence(&path, &events, &mut expected)?;
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                // An empty segment (crash right after rotation) carries nothing.
                std::fs::remove_file(&path)?;
                continue;
            };
            head = (last.seq, last.hash());
            segments.push_back(Segment {
                first: first.seq,
                last: last.seq,
                path,
            });
        }
        let file = match segments.back() {
            Some(seg) if seg.last - seg.first + 1 < SEGMENT_EVENTS => {
                Some(Arc::new(OpenOptions::new().append(true).open(&seg.path)?))
            }
            _ => None,
        };
        let acked = segments
            .front()
            .map_or(head.0, |s| s.first.saturating_sub(1));
        Ok(Spool {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                head_seq: head.0,
                head_hash: head.1,
                file,
                unsynced: Vec::new(),
                segments,
                acked,
                bound: SpoolBound::default(),
                full: None,
            }),
            appended: tokio::sync::Notify::new(),
            refusing: AtomicBool::new(false),
        })
    }

    /// Publishes whether requests must be refused, from the counters under the lock.
    fn publish_refusing(&self, inner: &Inner) {
        let refusing = inner.bound.when_full == WhenFull::FailClosed
            && inner.head_seq.saturating_sub(inner.acked) >= inner.bound.max_pending;
        self.refusing.store(refusing, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links `event` into the chain (filling `seq` and `prev_hash`) and writes it. Returns its
    /// sequence number once the line is in the file.
    ///
    /// # Errors
    /// I/O failure; the chain does not advance and nothing is half-written.
    pub fn append(&self, event: AuditEvent) -> Result<u64, SpoolError> {
        let mut inner = self.lock();
        let pending = inner.head_seq.saturating_sub(inner.acked);
        if pending >= inner.bound.max_pending {
            let bound = inner.bound;
            let episode_starts = inner.full.is_none();
            let episode = inner.full.get_or_insert_with(|| FullEpisode {
                tenant_id: event.tenant_id.clone(),
                device_id: event.device_id.clone(),
                missed: 0,
                first_ts_ms: event.ts_ms,
                last_ts_ms: event.ts_ms,
            });
            episode.missed += 1;
            episode.last_ts_ms = event.ts_ms;
            self.publish_refusing(&inner);
            if episode_starts {
                tracing::error!(
                    limit = bound.max_pending,
                    when_full = bound.when_full.as_str(),
                    "audit spool full: the control plane has not acknowledged events for too long"
                );
                let health = health_event(
                    &event,
                    EventKind::SpoolFull,
                    format!(
                        "pending={pending} limit={} when_full={}",
                        bound.max_pending,
                        bound.when_full.as_str()
                    ),
                );
                Self::write_locked(&mut inner, health)?;
                drop(inner);
                self.appended.notify_one();
            }
            return Err(SpoolError::Full {
                limit: bound.max_pending,
                fail_closed: bound.when_full == WhenFull::FailClosed,
            });
        }
        let seq = Self::write_locked(&mut inner, event)?;
        self.publish_refusing(&inner);
        drop(inner);
        self.appended.notify_one();
        Ok(seq)
    }

    /// Sets the bound (the daemon does this once at start).
    pub fn set_bound(&self, bound: SpoolBound) {
        let mut inner = self.lock();
        inner.bound = bound;
        self.publish_refusing(&inner);
    }

    /// Whether requests must be refused now: the spool is full and configured to fail closed.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }

    fn write_locked(inner: &mut Inner, mut event: AuditEvent) -> Result<u64, SpoolError> {
        event.seq = inner.head_seq + 1;
        event.prev_hash.clone_from(&inner.head_hash);
        // One serialisation per event: the canonical JSON the chain hashes (what
        // `AuditEvent::hash` computes) is also the spooled line — valid JSON that reads back
        // into the same event.
        let mut line = to_canonical_json(&event).map_err(|e| SpoolError::Damaged {
            path: "<new event>".into(),
            line: 0,
            why: e.to_string(),
        })?;
        let hash = sase_model::audit::line_hash(&line);
        line.push(b'\n');
        let rotate = inner
            .segments
            .back()
            .is_none_or(|s| s.last - s.first + 1 >= SEGMENT_EVENTS)
            || inner.file.is_none();
        if rotate {
            let path = segment_path(&inner.dir, event.seq);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if let Some(old) = inner.file.take() {
                // Synced with the current segment by the next `sync`, not here under the lock.
                inner.unsynced.push(old);
            }
            inner.file = Some(Arc::new(file));
            inner.segments.push_back(Segment {
                first: event.seq,
                last: event.seq - 1,
                path,
            });
        }
        if let Some(file) = inner.file.as_deref() {
            let mut file: &File = file;
            file.write_all(&line)?;
        }
        inner.head_seq = event.seq;
        inner.head_hash = hash;
        if let Some(seg) = inner.segments.back_mut() {
            seg.last = event.seq;
        }
        Ok(event.seq)
    }

    /// Up to `max` events with `seq > after`, in order.
    ///
    /// # Errors
    /// I/O failures or a damaged segment.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<AuditEvent>, SpoolError> {
        let paths: Vec<PathBuf> = {
            let inner = self.lock();
            inner
                .segments
                .iter()
                .filter(|s| s.last > after)
                .map(|s| s.path.clone())
                .collect()
        };
        let mut out = Vec::new();
        for path in paths {
            for event in read_segment(&path)? {
                if event.seq > after {
                    out.push(event);
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records that the control plane stored everything up to `seq`; deletes segments that
    /// hold only acknowledged events (never the newest one, which carries the chain head).
    ///
    /// # Errors
    /// I/O failures deleting files.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        let seq = seq.min(inner.head_seq);
        inner.acked = inner.acked.max(seq);
        self.publish_refusing(&inner);
        while inner.segments.len() > 1 && inner.segments.front().is_some_and(|s| s.last <= seq) {
            if let Some(seg) = inner.segments.pop_front() {
                std::fs::remove_file(&seg.path)?;
            }
        }
        // A full episode ends when acknowledgements made room for a tenth of the bound again.
        let pending = inner.head_seq.saturating_sub(inner.acked);
        let room = inner.bound.max_pending - inner.bound.max_pending / 10;
        if pending < room.max(1) {
            if let Some(episode) = inner.full.take() {
                let when_full = inner.bound.when_full;
                tracing::warn!(
                    missed = episode.missed,
                    when_full = when_full.as_str(),
                    "audit spool has room again"
                );
                let what = match when_full {
                    WhenFull::Alert => "dropped",
                    WhenFull::FailClosed => "refused",
                };
                let template = AuditEvent {
                    tenant_id: episode.tenant_id.clone(),
                    device_id: episode.device_id.clone(),
                    ts_ms: episode.last_ts_ms,
                    ..health_template()
                };
                let health = health_event(
                    &template,
                    EventKind::SpoolRecovered,
                    format!(
                        "{what}={} first_ts_ms={} last_ts_ms={} limit={} when_full={}",
                        episode.missed,
                        episode.first_ts_ms,
                        episode.last_ts_ms,
                        inner.bound.max_pending,
                        when_full.as_str()
                    ),
                );
                Self::write_locked(&mut inner, health)?;
                self.publish_refusing(&inner);
                drop(inner);
                self.appended.notify_one();
            }
        }
        Ok(())
    }

    /// Sequence number of the newest event (0 when none).
    pub fn head_seq(&self) -> u64 {
        self.lock().head_seq
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> u64 {
        let inner = self.lock();
        inner.head_seq.saturating_sub(inner.acked)
    }

    /// Flushes written events to stable storage.
    ///
    /// # Errors
    /// I/O failure.
    pub fn sync(&self) -> Result<(), SpoolError> {
        // The lock is held only to pick the files: appends go on while they are synced. What
        // was written before this call is in them, so it is on stable storage when this returns.
        let (rotated, current) = {
            let mut inner = self.lock();
            (std::mem::take(&mut inner.unsynced), inner.file.clone())
        };
        for (i, file) in rotated.iter().enumerate() {
            if let Err(err) = file.sync_data() {
                // Still to be synced: the next call tries them again.
                self.lock().unsynced.extend(rotated[i..].iter().cloned());
                return Err(err.into());
            }
        }
        if let Some(file) = current {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Waits until an event is appended (a permit is kept if none was waiting).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;
    use sase_model::audit::{verify_chain, Decision, EventKind};
    use sase_model::Reason;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            seq: 0,
            prev_hash: String::new(),
            ts_ms: n as i64,
            tenant_id: "t".into(),
            device_id: "d".into(),
            kind: EventKind::HttpRequest,
            decision: Decision::Allow,
            reason: Reason::Allowed,
            reference: format!("r{n}"),
            policy_version: 1,
            identity: None,
            http: None,
            detail: None,
            waf: None,
            quic: None,
            tunnel: None,
        }
    }

    /// A spool opened in `dir` holding the events `0..events`.
    fn spool_with(dir: &Path, events: u64) -> Spool {
        let spool = Spool::open(dir).expect("open");
        for n in 0..events {
            spool.append(event(n)).expect("append");
        }
        spool
    }

    #[test]
    fn events_survive_reopen_and_chain_continues_across_segments() {
        let dir = Scratch::new("spool", "reopen");
        drop(spool_with(&dir, SEGMENT_EVENTS + 10));
        let spool = Spool::open(&dir).expect("reopen");
        assert_eq!(spool.head_seq(), SEGMENT_EVENTS + 10);
        spool.append(event(9999)).expect("append");
        let all = spool.read_after(0, usize::MAX).expect("read");
        assert_eq!(all.len() as u64, SEGMENT_EVENTS + 11);
        verify_chain("d", &all).expect("intact chain");
    }

    #[test]
    fn a_sync_covers_the_segments_closed_by_rotation_since_the_last_one() {
        let dir = Scratch::new("spool", "sync");
        let spool = spool_with(&dir, 2 * SEGMENT_EVENTS + 1);
        // Two segments were closed by rotation, not synced there (under the writers' lock).
        assert_eq!(spool.lock().unsynced.len(), 2);
        spool.sync().expect("sync");
        assert!(spool.lock().unsynced.is_empty());
        spool.append(event(7)).expect("append after a sync");
        let all = spool.read_after(0, usize::MAX).expect("read");
        assert_eq!(all.len() as u64, 2 * SEGMENT_EVENTS + 2);
        verify_chain("d", &all).expect("intact chain");
    }

    #[test]
    fn each_line_is_the_canonical_json_its_successor_links_to() {
        let dir = Scratch::new("spool", "canonical");
        let spool = spool_with(&dir, 3);
        let text = std::fs::read_to_string(segment_path(&dir, 1)).expect("segment");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let events = spool.read_after(0, 10).expect("read");
        for (i, (line, event)) in lines.iter().zip(&events).enumerate() {
            let canonical = to_canonical_json(event).expect("canonical");
            assert_eq!(line.as_bytes(), canonical.as_slice(), "line {i}");
            if let Some(next) = events.get(i + 1) {
                assert_eq!(next.prev_hash, event.hash());
            }
        }
        verify_chain("d", &events).expect("intact chain");
    }

    #[test]
    fn torn_last_line_is_cut_and_the_chain_resumes_from_the_last_whole_event() {
        let dir = Scratch::new("spool", "torn");
        drop(spool_with(&dir, 5));
        let seg = segment_path(&dir, 1);
        let mut file = OpenOptions::new().append(true).open(&seg).expect("seg");
        file.write_all(b"{\"seq\":6,\"prev_h").expect("torn write");
        drop(file);
        let spool = Spool::open(&dir).expect("reopen");
        assert_eq!(spool.head_seq(), 5);
        spool.append(event(6)).expect("append");
        verify_chain("d", &spool.read_after(0, 100).expect("read")).expect("intact");
    }

    #[test]
    fn a_spool_whose_sequence_numbers_jump_or_cannot_continue_is_refused() {
        let dir = Scratch::new("spool", "jump");
        drop(spool_with(&dir, 3));
        let path = segment_path(&dir, 1);
        let text = std::fs::read_to_string(&path).expect("read");
        let jumped = text.replacen("\"seq\":2", "\"seq\":7", 1);
        assert_ne!(jumped, text);
        std::fs::write(&path, jumped).expect("write");
        let err = Spool::open(&dir).err().expect("a jump is refused");
        assert!(err.to_string().contains("has seq 7, expected 2"), "{err}");
        // The last possible number leaves no room for the next event.
        let last = text.replacen("\"seq\":1", &format!("\"seq\":{}", u64::MAX), 1);
        std::fs::write(&path, last).expect("write");
        let err = Spool::open(&dir).err().expect("u64::MAX is refused");
        assert!(err.to_string().contains("is damaged"), "{err}");
        std::fs::write(&path, &text).expect("write");
        assert_eq!(Spool::open(&dir).expect("intact again").head_seq(), 3);
        // The head segment without its final newline, an empty newer one after it: the torn
        // line is cut and the next event continues from the last whole one.
        std::fs::write(&path, text.trim_end()).expect("write");
        std::fs::write(segment_path(&dir, 4), "").expect("write");
        let spool = Spool::open(&dir).expect("torn head segment repaired");
        assert_eq!(spool.head_seq(), 2);
        assert_eq!(spool.append(event(9)).expect("append"), 3);
        assert_eq!(spool.read_after(0, 10).expect("reads back").len(), 3);
    }

    #[test]
    fn ack_deletes_only_fully_acknowledged_older_segments() {
        let dir = Scratch::new("spool", "ack");
        let spool = spool_with(&dir, 2 * SEGMENT_EVENTS + 5);
        spool.ack(SEGMENT_EVENTS + 3).expect("ack");
        let left = spool.read_after(0, usize::MAX).expect("read");
        assert_eq!(left.first().map(|e| e.seq), Some(SEGMENT_EVENTS + 1));
        assert_eq!(spool.pending(), SEGMENT_EVENTS + 2);
        spool.ack(2 * SEGMENT_EVENTS + 5).expect("ack all");
        // The newest segment stays: it carries the chain head.
        assert_eq!(spool.head_seq(), 2 * SEGMENT_EVENTS + 5);
        assert_eq!(spool.pending(), 0);
    }

    #[test]
    fn a_full_spool_in_alert_mode_counts_what_it_drops_and_says_so_in_the_chain() {
        let dir = Scratch::new("spool", "full-alert");
        let spool = Spool::open(&dir).expect("open");
        spool.set_bound(SpoolBound {
            max_pending: 10,
            when_full: WhenFull::Alert,
        });
        for n in 0..10 {
            spool.append(event(n)).expect("room");
        }
        for n in 10..15 {
            match spool.append(event(n)) {
                Err(SpoolError::Full {
                    limit: 10,
                    fail_closed: false,
                }) => {}
                other => panic!("expected full, got {other:?}"),
            }
        }
        assert!(!spool.refusing(), "alert mode keeps serving");
        // Ten events plus one spool_full event (written beyond the bound, once).
        assert_eq!(spool.head_seq(), 11);
        spool.ack(11).expect("ack");
        let all = spool.read_after(0, usize::MAX).expect("read");
        verify_chain("d", &all).expect("intact chain");
        let full = &all[10];
        assert_eq!(full.kind, EventKind::SpoolFull);
        assert_eq!(
            full.detail.as_deref(),
            Some("pending=10 limit=10 when_full=alert")
        );
        let recovered = all.last().expect("recovered event");
        assert_eq!(recovered.kind, EventKind::SpoolRecovered);
        assert_eq!(recovered.seq, 12);
        assert_eq!(
            recovered.detail.as_deref(),
            Some("dropped=5 first_ts_ms=10 last_ts_ms=14 limit=10 when_full=alert")
        );
        // Room again: ordinary events are written.
        spool.append(event(99)).expect("room again");
    }

    #[test]
    fn a_full_spool_in_fail_closed_mode_refuses_until_acknowledged() {
        let dir = Scratch::new("spool", "full-closed");
        let spool = Spool::open(&dir).expect("open");
        spool.set_bound(SpoolBound {
            max_pending: 3,
            when_full: WhenFull::FailClosed,
        });
        for n in 0..3 {
            spool.append(event(n)).expect("room");
        }
        assert!(spool.refusing());
        assert!(matches!(
            spool.append(event(3)),
            Err(SpoolError::Full {
                fail_closed: true,
                ..
            })
        ));
        spool.ack(2).expect("partial ack");
        assert!(
            spool.refusing(),
            "still full: 3 pending incl. the spool_full event"
        );
        spool.ack(4).expect("ack");
        assert!(!spool.refusing());
        let all = spool.read_after(0, usize::MAX).expect("read");
        verify_chain("d", &all).expect("intact chain");
        let recovered = all.last().expect("recovered");
        assert_eq!(recovered.kind, EventKind::SpoolRecovered);
        assert!(recovered
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("refused=1 ")));
    }
}
