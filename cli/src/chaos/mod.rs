//! `lockstep chaos`: the chaos catalog. Each scenario answers one consistency
//! statement of the DTS documentation (quoted exactly in [`Scenario::documented`]):
//! it starts real throwaway servers with the testkit, runs the sync engine in-process,
//! injects the fault, then runs verify and asserts what lockstep promises instead
//! (consistent, or a loss that verify reports key for key).
//!
//! The catalog is a library module of the binary: `lockstep chaos` runs it (any
//! scenarios, any version pairs, a time budget, scenarios in parallel) and
//! `cli/tests/chaos.rs` runs it through that command. Families live one per file:
//! [`flush`], [`expiry`], [`eviction`], [`restart`], [`network`], [`servers`],
//! [`load`], [`cluster`]; [`harness`] holds what they share. Random parts take the run's seed,
//! printed with every failure so the run can be replayed with `--seed`.
//! Redis binaries are the testkit's: `LOCKSTEP_REDIS_6_2`, `LOCKSTEP_REDIS_7_0` and
//! `LOCKSTEP_REDIS_8_2` point at a user's own `redis-server` builds.
//! `--explore` runs the seeded explorer instead ([`explore`]): random episodes that
//! look between the catalog's statements.
//!
//! The catalog must never mock a server, and no scenario may judge by the sync's own
//! state.

