//! The edge's WAF stage: which CRS settings apply to which route, the rule set compiled for a
//! policy (once per distinct WAF configuration, reused across bundle versions that do not change
//! it), and a bounded pool that runs inspections off the async reactor.
//!
//! libmodsecurity work is CPU-bound (about a millisecond per request with CRS), so it never runs
//! on a reactor thread: at most `workers` inspections run at once on blocking threads, at most
//! `max_queue` more wait, and anything beyond that is *overload*, answered per the resource's
//! `on_overload` setting (fail closed with 503 by default) and audited.

use std::collections::HashMap;
use std::sync::Arc;

use sase_model::audit::WafVerdict;
use sase_model::policy::{Policy, WafMode, WafSettings};

use sase_waf::{CrsPaths, Findings, RuleSet, WafEngine, WafError};

pub use sase_model::policy::waf_scope_key as scope_key;

/// Scope of requests that match no route (route keys are `resource/route`, so no clash).
pub const UNROUTED_SCOPE: &str = "*unrouted*";

/// The WAF part of a compiled policy.
#[derive(Default)]
pub struct PolicyWaf {
    /// The compiled rule set (absent when every scope is off).
    pub rules: Option<Arc<RuleSet>>,
    /// Effective settings by scope key (only scopes that inspect).
    pub settings: HashMap<String, WafSettings>,
}

impl std::fmt::Debug for PolicyWaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWaf")
            .field(
                "digest",
                &self.rules.as_ref().map(|r| r.digest().to_string()),
            )
            .field("scopes", &self.settings.len())
            .finish()
    }
}

/// Builds the WAF part of a policy, reusing `previous` when its configuration is unchanged.
///
/// # Errors
/// libmodsecurity's message when the rule set does not load.
pub fn compile(
    crs: &CrsPaths,
    policy: &Policy,
    previous: Option<&Arc<RuleSet>>,
) -> Result<PolicyWaf, WafError> {
    let mut scopes = policy.waf_scopes();
    if scopes.is_empty() {
        return Ok(PolicyWaf::default());
    }
    // Requests that match no route are inspected in detect mode at the highest paranoia level
    // the policy uses (they are refused anyway; the findings show probing in the audit trail).
    let paranoia_level = scopes
        .iter()
        .map(|(_, s)| s.paranoia_level)
        .max()
        .unwrap_or(1);
    scopes.push((
        UNROUTED_SCOPE.to_string(),
        WafSettings {
            mode: WafMode::Detect,
            paranoia_level,
            ..WafSettings::default()
        },
    ));
    let digest = RuleSet::config_digest(&scopes);
    let rules = match previous {
        Some(old) if old.digest() == digest => old.clone(),
        _ => {
            let started = std::time::Instant::now();
            let compiled = Arc::new(compile_on_dedicated_thread(crs, &scopes)?);
            tracing::info!(
                scopes = scopes.len(),
                ms = started.elapsed().as_millis() as u64,
                "WAF rule set compiled"
            );
            compiled
        }
    };
    Ok(PolicyWaf {
        rules: Some(rules),
        settings: scopes.into_iter().collect(),
    })
}

/// Compiles on one long-lived thread. libmodsecurity allocates a rule set's memory (tens of MB
/// with CRS) with `malloc`; glibc keeps freed memory in the arena of the thread that allocated
/// it, so compiling on whichever blocking-pool thread happens to run the job spreads rule sets
/// over many arenas and the process keeps growing across policy reloads (seen: 47 MB -> 211 MB
/// after 100 reloads). On one thread, the memory of a dropped rule set is reused by the next.
fn compile_on_dedicated_thread(
    crs: &CrsPaths,
    scopes: &[(String, WafSettings)],
) -> Result<RuleSet, WafError> {
    type Job = (
        CrsPaths,
        Vec<(String, WafSettings)>,
        std::sync::mpsc::SyncSender<Result<RuleSet, WafError>>,
    );
    static COMPILER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    let compiler = COMPILER.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("waf-compiler".into())
            .spawn(move || {
                for (crs, scopes, reply) in queue {
                    let _ = reply.send(RuleSet::compile(&crs, &scopes));
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(jobs))
    });
    let Some(compiler) = compiler else {
        // No thread could be started: compile here rather than not at all.
        return RuleSet::compile(crs, scopes);
    };
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    compiler
        .lock()
        .map_err(|_| WafError::Engine("WAF compiler is poisoned".into()))?
        .send((crs.clone(), scopes.to_vec(), reply))
        .map_err(|_| WafError::Engine("WAF compiler thread is gone".into()))?;
    answer
        .recv()
        .map_err(|_| WafError::Engine("WAF compiler thread is gone".into()))?
}

/// What running a job in the pool gave.
pub enum PoolOutcome<T> {
    /// The job ran.
    Done(T),
    /// The pool and its queue were full; the job did not run.
    Overloaded,
    /// The job failed.
    Failed(WafError),
}

