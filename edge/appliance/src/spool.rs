//! The audit spool: every event the edge produces is linked into the device's hash chain and
//! appended to a segment file on disk *before* the request it describes is answered, and is
//! deleted only after the control plane acknowledged it.
//!
//! Segments are JSON-lines files `seg-<first seq>.jsonl` of at most [`SEGMENT_EVENTS`] events.
//! A write is one `write(2)` of a whole line, so a killed process leaves at most a torn last
//! line, which [`Spool::open`] cuts off. The chain head (last seq and hash) is recovered from the
//! last line on disk; the newest segment is never deleted so the head is always there. Data
//! reach the page cache at once (surviving a process crash) and are fsynced by
//! [`Spool::sync`], which the daemon calls periodically (surviving power loss up to that
//! interval).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sase_model::audit::ChainWriter;
use sase_model::{AuditEvent, GENESIS_HASH};

/// Events per segment file.
pub const SEGMENT_EVENTS: u64 = 1000;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
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
    writer: ChainWriter,
    file: Option<File>,
    segments: VecDeque<Segment>,
    acked: u64,
}

/// The on-disk spool (shared by request handlers and the uploader).
pub struct Spool {
    inner: Mutex<Inner>,
    appended: tokio::sync::Notify,
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
        let count = paths.len();
        for (i, path) in paths.into_iter().enumerate() {
            if i + 1 == count {
                repair_tail(&path)?;
            }
            let events = read_segment(&path)?;
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
                Some(OpenOptions::new().append(true).open(&seg.path)?)
            }
            _ => None,
        };
        let acked = segments
            .front()
            .map_or(head.0, |s| s.first.saturating_sub(1));
        Ok(Spool {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                writer: ChainWriter::resume(head.0, head.1),
                file,
                segments,
                acked,
            }),
            appended: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Links `event` into the chain (filling `seq` and `prev_hash`) and writes it. Returns its
    /// sequence number once the line is in the file.
    ///
    /// # Errors
    /// I/O failure; the chain does not advance and nothing is half-written.
    pub fn append(&self, mut event: AuditEvent) -> Result<u64, SpoolError> {
        let mut inner = self.lock();
        let mut probe = inner.writer.clone();
        probe.link(&mut event);
        let mut line = serde_json::to_vec(&event).map_err(|e| SpoolError::Damaged {
            path: "<new event>".into(),
            line: 0,
            why: e.to_string(),
        })?;
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
                let _ = old.sync_data();
            }
            inner.file = Some(file);
            inner.segments.push_back(Segment {
                first: event.seq,
                last: event.seq - 1,
                path,
            });
        }
        if let Some(file) = inner.file.as_mut() {
            file.write_all(&line)?;
        }
        inner.writer = probe;
        if let Some(seg) = inner.segments.back_mut() {
            seg.last = event.seq;
        }
        drop(inner);
        self.appended.notify_one();
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
        let seq = seq.min(inner.writer.next_seq() - 1);
        inner.acked = inner.acked.max(seq);
        while inner.segments.len() > 1 && inner.segments.front().is_some_and(|s| s.last <= seq) {
            if let Some(seg) = inner.segments.pop_front() {
                std::fs::remove_file(&seg.path)?;
            }
        }
        Ok(())
    }

    /// Sequence number of the newest event (0 when none).
    pub fn head_seq(&self) -> u64 {
        self.lock().writer.next_seq() - 1
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> u64 {
        let inner = self.lock();
        (inner.writer.next_seq() - 1).saturating_sub(inner.acked)
    }

    /// Flushes written events to stable storage.
    ///
    /// # Errors
    /// I/O failure.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let inner = self.lock();
        if let Some(file) = inner.file.as_ref() {
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
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sase-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn events_survive_reopen_and_chain_continues_across_segments() {
        let dir = temp_dir("reopen");
        {
            let spool = Spool::open(&dir).expect("open");
            for n in 0..(SEGMENT_EVENTS + 10) {
                spool.append(event(n)).expect("append");
            }
        }
        let spool = Spool::open(&dir).expect("reopen");
        assert_eq!(spool.head_seq(), SEGMENT_EVENTS + 10);
        spool.append(event(9999)).expect("append");
        let all = spool.read_after(0, usize::MAX).expect("read");
        assert_eq!(all.len() as u64, SEGMENT_EVENTS + 11);
        verify_chain("d", &all).expect("intact chain");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_last_line_is_cut_and_the_chain_resumes_from_the_last_whole_event() {
        let dir = temp_dir("torn");
        {
            let spool = Spool::open(&dir).expect("open");
            for n in 0..5 {
                spool.append(event(n)).expect("append");
            }
        }
        let seg = segment_path(&dir, 1);
        let mut file = OpenOptions::new().append(true).open(&seg).expect("seg");
        file.write_all(b"{\"seq\":6,\"prev_h").expect("torn write");
        drop(file);
        let spool = Spool::open(&dir).expect("reopen");
        assert_eq!(spool.head_seq(), 5);
        spool.append(event(6)).expect("append");
        verify_chain("d", &spool.read_after(0, 100).expect("read")).expect("intact");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ack_deletes_only_fully_acknowledged_older_segments() {
        let dir = temp_dir("ack");
        let spool = Spool::open(&dir).expect("open");
        for n in 0..(2 * SEGMENT_EVENTS + 5) {
            spool.append(event(n)).expect("append");
        }
        spool.ack(SEGMENT_EVENTS + 3).expect("ack");
        let left = spool.read_after(0, usize::MAX).expect("read");
        assert_eq!(left.first().map(|e| e.seq), Some(SEGMENT_EVENTS + 1));
        assert_eq!(spool.pending(), SEGMENT_EVENTS + 2);
        spool.ack(2 * SEGMENT_EVENTS + 5).expect("ack all");
        // The newest segment stays: it carries the chain head.
        assert_eq!(spool.head_seq(), 2 * SEGMENT_EVENTS + 5);
        assert_eq!(spool.pending(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
