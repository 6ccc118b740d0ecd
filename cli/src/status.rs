//! The live state of a `lockstep sync` process for other programs and people:
//! `GET /status` (a JSON document, [`StatusDoc`]) and `GET /metrics` (Prometheus text,
//! series `lockstep_...` labelled with the task name and the target index) served on
//! `--status-addr`, and `lockstep status URL`, which fetches the document and prints it.
//!
//! The model: a [`Task`] is the sync process (its name, the source, one [`TaskView`]
//! per target); each view watches the engine's `Progress` and the target's
//! [`TaskState`]. Everything served is read from those watches when asked, so the
//! engine pays nothing for the endpoint. URLs are shown without passwords.
//!
//! How it fits: `sync.rs` builds the [`Task`] and serves it; `lockstep status`
//! fetches it. It must never write to the engine's state, never show a password,
//! and never report a figure it does not know (absent, not zero).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lockstep_sync::engine::{unix_ms, Phase, Progress};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use lockstep_sync::source::scan::ScanStats;

use crate::args::StatusArgs;
use crate::converge::ConvergenceCell;

/// How one target's task stands, besides its engine progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    Running,
    /// Asked to stop (a signal): draining the target and storing the checkpoint.
    Stopping,
    /// Finished: `--mode full` done, or stopped after the drain.
    Done,
    /// Ended with this error.
    Failed(String),
}

/// One target of the process, as the status endpoint and the progress display see it.
#[derive(Clone)]
pub struct TaskView {
    pub index: usize,
    /// The target URL without its password.
    pub target: String,
    pub progress: watch::Receiver<Progress>,
    pub state: watch::Receiver<TaskState>,
    /// A task that may read its source key by key (`--source-mode scan` or `auto`).
    pub scan: Option<ScanView>,
}

/// What a scan source counts, and its last proof of convergence.
#[derive(Clone)]
pub struct ScanView {
    pub stats: Arc<ScanStats>,
    pub convergence: ConvergenceCell,
}

/// The whole `lockstep sync` process.
pub struct Task {
    pub name: String,
    /// The source URL without its password.
    pub source: String,
    pub started: Instant,
    /// One view per running or ended task; it grows when a resharded cluster source
    /// brings new shards.
    pub targets: std::sync::RwLock<Vec<TaskView>>,
}

/// `GET /status`. Field names and types are a contract (golden test:
/// `cli/tests/golden/status_schema.txt`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDoc {
    pub task: String,
    /// The least advanced phase over the targets.
    pub phase: String,
    pub uptime_seconds: u64,
    pub source: String,
    pub targets: Vec<TargetStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetStatus {
    pub index: usize,
    pub target: String,
    /// `running`, `stopping`, `done` or `failed`.
    pub state: String,
    /// `connecting`, `full_copy`, `incremental` or `done`.
    pub phase: String,
    pub replid: Option<String>,
    pub received_offset: i64,
    pub applied_offset: i64,
    /// Bytes of the stream received and not yet applied on the target.
    pub lag_bytes: i64,
    /// Now minus the time the last heartbeat seen in the stream was written on the
    /// source ([`Progress::lag_ms`]): it grows while nothing arrives. Null when no
    /// heartbeat has been seen (`--no-heartbeat`, or not yet): unknown, not zero.
    pub lag_ms: Option<i64>,
    /// Seconds since a read last brought bytes from the source (null before any).
    pub source_silent_seconds: Option<f64>,
    /// Seconds since the last heartbeat was seen in the stream (null before one).
    pub heartbeat_age_seconds: Option<f64>,
    /// Seconds since a read last brought a reply from the target (null before any).
    pub target_silent_seconds: Option<f64>,
    pub keys_copied: u64,
    pub keys_total: Option<u64>,
    pub bytes_copied: u64,
    pub bytes_total: Option<u64>,
    pub commands_applied: u64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    /// The error that ended the task, or the last one it retried after.
    pub last_error: Option<String>,
    /// A source read key by key (null when it is read as a replica).
    pub scan: Option<ScanStatus>,
}

/// The scan source of a target's task (`--source-mode scan`, or `auto` after a
/// refusal).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanStatus {
    /// Times the source was scanned (more than 1: changes were lost and it was
    /// scanned again; the log says why).
    pub scans: u64,
    pub snapshot_keys: u64,
    pub notifications: u64,
    /// Changed keys waiting to be read again.
    pub keys_pending: u64,
    pub keys_reread: u64,
    pub keys_deleted: u64,
    /// When no change last waited to be read (null: not yet).
    pub caught_up_unix_ms: Option<u64>,
    /// The last proof of convergence (null: none yet, or not run for this task).
    pub converged_unix_ms: Option<i64>,
    pub keys_reverified: Option<u64>,
    pub differences: Option<u64>,
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Connecting => "connecting",
        Phase::FullCopy => "full_copy",
        Phase::Incremental => "incremental",
        Phase::Done => "done",
    }
}

