//! The audit daemon: each pair on its schedule, one audit at a time (gentle: the
//! servers never see two audits at once from this process), until SIGINT or SIGTERM.
//!
//! Each pair's next due time comes from its schedule and the start of its last
//! recorded run, read from the history at startup, so a restarted daemon keeps its
//! rhythm. With `status_addr`, `/status` and `/metrics` show each pair's last run
//! and next due time ([`crate::audit::state`]). A signal during a wait ends the daemon at once; during an audit, that
//! audit is abandoned (nothing of it is recorded: a history write is one SQLite
//! transaction, done or not) and the daemon exits 0.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::audit::config::{AuditConfig, Pair};
use crate::audit::history::History;
use crate::audit::pair_run::{self, Sinks};
use crate::audit::schedule;
use crate::audit::state::{self, State};

/// One pair's place in the rotation.
struct Slot<'a> {
    pair: &'a Pair,
    due: Option<DateTime<Utc>>,
    runs: u64,
}

pub async fn run(config: &AuditConfig, history: &mut History) -> anyhow::Result<ExitCode> {
    // Listened for before the ready line, so a signal sent on seeing it is caught.
    let mut signals = Signals::install();
    let state = State::default();
    let mut slots = slots(config, history, &state)?;
    if let Some(addr) = config.status_addr {
        let bound = state::serve(addr, state.clone()).await?;
        println!("lockstep audit: /status and /metrics on http://{bound}");
    }
    println!(
        "lockstep audit: {} pairs, history {}; stop with SIGINT or SIGTERM",
        slots.len(),
        config.history.display()
    );
    let mut running: Option<String> = None;
    tokio::select! {
        result = rotate(config, history, &state, &mut slots, &mut running) => result,
        () = signals.next() => {
            match running {
                Some(name) => println!("lockstep audit: stopped; the audit of `{name}` in progress was abandoned (not recorded)"),
                None => println!("lockstep audit: stopped"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Each pair's next due time from its last recorded run; the state shows both.
fn slots<'a>(
    config: &'a AuditConfig,
    history: &History,
    state: &State,
) -> anyhow::Result<Vec<Slot<'a>>> {
    let mut slots = Vec::new();
    for pair in &config.pairs {
        let runs = history.runs(Some(&pair.name))?;
        let last = runs
            .last()
            .and_then(|r| DateTime::from_timestamp_millis(r.started_ms));
        let count = runs.len() as u64;
        let due = pair
            .schedule
            .next_due(last, Utc::now(), schedule::seed(&pair.name, count));
        if let Some(run) = runs.last() {
            state.set_last_run(&pair.name, run.clone());
        }
        state.set_next_run(&pair.name, due);
        slots.push(Slot {
            pair,
            due,
            runs: count,
        });
    }
    Ok(slots)
}

/// Runs the earliest due pair, forever (until no pair has a run left).
async fn rotate(
    config: &AuditConfig,
    history: &mut History,
    state: &State,
    slots: &mut [Slot<'_>],
    running: &mut Option<String>,
) -> anyhow::Result<ExitCode> {
    let sinks = Sinks {
        state,
        webhook_url: config.webhook_url.as_deref(),
    };
    loop {
        let Some(slot) = slots
            .iter_mut()
            .filter(|s| s.due.is_some())
            .min_by_key(|s| s.due)
        else {
            println!("lockstep audit: no pair has a scheduled run left");
            return Ok(ExitCode::SUCCESS);
        };
        let due = slot.due.unwrap_or_else(Utc::now);
        if let Ok(wait) = (due - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
        let started = Utc::now();
        *running = Some(slot.pair.name.clone());
        println!("audit `{}`: started", slot.pair.name);
        pair_run::audit_and_record(slot.pair, history, config.retention, &sinks).await?;
        *running = None;
        slot.runs += 1;
        slot.due = slot.pair.schedule.next_due(
            Some(started),
            Utc::now(),
            schedule::seed(&slot.pair.name, slot.runs),
        );
        state.set_next_run(&slot.pair.name, slot.due);
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are installed (the sync
/// has its own in cli/src/sync.rs; this one stays local to the audit).
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Signals(Some((interrupt, terminate))),
            _ => {
                tracing::warn!(
                    "cannot listen for SIGINT/SIGTERM: a signal ends the process at once"
                );
                Signals(None)
            }
        }
    }

    async fn next(&mut self) {
        match self.0.as_mut() {
            Some((interrupt, terminate)) => tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            },
            None => std::future::pending().await,
        }
    }
}