mod cluster;
mod eviction;
mod expiry;
pub mod explore;
mod flush;
mod harness;
mod load;
mod network;
mod restart;
mod servers;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lockstep_testkit::RedisVersion;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The options of `lockstep chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Run only this scenario (repeatable); default: every scenario (see --list).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Server versions: each scenario runs from each version into the same version
    /// (6.2, 7.0, 8.2, valkey-8.1). Binaries: LOCKSTEP_REDIS_6_2 / _7_0 / _8_2 and
    /// LOCKSTEP_VALKEY_8_1, else the project's.
    #[arg(long, value_delimiter = ',', conflicts_with = "pairs")]
    pub versions: Vec<String>,
    /// Source:target version pairs, e.g. 6.2:8.2,8.2:valkey-8.1 (default 7.0:7.0).
    #[arg(long, value_delimiter = ',', value_name = "SRC:DST")]
    pub pairs: Vec<String>,
    /// Seed of the random parts (key names, TTLs, kill instants); default: from the
    /// clock, printed so a failure can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop starting scenarios after this many seconds; the ones not run fail the run.
    #[arg(long, default_value_t = 1200)]
    pub budget_secs: u64,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 3)]
    pub parallel: usize,
    /// List the scenarios with the documented behaviour each answers, and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub explore: explore::ExploreArgs,
}

/// A source and a target version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub source: RedisVersion,
    pub target: RedisVersion,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{}", self.source, self.target)
    }
}

/// What a scenario observed when its promise held.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub observed: String,
}

impl Outcome {
    pub fn new(observed: impl Into<String>) -> Outcome {
        Outcome {
            observed: observed.into(),
        }
    }
}

pub type ScenarioFuture = Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send>>;

/// One entry of the catalog.
pub struct Scenario {
    pub name: &'static str,
    /// The DTS documentation's sentence this scenario answers, quoted exactly.
    pub documented: &'static str,
    /// The same, in a few words for the table.
    pub documented_short: &'static str,
    /// What lockstep promises instead, which `run` asserts.
    pub promise: &'static str,
    /// Runs on real servers of `pair` with `seed`; Ok when the promise held.
    pub run: fn(Pair, u64) -> ScenarioFuture,
}

/// Every scenario, in the catalog's order.
pub fn catalog() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(flush::scenarios());
    all.extend(expiry::scenarios());
    all.extend(eviction::scenarios());
    all.extend(restart::scenarios());
    all.extend(network::scenarios());
    all.extend(servers::scenarios());
    all.extend(load::scenarios());
    all.extend(cluster::scenarios());
    all
}

/// One finished run of a scenario on a pair.
struct Row {
    index: usize,
    pair: Pair,
    result: Result<Outcome, String>,
    elapsed: Duration,
}

/// Runs `lockstep chaos`; exit 0 only when every chosen scenario held on every pair.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let catalog = catalog();
    if args.list {
        print_list(&catalog);
        return Ok(ExitCode::SUCCESS);
    }
    let seed = args.seed.unwrap_or_else(seed_from_the_clock);
    if args.explore.explore {
        return explore::run(&args.explore, seed).await;
    }
    let chosen = choose(&catalog, &args.scenarios)?;
    let pairs = pairs(&args)?;
    println!(
        "lockstep chaos: {} scenarios x {} version pairs, seed {seed}, {} at a time, budget {} s",
        chosen.len(),
        pairs.len(),
        args.parallel.max(1),
        args.budget_secs
    );
    let deadline = Instant::now() + Duration::from_secs(args.budget_secs);
    let permits = Arc::new(Semaphore::new(args.parallel.max(1)));
    let mut jobs = JoinSet::new();
    for &pair in &pairs {
        for &index in &chosen {
            let job = Job {
                index,
                pair,
                seed,
                run: catalog[index].run,
            };
            jobs.spawn(job.run(permits.clone(), deadline));
        }
    }
    let mut rows = collect_rows(&catalog, jobs).await?;
    rows.sort_by_key(|r| (r.index, pairs.iter().position(|p| *p == r.pair)));
    print_table(&catalog, &rows);
    Ok(report_failures(&catalog, &rows, seed))
}

/// `--list`: every scenario with the documented sentence and lockstep's promise.
fn print_list(catalog: &[Scenario]) {
    for s in catalog {
        println!(
            "{}\n  documented: \"{}\"\n  lockstep:   {}\n",
            s.name, s.documented, s.promise
        );
    }
}

/// A seed when none is given: the clock's nanoseconds, below a million.
fn seed_from_the_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000)
        .unwrap_or(1)
}

/// One scenario on one pair, waiting for its permit and bounded by the budget.
struct Job {
    index: usize,
    pair: Pair,
    seed: u64,
    run: fn(Pair, u64) -> ScenarioFuture,
}

impl Job {
    async fn run(self, permits: Arc<Semaphore>, deadline: Instant) -> Row {
        let started = Instant::now();
        let (result, elapsed) = match permits.acquire_owned().await {
            Err(_) => (Err("the scheduler closed".to_owned()), started.elapsed()),
            Ok(_permit) => self.run_within(deadline, started).await,
        };
        Row {
            index: self.index,
            pair: self.pair,
            result,
            elapsed,
        }
    }

    /// The scenario's result and how long it ran, or why it did not run (and how
    /// long it waited since `queued`).
    async fn run_within(
        &self,
        deadline: Instant,
        queued: Instant,
    ) -> (Result<Outcome, String>, Duration) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let result = Err("not run: the --budget-secs ran out".to_owned());
            return (result, queued.elapsed());
        }
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(left, tokio::spawn((self.run)(self.pair, self.seed))).await;
        let elapsed = started.elapsed();
        let result = match outcome {
            Err(_) => Err("stopped: the --budget-secs ran out".to_owned()),
            Ok(Err(join)) => Err(format!("panicked: {join}")),
            Ok(Ok(Err(err))) => Err(format!("{err:#}")),
            Ok(Ok(Ok(outcome))) => Ok(outcome),
        };
        (result, elapsed)
    }
}

/// Every job's row as it finishes, with a line each.
async fn collect_rows(catalog: &[Scenario], mut jobs: JoinSet<Row>) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    while let Some(row) = jobs.join_next().await {
        let row = row.context("a scenario's runner")?;
        println!(
            "  {} {} {} ({:.1} s)",
            if row.result.is_ok() {
                "held  "
            } else {
                "FAILED"
            },
            catalog[row.index].name,
            row.pair,
            row.elapsed.as_secs_f64()
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Each failure with its replay command, then the count; exit 1 when any failed.
fn report_failures(catalog: &[Scenario], rows: &[Row], seed: u64) -> ExitCode {
    let failed: Vec<&Row> = rows.iter().filter(|r| r.result.is_err()).collect();
    for row in &failed {
        let name = catalog[row.index].name;
        println!(
            "\nFAILED {name} {}: {}\n  replay: lockstep chaos --scenario {name} --pairs {}:{} --seed {seed}",
            row.pair,
            row.result.as_ref().err().map(String::as_str).unwrap_or_default(),
            row.pair.source,
            row.pair.target
        );
    }
    println!(
        "\n{} of {} held (seed {seed})",
        rows.len() - failed.len(),
        rows.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Indexes of the named scenarios (all when none is named).
fn choose(catalog: &[Scenario], names: &[String]) -> anyhow::Result<Vec<usize>> {
    if names.is_empty() {
        return Ok((0..catalog.len()).collect());
    }
    names
        .iter()
        .map(|name| {
            catalog
                .iter()
                .position(|s| s.name == name)
                .with_context(|| {
                    format!("no scenario named {name:?}; `lockstep chaos --list` shows them")
                })
        })
        .collect()
}

/// The version pairs of `--versions` or `--pairs` (default 7.0 -> 7.0).
fn pairs(args: &ChaosArgs) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for v in &args.versions {
        let version = RedisVersion::parse(v)?;
        pairs.push(Pair {
            source: version,
            target: version,
        });
    }
    for p in &args.pairs {
        let Some((source, target)) = p.split_once(':') else {
            bail!("--pairs {p:?}: write SOURCE:TARGET, e.g. 6.2:8.2");
        };
        pairs.push(Pair {
            source: RedisVersion::parse(source)?,
            target: RedisVersion::parse(target)?,
        });
    }
    if pairs.is_empty() {
        pairs.push(Pair {
            source: RedisVersion::V7_0,
            target: RedisVersion::V7_0,
        });
    }
    Ok(pairs)
}

fn print_table(catalog: &[Scenario], rows: &[Row]) {
    println!(
        "\n{:<28} {:<10} {:<34} {:<6} {:>7}  observed",
        "scenario", "versions", "documented (DTS)", "result", "time"
    );
    for row in rows {
        let s = &catalog[row.index];
        let (verdict, observed) = match &row.result {
            Ok(outcome) => ("pass", outcome.observed.clone()),
            Err(err) => ("FAIL", err.lines().next().unwrap_or_default().to_owned()),
        };
        println!(
            "{:<28} {:<10} {:<34} {:<6} {:>6.1}s  {}",
            s.name,
            row.pair.to_string(),
            s.documented_short,
            verdict,
            row.elapsed.as_secs_f64(),
            observed
        );
    }
}