fn state_name(state: &TaskState) -> &'static str {
    match state {
        TaskState::Running => "running",
        TaskState::Stopping => "stopping",
        TaskState::Done => "done",
        TaskState::Failed(_) => "failed",
    }
}

impl TaskView {
    pub fn status(&self) -> TargetStatus {
        let p = self.progress.borrow().clone();
        let state = self.state.borrow().clone();
        let last_error = match &state {
            TaskState::Failed(err) => Some(err.clone()),
            _ => p.last_error.clone(),
        };
        TargetStatus {
            index: self.index,
            target: self.target.clone(),
            state: state_name(&state).to_owned(),
            phase: phase_name(p.phase).to_owned(),
            replid: p.replid.clone(),
            received_offset: p.received_offset,
            applied_offset: p.applied_offset,
            lag_bytes: (p.received_offset - p.applied_offset).max(0),
            lag_ms: p.lag_ms(unix_ms()),
            source_silent_seconds: seconds_since(p.source_byte_at),
            heartbeat_age_seconds: seconds_since(p.heartbeat_seen_at),
            target_silent_seconds: seconds_since(p.target_reply_at),
            keys_copied: p.keys_copied,
            keys_total: p.keys_total,
            bytes_copied: p.bytes_copied,
            bytes_total: p.bytes_total,
            commands_applied: p.commands_applied,
            full_syncs: p.full_syncs,
            partial_syncs: p.partial_syncs,
            last_error,
            scan: self.scan.as_ref().and_then(ScanView::status),
        }
    }
}

impl ScanView {
    /// None until the task has scanned (an `auto` task reading a replica link).
    fn status(&self) -> Option<ScanStatus> {
        let s = &self.stats;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        if load(&s.scans) == 0 {
            return None;
        }
        let proof = self
            .convergence
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Some(ScanStatus {
            scans: load(&s.scans),
            snapshot_keys: load(&s.snapshot_keys),
            notifications: load(&s.notifications),
            keys_pending: load(&s.keys_pending),
            keys_reread: load(&s.keys_reread),
            keys_deleted: load(&s.keys_deleted),
            caught_up_unix_ms: Some(load(&s.caught_up_unix_ms)).filter(|&at| at > 0),
            converged_unix_ms: proof
                .as_ref()
                .filter(|p| p.differences == 0)
                .map(|p| p.at_unix_ms),
            keys_reverified: proof.as_ref().map(|p| p.keys_reverified),
            differences: proof.as_ref().map(|p| p.differences),
        })
    }
}

/// Seconds (to the millisecond) since `at`.
fn seconds_since(at: Option<Instant>) -> Option<f64> {
    at.map(|at| at.elapsed().as_millis() as f64 / 1000.0)
}

impl Task {
    /// The views of every task so far.
    pub fn views(&self) -> Vec<TaskView> {
        self.targets
            .read()
            .map(|views| views.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Adds the view of a task started now; returns its position.
    pub fn add_view(&self, view: TaskView) -> usize {
        let mut views = self
            .targets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        views.push(view);
        views.len() - 1
    }

    pub fn document(&self) -> StatusDoc {
        let views = self.views();
        let phase = views
            .iter()
            .map(|t| t.progress.borrow().phase)
            .min_by_key(|phase| match phase {
                Phase::Connecting => 0,
                Phase::FullCopy => 1,
                Phase::Incremental => 2,
                Phase::Done => 3,
            })
            .unwrap_or(Phase::Connecting);
        StatusDoc {
            task: self.name.clone(),
            phase: phase_name(phase).to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            source: self.source.clone(),
            targets: views.iter().map(TaskView::status).collect(),
        }
    }

    /// The Prometheus text exposition of the document.
    pub fn metrics(&self) -> String {
        let doc = self.document();
        let mut out = String::new();
        let labels = |t: &TargetStatus| format!("task=\"{}\",target=\"{}\"", doc.task, t.index);
        for (name, kind, help, value) in METRICS {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for target in &doc.targets {
                if let Some(v) = value(target) {
                    out.push_str(&format!("{name}{{{}}} {v}\n", labels(target)));
                }
            }
        }
        out.push_str("# HELP lockstep_phase The target's phase (1 for the current one).\n");
        out.push_str("# TYPE lockstep_phase gauge\n");
        for target in &doc.targets {
            for phase in ["connecting", "full_copy", "incremental", "done"] {
                out.push_str(&format!(
                    "lockstep_phase{{{},phase=\"{phase}\"}} {}\n",
                    labels(target),
                    u8::from(target.phase == phase)
                ));
            }
        }
        out
    }
}

/// One series of `/metrics`: name, type, help, and its value for a target
/// (None: absent, the value is not known).
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TargetStatus) -> Option<f64>,
);