/// A job as the workers see it: it answers its caller itself.
type Task = Box<dyn FnOnce(&WafEngine) + Send>;

/// The engine and its bounded pool of dedicated worker threads.
///
/// Requests go into a bounded queue that the workers take from directly: a worker that finishes
/// an inspection starts the next at once, on the same thread (warm caches, and the same
/// allocator thread cache for libmodsecurity's many small allocations). An earlier design
/// (a semaphore, then `spawn_blocking`) left a core idle between inspections while the next
/// waiter was woken on the reactor and handed to some blocking thread.
pub struct WafStage {
    queue: flume::Sender<Task>,
    workers: usize,
}

impl WafStage {
    /// A stage running at most `workers` inspections at once with `max_queue` more waiting.
    pub fn new(workers: usize, max_queue: usize) -> WafStage {
        let engine = Arc::new(WafEngine::new());
        let (queue, jobs) = flume::bounded::<Task>(max_queue);
        let workers = workers.max(1);
        for index in 0..workers {
            let jobs = jobs.clone();
            let engine = engine.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("waf-{index}"))
                .spawn(move || {
                    // Ends when the stage (the only sender) is dropped.
                    for task in jobs.iter() {
                        task(&engine);
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, index, "cannot start a WAF worker thread");
            }
        }
        WafStage { queue, workers }
    }

    /// Sized to the machine: two workers per core and a queue of 32 per worker. Two per core
    /// measured 10-15 % more requests per second than one per core on a 2-core machine
    /// (`tests/perf/waf.sh`, docs/PERFORMANCE.md): a core's second worker runs while the first
    /// waits to be scheduled behind the reactor thread on that core.
    pub fn sized_to_cores() -> WafStage {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        WafStage::with_workers(2 * cores)
    }

    /// `workers` workers and a queue of 32 per worker.
    pub fn with_workers(workers: usize) -> WafStage {
        WafStage::new(workers, 32 * workers.max(1))
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `job` on a worker thread, or reports overload at once when the queue is full.
    ///
    /// A caller that goes away while its job waits (the client disconnected) leaves the job in
    /// the queue; the worker that reaches it sees nobody is waiting and skips it.
    pub async fn run<T, F>(&self, job: F) -> PoolOutcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&WafEngine) -> Result<T, WafError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move |engine| {
            if answer.is_closed() {
                return;
            }
            let started = std::time::Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(engine)));
            crate::metrics::waf_evaluated(started.elapsed());
            let _ = answer.send(outcome);
        });
        match self.queue.try_send(task) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(_)) => return PoolOutcome::Overloaded,
            Err(flume::TrySendError::Disconnected(_)) => {
                return PoolOutcome::Failed(WafError::Engine("no WAF worker is running".into()))
            }
        }
        match answered.await {
            Ok(Ok(Ok(value))) => PoolOutcome::Done(value),
            Ok(Ok(Err(err))) => PoolOutcome::Failed(err),
            Ok(Err(_panic)) => {
                PoolOutcome::Failed(WafError::Engine("the inspection panicked".into()))
            }
            Err(_) => PoolOutcome::Failed(WafError::Engine("the WAF worker stopped".into())),
        }
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// The audit record of an inspection.
pub fn verdict(
    settings: &WafSettings,
    request: &Findings,
    response: Option<&Findings>,
) -> WafVerdict {
    let mut rule_ids = Vec::new();
    let mut messages = Vec::new();
    for m in request
        .matches
        .iter()
        .chain(response.iter().flat_map(|r| r.matches.iter()))
    {
        if !rule_ids.contains(&m.id) {
            rule_ids.push(m.id);
            messages.push(m.message.chars().take(200).collect());
        }
    }
    WafVerdict {
        mode: match settings.mode {
            WafMode::Off => "off",
            WafMode::Detect => "detect",
            WafMode::Block => "block",
        }
        .to_string(),
        paranoia_level: settings.paranoia_level,
        inbound_score: request.anomaly_score,
        outbound_score: response.map_or(0, |r| r.anomaly_score),
        rule_ids,
        messages,
        blocked: request.blocked || response.is_some_and(|r| r.blocked),
        skipped: None,
    }
}

/// An optional text log of rule matches in ModSecurity's error-log style (`[id "942100"]
/// [msg "…"] … [unique_id "<reference>"]`), one line per matched rule, for tools that read
/// WAF logs (the CRS regression runner, SIEM pipelines used to nginx + ModSecurity). The audit
/// trail remains the record; this log is for compatibility and carries no request data beyond
/// the path.
pub struct MatchLog {
    file: std::sync::Mutex<std::fs::File>,
}

