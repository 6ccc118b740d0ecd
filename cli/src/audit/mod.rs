//! `lockstep audit`: scheduled consistency audits of the pairs listed in a TOML file
//! ([`config`]), each a verify run in-process (`lockstep_verify::compare`), recorded
//! in an SQLite history ([`history`]) that tells persistent differences from lag.
//!
//! - `lockstep audit --config F --once`: every pair once, then exit with verify's
//!   codes (0 consistent, 1 differences, 2 could not verify, 3 no difference in what
//!   was read but not everything was); with several pairs the worst, in the order
//!   1, 2, 3, 0 (a divergence found outranks a run that could not look).
//! - `lockstep audit --config F`: the daemon ([`daemon`]): each pair on its
//!   [`schedule`], until SIGINT or SIGTERM (exit 0), with `/status` and `/metrics`
//!   ([`state`]) when `status_addr` is set.
//! - Both alert a `webhook_url` on each change of a pair's verdict ([`webhook`]).
//! - `lockstep audit history --config F [--pair NAME] [--format table|json|html]`:
//!   the trend ([`print`]; the HTML page: [`html`]).
//!
//! One pair's run is [`pair_run`]. An unreachable side is "could not verify" (exit
//! 2), recorded as such, never consistent. The history is opened before any audit,
//! so a corrupt or locked file stops the command before it reads either side.

pub mod config;
mod daemon;
pub mod history;
mod html;
mod pair_run;
mod print;
pub mod schedule;
mod state;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::audit::history::History;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// The audit file: the history's path and the pairs (see docs/audit.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Audit every pair once, then exit with verify's codes (the worst of the pairs).
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the recorded runs and the keys that differ (persistent: in 2+
    /// consecutive runs).
    History(HistoryArgs),
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The audit file whose history to print.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Only this pair.
    #[arg(long, value_name = "NAME")]
    pub pair: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: HistoryFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Table,
    Json,
    /// One self-contained HTML page: charts of differences and coverage per pair.
    Html,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    if let Some(AuditCommand::History(history)) = args.command {
        return print::run(&history);
    }
    let Some(path) = args.config else {
        anyhow::bail!("lockstep audit needs --config FILE (see docs/audit.md)");
    };
    let config = config::load(&path)?;
    let mut history = History::open(&config.history)?;
    if args.once {
        return once(&config, &mut history).await;
    }
    daemon::run(&config, &mut history).await
}

/// Every pair once; the worst exit code. Alerts are delivered (or given up) before
/// the exit.
async fn once(config: &config::AuditConfig, history: &mut History) -> anyhow::Result<ExitCode> {
    let state = state::State::default();
    let sinks = pair_run::Sinks {
        state: &state,
        webhook_url: config.webhook_url.as_deref(),
    };
    let (mut worst, mut alerts) = (0, Vec::new());
    for pair in &config.pairs {
        let (code, alert) =
            pair_run::audit_and_record(pair, history, config.retention, &sinks).await?;
        worst = worse(worst, code);
        alerts.extend(alert);
    }
    for alert in alerts {
        let _ = alert.await;
    }
    Ok(ExitCode::from(worst))
}

/// The worse of two verify exit codes: 1, then 2, then 3, then 0.
fn worse(a: u8, b: u8) -> u8 {
    let rank = |code: u8| match code {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => 0,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn differences_outrank_could_not_verify_which_outranks_incomplete() {
        assert_eq!([0, 3, 2, 1].into_iter().fold(0, super::worse), 1);
        assert_eq!([0, 3, 2].into_iter().fold(0, super::worse), 2);
        assert_eq!([3, 0].into_iter().fold(0, super::worse), 3);
        assert_eq!([0, 0].into_iter().fold(0, super::worse), 0);
    }
}