/// Every per-target series of `/metrics` but the phase, in the order served.
const METRICS: [Metric; 20] = [
    (
        "lockstep_received_offset_bytes",
        "gauge",
        "Replication offset received from the source.",
        |t| Some(t.received_offset as f64),
    ),
    (
        "lockstep_applied_offset_bytes",
        "gauge",
        "Replication offset the target has acknowledged.",
        |t| Some(t.applied_offset as f64),
    ),
    (
        "lockstep_lag_bytes",
        "gauge",
        "Stream bytes received and not yet applied.",
        |t| Some(t.lag_bytes as f64),
    ),
    (
        "lockstep_lag_milliseconds",
        "gauge",
        "Now minus the source time of the last heartbeat seen (absent when unknown).",
        |t| t.lag_ms.map(|v| v as f64),
    ),
    (
        "lockstep_source_silent_seconds",
        "gauge",
        "Seconds since the last byte from the source.",
        |t| t.source_silent_seconds,
    ),
    (
        "lockstep_heartbeat_age_seconds",
        "gauge",
        "Seconds since the last heartbeat seen in the stream.",
        |t| t.heartbeat_age_seconds,
    ),
    (
        "lockstep_target_silent_seconds",
        "gauge",
        "Seconds since the last reply from the target.",
        |t| t.target_silent_seconds,
    ),
    (
        "lockstep_keys_copied",
        "gauge",
        "Keys written by the current full copy.",
        |t| Some(t.keys_copied as f64),
    ),
    (
        "lockstep_keys_total",
        "gauge",
        "Keys the RDB announced (RESIZEDB hints).",
        |t| t.keys_total.map(|v| v as f64),
    ),
    (
        "lockstep_rdb_bytes_copied",
        "gauge",
        "RDB bytes received by the current full copy.",
        |t| Some(t.bytes_copied as f64),
    ),
    (
        "lockstep_rdb_bytes_total",
        "gauge",
        "Size of the RDB the source announced.",
        |t| t.bytes_total.map(|v| v as f64),
    ),
    (
        "lockstep_commands_applied_total",
        "counter",
        "Stream commands sent to the target.",
        |t| Some(t.commands_applied as f64),
    ),
    (
        "lockstep_full_syncs_total",
        "counter",
        "Full resyncs.",
        |t| Some(t.full_syncs as f64),
    ),
    (
        "lockstep_partial_syncs_total",
        "counter",
        "Partial resyncs.",
        |t| Some(t.partial_syncs as f64),
    ),
    (
        "lockstep_scan_keys_pending",
        "gauge",
        "Scan source: changed keys waiting to be read again.",
        |t| t.scan.as_ref().map(|s| s.keys_pending as f64),
    ),
    (
        "lockstep_scan_keys_reread_total",
        "counter",
        "Scan source: keys read again after a change.",
        |t| t.scan.as_ref().map(|s| s.keys_reread as f64),
    ),
    (
        "lockstep_scans_total",
        "counter",
        "Scan source: scans of the source (more than 1: changes were lost).",
        |t| t.scan.as_ref().map(|s| s.scans as f64),
    ),
    (
        "lockstep_scan_converged_unix_seconds",
        "gauge",
        "Scan source: when the last proof of convergence found 0 differences.",
        |t| {
            t.scan
                .as_ref()
                .and_then(|s| s.converged_unix_ms)
                .map(|ms| ms as f64 / 1000.0)
        },
    ),
    (
        "lockstep_scan_differences",
        "gauge",
        "Scan source: differences found by the last proof of convergence.",
        |t| {
            t.scan
                .as_ref()
                .and_then(|s| s.differences)
                .map(|d| d as f64)
        },
    ),
    (
        "lockstep_failed",
        "gauge",
        "1 when the target's task has failed.",
        |t| Some(f64::from(u8::from(t.state == "failed"))),
    ),
];