impl MatchLog {
    /// Opens (appending, creating 0600) the log file.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &std::path::Path) -> std::io::Result<MatchLog> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(MatchLog {
            file: std::sync::Mutex::new(file),
        })
    }

    /// Writes one line per matched rule.
    pub fn write(&self, reference: &str, client_ip: &str, path: &str, findings: &Findings) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        if findings.matches.is_empty() {
            return;
        }
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
                .take(512)
                .collect()
        };
        let mut text = String::new();
        for m in &findings.matches {
            let _ = write!(
                text,
                "ModSecurity: Warning. [client {}] [id \"{}\"] [msg \"{}\"]",
                clean(client_ip),
                m.id,
                clean(&m.message)
            );
            if let Some(severity) = m.severity {
                let _ = write!(text, " [severity \"{severity}\"]");
            }
            for tag in &m.tags {
                let _ = write!(text, " [tag \"{}\"]", clean(tag));
            }
            let _ = writeln!(
                text,
                " [uri \"{}\"] [unique_id \"{}\"] [anomaly_score \"{}\"]",
                clean(path),
                clean(reference),
                findings.anomaly_score
            );
        }
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

/// The audit record of an inspection that could not run.
pub fn skipped(settings: &WafSettings, why: &str) -> WafVerdict {
    WafVerdict {
        skipped: Some(why.to_string()),
        ..verdict(settings, &Findings::default(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Occupies the only worker of `stage` until the returned sender is used or dropped.
    async fn occupy_worker(
        stage: &Arc<WafStage>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<PoolOutcome<i32>>,
    ) {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let busy = {
            let stage = stage.clone();
            tokio::spawn(async move {
                stage
                    .run(move |_| {
                        let _ = started_tx.send(());
                        let _ = release_rx.recv();
                        Ok(1)
                    })
                    .await
            })
        };
        started_rx.await.expect("worker started");
        (release_tx, busy)
    }

    /// Waits (without sleeping) until `stage` holds `n` queued jobs.
    async fn until_queued(stage: &WafStage, n: usize) {
        while stage.queued() != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_full_pool_with_a_full_queue_reports_overload_without_running_the_job() {
        let stage = Arc::new(WafStage::new(1, 1));
        let (release, busy) = occupy_worker(&stage).await;
        let queued = {
            let stage = stage.clone();
            tokio::spawn(async move { stage.run(|_| Ok(2)).await })
        };
        until_queued(&stage, 1).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let ran_in_job = ran.clone();
        let outcome = stage
            .run(move |_| {
                ran_in_job.fetch_add(1, Ordering::SeqCst);
                Ok(3)
            })
            .await;
        assert!(matches!(outcome, PoolOutcome::Overloaded));
        release.send(()).expect("release");
        assert!(matches!(busy.await.expect("join"), PoolOutcome::Done(1)));
        assert!(matches!(queued.await.expect("join"), PoolOutcome::Done(2)));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "an overloaded job must not run"
        );
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped_and_the_pool_keeps_serving() {
        let stage = Arc::new(WafStage::new(1, 1));
        let (release, busy) = occupy_worker(&stage).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let stage = stage.clone();
            let ran = ran.clone();
            tokio::spawn(async move {
                stage
                    .run(move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(2)
                    })
                    .await
            })
        };
        until_queued(&stage, 1).await;
        // The client goes away while queued.
        waiter.abort();
        let _ = waiter.await;
        release.send(()).expect("release");
        assert!(matches!(busy.await.expect("join"), PoolOutcome::Done(1)));
        // The abandoned job keeps its place until the freed worker reaches it and skips it.
        until_queued(&stage, 0).await;
        // Every later request is served, never refused as overload.
        for n in 0..10 {
            assert!(matches!(stage.run(move |_| Ok(n)).await, PoolOutcome::Done(v) if v == n));
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "the abandoned job must be skipped"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_worker_survives() {
        let stage = WafStage::new(1, 4);
        let outcome = stage.run::<i32, _>(|_| panic!("bad input")).await;
        assert!(
            matches!(outcome, PoolOutcome::Failed(WafError::Engine(ref m)) if m.contains("panicked"))
        );
        assert!(matches!(stage.run(|_| Ok(7)).await, PoolOutcome::Done(7)));
    }

    #[test]
    fn scopes_skip_routes_whose_waf_is_off_and_apply_route_overrides() {
        let policy = Policy::parse_yaml(
            "resources:\n  - name: app\n    upstream: http://127.0.0.1:1\n    routes:\n      - {id: a, methods: [GET], path: /a, public: true}\n      - {id: b, methods: [GET], path: /b, public: true, waf: {mode: off}}\n      - {id: c, methods: [GET], path: /c, public: true, waf: {paranoia_level: 3}}\n",
        )
        .expect("policy");
        let scopes = policy.waf_scopes();
        let keys: Vec<&str> = scopes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["app/a", "app/c"]);
        assert_eq!(scopes[1].1.paranoia_level, 3);
    }
}
