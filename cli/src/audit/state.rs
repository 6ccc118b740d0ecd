//! What the daemon shows while it runs: per pair, its last recorded run and its next
//! due time, as `GET /status` (JSON) and `GET /metrics` (Prometheus text,
//! `lockstep_audit_*{pair}`), served by axum as the sync's status endpoint is.
//!
//! The state is filled from the history at startup and after each recorded run, so
//! it never claims more than the history holds: a pair never run shows no result.
//! The documents name pairs and verdicts only, never a URL (a URL may hold a
//! password).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::history::Run;

/// One pair as shown.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PairState {
    pub last_run: Option<Run>,
    /// Milliseconds since the epoch; None: no run left on its schedule.
    pub next_run_ms: Option<i64>,
}

/// Every pair, by name; shared by the daemon and the endpoint.
#[derive(Clone, Default)]
pub struct State(Arc<Mutex<BTreeMap<String, PairState>>>);

impl State {
    pub fn set_last_run(&self, pair: &str, run: Run) {
        self.update(pair, |p| p.last_run = Some(run));
    }

    pub fn set_next_run(&self, pair: &str, due: Option<DateTime<Utc>>) {
        self.update(pair, |p| p.next_run_ms = due.map(|d| d.timestamp_millis()));
    }

    fn update(&self, pair: &str, change: impl FnOnce(&mut PairState)) {
        let mut pairs = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(pairs.entry(pair.to_owned()).or_default());
    }

    fn snapshot(&self) -> BTreeMap<String, PairState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The `/status` document.
    pub fn document(&self) -> serde_json::Value {
        serde_json::json!({ "pairs": self.snapshot() })
    }

    /// The Prometheus text of every pair.
    pub fn metrics(&self) -> String {
        metrics_text(&self.snapshot())
    }
}

/// The verdict as a number: 0 consistent, 1 differences, 2 could not verify, 3
/// incomplete (verify's exit codes).
pub fn verdict_code(verdict: &str) -> Option<f64> {
    match verdict {
        "consistent" => Some(0.0),
        "differences" => Some(1.0),
        "could_not_verify" => Some(2.0),
        "incomplete" => Some(3.0),
        _ => None,
    }
}

type Gauge = (&'static str, &'static str, fn(&PairState) -> Option<f64>);

const GAUGES: [Gauge; 6] = [
    ("lockstep_audit_last_run_timestamp_seconds", "Start of the last recorded run (Unix time).",
        |p| p.last_run.as_ref().map(|r| r.started_ms as f64 / 1000.0)),
    ("lockstep_audit_last_result", "Last result: 0 consistent, 1 differences, 2 could not verify, 3 incomplete (verify's exit codes).",
        |p| p.last_run.as_ref().and_then(|r| verdict_code(&r.verdict))),
    ("lockstep_audit_differences", "Differences found by the last run.",
        |p| p.last_run.as_ref().map(|r| r.differences as f64)),
    ("lockstep_audit_keys_compared", "Keys compared by the last run.",
        |p| p.last_run.as_ref().map(|r| r.keys_compared as f64)),
    ("lockstep_audit_duration_seconds", "Duration of the last run.",
        |p| p.last_run.as_ref().map(|r| (r.ended_ms - r.started_ms) as f64 / 1000.0)),
    ("lockstep_audit_next_run_timestamp_seconds", "When the next run is due (Unix time).",
        |p| p.next_run_ms.map(|ms| ms as f64 / 1000.0)),
];

const KINDS: [&str; 5] = [
    "missing_on_target",
    "extra_on_target",
    "type",
    "value",
    "ttl",
];

fn metrics_text(pairs: &BTreeMap<String, PairState>) -> String {
    let mut out = String::new();
    for (name, help, value) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (pair, state) in pairs {
            if let Some(v) = value(state) {
                let _ = writeln!(out, "{name}{{pair=\"{}\"}} {v}", escape(pair));
            }
        }
    }
    let name = "lockstep_audit_differences_by_kind";
    let _ = writeln!(
        out,
        "# HELP {name} Differences of the last run, by kind.\n# TYPE {name} gauge"
    );
    for (pair, state) in pairs {
        let Some(run) = state.last_run.as_ref().filter(|r| r.coverage.is_some()) else {
            continue; // never run, or could not verify: no count is known
        };
        for kind in KINDS {
            let n = run.by_kind.get(kind).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}{{pair=\"{}\",kind=\"{kind}\"}} {n}",
                escape(pair)
            );
        }
    }
    out
}

/// A label value as Prometheus wants it (pair names are already plain).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Binds `addr` and serves `/status` and `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, state: State) -> anyhow::Result<SocketAddr> {
    use axum::extract::State as Shared;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on the audit's status_addr {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/status",
            get(|Shared(s): Shared<State>| async move { axum::Json(s.document()) }),
        )
        .route(
            "/metrics",
            get(|Shared(s): Shared<State>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    s.metrics(),
                )
            }),
        )
        .with_state(state);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("the audit's status endpoint stopped: {err}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_the_last_run_and_only_known_counts() {
        let state = State::default();
        state.set_next_run("never", None);
        let mut run = Run {
            pair: "orders".into(),
            started_ms: 2000,
            ended_ms: 3500,
            verdict: "differences".into(),
            differences: 2,
            keys_compared: 10,
            coverage: Some(serde_json::json!({})),
            ..Run::default()
        };
        run.by_kind.insert("value".into(), 2);
        state.set_last_run("orders", run);
        state.set_next_run("orders", DateTime::from_timestamp_millis(9000));
        let text = state.metrics();
        for line in [
            "lockstep_audit_last_result{pair=\"orders\"} 1",
            "lockstep_audit_differences_by_kind{pair=\"orders\",kind=\"value\"} 2",
            "lockstep_audit_differences_by_kind{pair=\"orders\",kind=\"ttl\"} 0",
            "lockstep_audit_duration_seconds{pair=\"orders\"} 1.5",
            "lockstep_audit_next_run_timestamp_seconds{pair=\"orders\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(
            !text.contains("pair=\"never\""),
            "a pair never run shows nothing:\n{text}"
        );
        let doc = state.document();
        assert_eq!(doc["pairs"]["orders"]["last_run"]["verdict"], "differences");
    }

    /// Every metric the Grafana dashboard queries is one lockstep exports: the audit's
    /// from this module's text, the sync's from `status.rs` (where they are named).
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../docs/grafana/lockstep-dashboard.json"
        ))
        .expect("the dashboard is JSON");
        let state = State::default();
        state.set_last_run(
            "p",
            Run {
                coverage: Some(serde_json::json!({})),
                verdict: "consistent".into(),
                ..Run::default()
            },
        );
        state.set_next_run("p", DateTime::from_timestamp_millis(0));
        let audit = state.metrics();
        let sync = include_str!("../status.rs");
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("an expr");
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("lockstep_"))
                {
                    let known = if name.starts_with("lockstep_audit_") {
                        audit.contains(&format!("# TYPE {name} gauge"))
                    } else {
                        sync.contains(&format!("\"{name}\""))
                    };
                    assert!(
                        known,
                        "the dashboard queries {name}, which lockstep does not export"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 15, "{checked} metric references");
    }
}
