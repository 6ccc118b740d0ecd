//! `lockstep chaos --explore`: a seeded, replayable explorer in the spirit of
//! TigerBeetle's VOPR and Jepsen. The catalog answers documented statements one at a
//! time; the explorer looks between them: each episode draws a version pair, task
//! options (database selection and mapping, prefix rules, TTL extension, and the
//! declarative rules of issue 17 or a combination the sync must refuse), a workload
//! over every kind of command the stream carries in up to 64 databases, and faults at
//! random instants of both phases, then quiesces and judges with `lockstep verify`, an
//! independent plain-read checker and invariants (no guard expiry left, checkpoints
//! monotone, an honest lag, no password printed).
//!
//! Files, from the bottom up (no module imports a module that imports it back):
//! [`rules`] (the declarative rules: their flags and their meaning, pure),
//! [`shared`] (task options, database count, clock key, unix ms), [`faults`] (what
//! can happen and when, pure), [`workload`] (commands and their runner), [`checker`]
//! (shares no code with verify or sync), [`invariants`], [`draw_rules`] (the rules
//! from a seeded generator, pure), [`schedule`] (seed -> plan, pure), [`world`]
//! (servers, proxies, the `lockstep sync` child process), [`inject`] (each fault done to the world), [`verify`] (the binary's verdict
//! against the checker's), [`refusal`] (an episode whose rules the sync must refuse),
//! [`episode`] (one episode run and judged). A failure prints its seed, its episode,
//! its drawn options and a one-line replay command.

mod checker;
mod draw_rules;
mod episode;
mod faults;
mod inject;
mod invariants;
mod refusal;
mod rules;
mod schedule;
mod shared;
mod verify;
mod workload;
mod world;

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The explorer's options of `lockstep chaos`.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {
    /// Run the explorer instead of the catalog: random episodes of workload, task
    /// options, version pairs and faults, from --seed.
    #[arg(long)]
    pub explore: bool,
    /// Explorer: start no new episode after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub duration: u64,
    /// Explorer: run at most this many episodes.
    #[arg(long, value_name = "N")]
    pub episodes: Option<u64>,
    /// Explorer: the first episode's number (a replay of one episode starts at it).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub start_episode: u64,
    /// Explorer: print each episode's plan (from the seed alone) without running it.
    #[arg(long)]
    pub plan_only: bool,
    /// Explorer: run only the episodes whose source is one of these versions (e.g.
    /// 7.0,8.2); the others are skipped, not re-drawn, so each episode's plan stays
    /// what the seed says. Default: every version.
    #[arg(long, value_delimiter = ',', value_name = "VERSION")]
    pub source_versions: Vec<String>,
    /// Explorer: leave these kinds of declarative rules out of every episode (they
    /// are drawn, then taken out, so the other draws stay what the seed says).
    #[arg(long, value_delimiter = ',', value_enum, value_name = "KIND")]
    pub without_rules: Vec<rules::RuleKind>,
}

/// An episode that never finishes within this is a finding of its own.
const EPISODE_BOUND: Duration = Duration::from_secs(300);

/// Runs episodes until the duration or the episode count is reached; exit 1 when
/// any episode found something.
pub async fn run(args: &ExploreArgs, seed: u64) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    println!(
        "lockstep chaos --explore: seed {seed}, from episode {}, for {} s",
        args.start_episode, args.duration
    );
    let sources = args
        .source_versions
        .iter()
        .map(|v| lockstep_testkit::RedisVersion::parse(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut failed = Vec::new();
    let mut ran = 0u64;
    for index in args.start_episode.. {
        if args.episodes.is_some_and(|n| ran >= n)
            || (ran > 0 && started.elapsed() >= Duration::from_secs(args.duration))
            || (args.plan_only && args.episodes.is_none() && ran >= 20)
        {
            break;
        }
        let plan = schedule::episode_without(seed, index, &args.without_rules);
        if !sources.is_empty() && !sources.contains(&plan.pair.source) {
            println!(
                "episode {index}: skipped ({}: its source is not in --source-versions)",
                plan.pair
            );
            continue;
        }
        ran += 1;
        print_plan(index, &plan);
        if args.plan_only {
            continue;
        }
        let episode_started = Instant::now();
        let findings = match tokio::time::timeout(EPISODE_BOUND, episode::run(&plan)).await {
            Err(_) => vec![format!("episode: not finished within {EPISODE_BOUND:?}")],
            Ok(Err(err)) => vec![format!("episode: could not run: {err:#}")],
            Ok(Ok(verdict)) => {
                println!("  {}", verdict.summary);
                verdict.findings
            }
        };
        let took = episode_started.elapsed().as_secs_f64();
        if findings.is_empty() {
            println!("  held ({took:.0} s)");
            continue;
        }
        println!("  FAILED ({took:.0} s):");
        for line in &findings {
            println!("    {line}");
        }
        println!("  replay: {}", plan.replay_command());
        failed.push((plan, findings));
    }
    print_failures(seed, &failed);
    println!(
        "\n{} of {ran} episodes held (seed {seed}, {:.0} s)",
        ran - failed.len() as u64,
        started.elapsed().as_secs_f64()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The episode's header: what its plan decided, from the seed alone.
fn print_plan(index: u64, plan: &schedule::EpisodePlan) {
    println!(
        "episode {index}: {} {}, source {:?} target {:?}{}, {} preload keys, {} ops over {:.0} s, faults {:?}",
        plan.pair,
        plan.options.describe(),
        plan.source_persistence,
        plan.target_persistence,
        if plan.source_password.is_some() { ", source with a password" } else { "" },
        plan.preload.len(),
        plan.load.len(),
        plan.load_ms as f64 / 1000.0,
        plan.faults.iter().map(|f| (f.at_ms, &f.fault)).collect::<Vec<_>>()
    );
}

/// Each failed episode: the checks that failed, the first finding, the replay.
fn print_failures(seed: u64, failed: &[(schedule::EpisodePlan, Vec<String>)]) {
    for (plan, findings) in failed {
        let checks: Vec<&str> = findings
            .iter()
            .filter_map(|f| f.split(':').next())
            .collect();
        let mut checks = checks;
        checks.dedup();
        println!(
            "\nFAILED seed {seed} episode {} ({}): {}\n  {} {}\n  replay: {}",
            plan.index,
            checks.join(", "),
            findings.first().map(String::as_str).unwrap_or_default(),
            plan.pair,
            plan.options.describe(),
            plan.replay_command()
        );
    }
}