/// `HOST:PORT`, or `PORT` alone for 127.0.0.1.
pub fn parse_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    let full = if text.chars().all(|c| c.is_ascii_digit()) {
        format!("127.0.0.1:{text}")
    } else {
        text.to_owned()
    };
    full.parse().with_context(|| {
        format!("--status-addr {text:?} is not HOST:PORT or PORT (for example 127.0.0.1:9121)")
    })
}

/// Binds `addr` and serves `/status` and `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, task: Arc<Task>) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --status-addr {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/status",
            get(
                |axum::extract::State(task): axum::extract::State<Arc<Task>>| async move {
                    axum::Json(task.document())
                },
            ),
        )
        .route(
            "/metrics",
            get(
                |axum::extract::State(task): axum::extract::State<Arc<Task>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        task.metrics(),
                    )
                },
            ),
        )
        .with_state(task);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("the status endpoint stopped: {err}");
        }
    });
    Ok(bound)
}

/// `lockstep status URL [--json]`.
pub async fn run(args: StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    let url = status_url(&args.url);
    let fetch_url = url.clone();
    let body = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&fetch_url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
    })
    .await?
    .with_context(|| {
        format!("cannot read {url} (is `lockstep sync --status-addr` running there?)")
    })?;
    if args.json {
        println!("{body}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let doc: StatusDoc = serde_json::from_str(&body)
        .with_context(|| format!("{url} did not answer a lockstep status document"))?;
    print!("{}", describe(&doc));
    Ok(std::process::ExitCode::SUCCESS)
}

/// `http://HOST:PORT/status` from `PORT`, `HOST:PORT` or a URL.
fn status_url(given: &str) -> String {
    let given = given.trim().trim_end_matches('/');
    let base = if given.starts_with("http://") || given.starts_with("https://") {
        given.to_owned()
    } else if given.chars().all(|c| c.is_ascii_digit()) {
        format!("http://127.0.0.1:{given}")
    } else {
        format!("http://{given}")
    };
    if base.ends_with("/status") {
        base
    } else {
        format!("{base}/status")
    }
}

/// The scan source's lines of [`describe`].
fn describe_scan(scan: &ScanStatus) -> String {
    let mut out = format!(
        "  scan: {} scan(s), {} keys in the last; {} changes pending, {} keys read again ({} gone)\n",
        scan.scans, scan.snapshot_keys, scan.keys_pending, scan.keys_reread, scan.keys_deleted
    );
    out.push_str(&match (
        scan.keys_reverified,
        scan.differences,
        scan.converged_unix_ms,
    ) {
        (Some(n), Some(0), Some(at)) => {
            format!("  converged at unix ms {at}: {n} keys re-verified, 0 differ\n")
        }
        (Some(n), Some(d), _) => {
            format!("  NOT converged: the last proof found {d} of {n} keys re-verified differing\n")
        }
        _ => "  convergence: not proven yet\n".to_owned(),
    });
    out
}

/// The document for a person.
pub fn describe(doc: &StatusDoc) -> String {
    let mut out = format!(
        "task {}: {} (up {}s), source {}\n",
        doc.task, doc.phase, doc.uptime_seconds, doc.source
    );
    for t in &doc.targets {
        out.push_str(&format!(
            "target {} {}: {}, {}\n",
            t.index, t.target, t.state, t.phase
        ));
        out.push_str(&format!(
            "  offsets: received {}, applied {} (lag {} bytes{})\n",
            t.received_offset,
            t.applied_offset,
            t.lag_bytes,
            t.lag_ms
                .map(|ms| format!(", {ms} ms"))
                .unwrap_or_else(|| ", ms unknown: no heartbeat seen".to_owned())
        ));
        let ago = |s: Option<f64>| s.map_or("never".to_owned(), |s| format!("{s:.1} s ago"));
        out.push_str(&format!(
            "  last byte from the source {}, last heartbeat {}, last reply from the target {}\n",
            ago(t.source_silent_seconds),
            ago(t.heartbeat_age_seconds),
            ago(t.target_silent_seconds)
        ));
        if let Some(replid) = &t.replid {
            out.push_str(&format!("  replid: {replid}\n"));
        }
        let of = |total: Option<u64>| total.map(|t| format!(" of {t}")).unwrap_or_default();
        out.push_str(&format!(
            "  full copy: {} keys{}, {} bytes{}; {} full sync(s), {} partial resync(s)\n",
            t.keys_copied,
            of(t.keys_total),
            t.bytes_copied,
            of(t.bytes_total),
            t.full_syncs,
            t.partial_syncs
        ));
        out.push_str(&format!("  commands applied: {}\n", t.commands_applied));
        if let Some(scan) = &t.scan {
            out.push_str(&describe_scan(scan));
        }
        if let Some(err) = &t.last_error {
            out.push_str(&format!("  last error: {err}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(filled: bool) -> Task {
        let progress = Progress {
            phase: Phase::Incremental,
            replid: filled.then(|| "a".repeat(40)),
            heartbeat_lag_ms: filled.then_some(3),
            heartbeat_sent_unix_ms: filled.then(|| unix_ms() - 3_000),
            heartbeat_seen_at: filled.then(Instant::now),
            source_byte_at: filled.then(Instant::now),
            target_reply_at: filled.then(Instant::now),
            keys_total: filled.then_some(10),
            bytes_total: filled.then_some(100),
            last_error: filled.then(|| "cut".to_owned()),
            ..Progress::default()
        };
        let (_p, progress) = watch::channel(progress);
        let (_s, state) = watch::channel(TaskState::Running);
        Task {
            name: "default".to_owned(),
            source: "redis://h:1".to_owned(),
            started: Instant::now(),
            targets: std::sync::RwLock::new(vec![TaskView {
                index: 0,
                target: "redis://t:1".to_owned(),
                progress,
                state,
                scan: filled.then(sample_scan),
            }]),
        }
    }

    fn sample_scan() -> ScanView {
        let stats = ScanStats::default();
        stats.scans.store(1, Ordering::Relaxed);
        stats.caught_up_unix_ms.store(1, Ordering::Relaxed);
        let proof = crate::converge::Convergence {
            at_unix_ms: 2,
            keys_reverified: 3,
            ..Default::default()
        };
        ScanView {
            stats: Arc::new(stats),
            convergence: Arc::new(std::sync::Mutex::new(Some(proof))),
        }
    }

    /// `path: type` lines of a JSON value (arrays by their first element).
    fn schema(value: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        use serde_json::Value;
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_f64() => "number",
            Value::Number(_) => "integer",
            Value::String(_) => "string",
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    schema(first, &format!("{path}[]"), out);
                }
                "array"
            }
            Value::Object(fields) => {
                for (name, field) in fields {
                    let sub = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    schema(field, &sub, out);
                }
                "object"
            }
        };
        if !path.is_empty() {
            out.push((path.to_owned(), kind.to_owned()));
        }
    }

    /// The schema of the status document: every field with the JSON types it takes.
    fn status_schema() -> String {
        let mut lines = std::collections::BTreeMap::<String, Vec<String>>::new();
        for filled in [true, false] {
            let doc = serde_json::to_value(sample(filled).document()).expect("serializes");
            let mut fields = Vec::new();
            schema(&doc, "", &mut fields);
            for (path, kind) in fields {
                let kinds = lines.entry(path).or_default();
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                    kinds.sort();
                }
            }
        }
        lines
            .into_iter()
            .map(|(path, kinds)| format!("{path}: {}\n", kinds.join("|")))
            .collect()
    }

    #[test]
    fn the_status_schema_matches_its_golden_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/status_schema.txt"
        );
        crate::golden::check(path, &status_schema());
    }

    #[test]
    fn metrics_are_prometheus_text_with_the_task_label() {
        let text = sample(true).metrics();
        assert!(
            text.contains("# TYPE lockstep_applied_offset_bytes gauge\n"),
            "{text}"
        );
        let lag = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("lockstep_lag_milliseconds{task=\"default\",target=\"0\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert!(lag.is_some_and(|ms| ms >= 3000.0), "{text}");
        assert!(
            text.contains("lockstep_source_silent_seconds{task=\"default\",target=\"0\"} "),
            "{text}"
        );
        let unknown = sample(false).metrics();
        assert!(
            !unknown.contains("lockstep_lag_milliseconds{"),
            "no heartbeat seen: no lag figure\n{unknown}"
        );
        assert!(
            text.contains(
                "lockstep_phase{task=\"default\",target=\"0\",phase=\"incremental\"} 1\n"
            ),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            assert!(series.starts_with("lockstep_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn addresses_and_urls_default_to_localhost() {
        assert_eq!(
            parse_addr("9121").expect("port").to_string(),
            "127.0.0.1:9121"
        );
        assert_eq!(
            parse_addr("0.0.0.0:80").expect("addr").to_string(),
            "0.0.0.0:80"
        );
        assert!(parse_addr("nowhere").is_err());
        assert_eq!(status_url("9121"), "http://127.0.0.1:9121/status");
        assert_eq!(status_url("h:1/"), "http://h:1/status");
        assert_eq!(status_url("http://h:1/status"), "http://h:1/status");
    }
}
