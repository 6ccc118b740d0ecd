//! `lockstep verify`: runs the comparison and turns its outcome into an exit code
//! (0 consistent, 1 differences found, 2 the check itself failed).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lockstep_verify::{compare, CompareOptions};

use crate::args::VerifyArgs;

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let source = redis::Client::open(args.source.as_str()).context("the source URL")?;
    let target = redis::Client::open(args.target.as_str()).context("the target URL")?;
    let mut options = CompareOptions {
        ttl_tolerance: Duration::from_millis(args.ttl_tolerance_ms),
        ..CompareOptions::default()
    };
    if !args.dbs.is_empty() {
        options.dbs = args.dbs;
    }
    let report = compare(&source, &target, &options).await?;
    println!("{report}");
    Ok(if report.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
