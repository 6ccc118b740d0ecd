//! `lockstep check`: runs the precheck and prints one line per item with its outcome,
//! reason and fix. Exit 0 when nothing fails, 1 when an item fails.
//!
//! How it fits: `main` runs it for `lockstep check`; `sync.rs` reuses
//! [`precheck_options`] so both check the same things. It only reads both sides:
//! it never writes to the source or the target.

use std::process::ExitCode;
use std::time::Duration;

use lockstep_sync::apply::ApplyOptions;
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::precheck::{precheck, CheckItem, Outcome, PrecheckOptions};

use crate::args::{CheckArgs, ConflictArg, ConnectionArgs};
use crate::connection::Side;

/// What the precheck of one source and target checks (also run by `lockstep sync`).
pub fn precheck_options(
    source: Endpoint,
    target: Endpoint,
    connection: &ConnectionArgs,
    dbs: Vec<u32>,
    conflict: ConflictArg,
) -> PrecheckOptions {
    PrecheckOptions {
        source,
        target,
        dbs: if dbs.is_empty() {
            (0..16).collect()
        } else {
            dbs
        },
        precheck_conflicts: conflict == ConflictArg::Precheck,
        rate_window: Duration::from_secs(1),
        connect: ApplyOptions {
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            ..ApplyOptions::default()
        },
        source_tls: connection.tls(Side::Source),
        target_tls: connection.tls(Side::Target),
        filter: None,
        source_mode: lockstep_sync::engine::SourceMode::Auto,
        follows_changes: true,
    }
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let source = args.connection.endpoint(Side::Source, &args.source)?;
    let base = precheck_options(
        source.clone(),
        args.connection.endpoint(Side::Target, &args.target)?,
        &args.connection,
        args.dbs,
        args.conflict,
    );
    // A cluster source is checked primary by primary: each must accept the same
    // credentials and let them replicate. One that cannot be asked is checked as
    // given (its connectivity item then says why).
    let connection = ApplyOptions {
        tls: base.source_tls.clone(),
        ..base.connect.clone()
    };
    let sources = match lockstep_sync::cluster_source::discover(&source, connection).await {
        Ok(Some(cluster)) => cluster.primaries(&source),
        Ok(None) | Err(_) => vec![source.clone()],
    };
    let several = sources.len() > 1;
    let mut items = Vec::new();
    for primary in sources {
        if several {
            println!("source primary {primary}:");
        }
        let options = PrecheckOptions {
            source: primary,
            ..base.clone()
        };
        let checked = precheck(&options).await;
        print_items(&checked);
        items.extend(checked);
    }
    let failed = items.iter().filter(|i| i.outcome == Outcome::Fail).count();
    let warned = items.iter().filter(|i| i.outcome == Outcome::Warn).count();
    println!(
        "precheck: {} items, {failed} failed, {warned} warnings",
        items.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_items(items: &[CheckItem]) {
    for item in items {
        let mark = match item.outcome {
            Outcome::Pass => "pass",
            Outcome::Info => "info",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        };
        println!("{mark:<4}  {}: {}", item.name, item.detail);
        if let Some(fix) = &item.fix {
            println!("      fix: {fix}");
        }
    }
}
