//! The schedule: a pure function from (seed, episode) to everything the episode
//! decides: the version pair, the task's options, the servers' persistence, the data
//! written before the sync starts, the timed workload and the timed faults (the
//! declarative rules are drawn by [`super::draw_rules`], from a generator of their
//! own). Nothing
//! here does I/O or reads a clock, so a replay with the same seed makes the same
//! decisions (wall-clock effects, such as which write lands during the copy, differ).
//!
//! It must never do I/O or read a clock.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use lockstep_testkit::server::Persistence;
use lockstep_testkit::RedisVersion;

use super::draw_rules;
use super::faults::{Fault, TimedFault};
use super::rules::RuleKind;
use super::shared::{TaskOptions, CLOCK_FAMILY, DATABASES};
use super::workload::{self, KeySpace, Op, TimedOp};
use crate::chaos::Pair;

/// Everything one episode decides, from the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodePlan {
    pub seed: u64,
    pub index: u64,
    pub pair: Pair,
    pub options: TaskOptions,
    pub source_persistence: Persistence,
    pub target_persistence: Persistence,
    /// Replicas of the source: one when the plan fails over, else none.
    pub source_replicas: usize,
    /// The source's password (an authenticated source), never to appear in a log.
    pub source_password: Option<String>,
    /// Written before the sync starts: what the full copy carries.
    pub preload: Vec<Op>,
    /// Written while the sync runs, at instants relative to its start.
    pub load: Vec<TimedOp>,
    pub faults: Vec<TimedFault>,
    /// How long the load lasts, in ms from the sync's start.
    pub load_ms: u64,
    /// `--full-keys-per-sec`: makes the full copy last a few seconds.
    pub copy_keys_per_sec: u64,
    /// The key names and databases the workload uses.
    pub space: KeySpace,
    /// Kinds of rules left out of the drawn ones (`--without-rules`).
    pub without_rules: Vec<RuleKind>,
}

impl EpisodePlan {
    /// The one-line command that replays this episode alone.
    pub fn replay_command(&self) -> String {
        let without = if self.without_rules.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = self.without_rules.iter().map(|k| k.name()).collect();
            format!(" --without-rules {}", names.join(","))
        };
        format!(
            "lockstep chaos --explore --seed {} --start-episode {} --episodes 1{without}",
            self.seed, self.index
        )
    }
}

/// The random generator of episode `index` of `seed` (episodes are independent: an
/// episode replays alone).
fn episode_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng
}

/// The generator of episode `index`'s declarative rules: its own, so that adding the
/// rules changed none of the other draws (a seed's episodes without rules are the
/// ones it drew before).
fn rules_rng(seed: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7275_6c65_7300_0017);
    rng.set_stream(index);
    rng
}

const VERSIONS: [RedisVersion; 3] = [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2];

/// The plan of episode `index` of the run seeded `seed`.
#[cfg(test)]
pub fn episode(seed: u64, index: u64) -> EpisodePlan {
    episode_without(seed, index, &[])
}

/// The plan of episode `index` of the run seeded `seed`, with the rules of the kinds
/// `without` taken out once drawn (every other draw stays the seed's).
pub fn episode_without(seed: u64, index: u64, without: &[RuleKind]) -> EpisodePlan {
    let mut rng = episode_rng(seed, index);
    let pair = Pair {
        source: VERSIONS[rng.random_range(0..3)],
        target: VERSIONS[rng.random_range(0..3)],
    };
    let space = KeySpace::choose(&mut rng);
    let mut options = task_options(&mut rng, &space);
    let drawn = draw_rules::rules(&mut rules_rng(seed, index), options.extend_ttl);
    options.rules = without
        .iter()
        .fold(drawn, |rules, kind| rules.without(*kind));
    if !options.rules.include.is_empty() && options.prefix.is_empty() {
        // Include rules keep the clock too (the lag check reads it on the target).
        options.prefix.push(CLOCK_FAMILY.to_owned());
    }
    let source_persistence = if rng.random_bool(0.5) {
        Persistence::Rdb
    } else {
        Persistence::None
    };
    // A target with persistence keeps every write it acknowledged (AOF, fsync
    // always), so its checkpoint never goes back; without, a restart empties it.
    let target_persistence = if rng.random_bool(0.5) {
        Persistence::Aof
    } else {
        Persistence::None
    };
    let source_password = rng
        .random_bool(0.3)
        .then(|| format!("explore-{:08x}", rng.random::<u32>()));
    let preload = workload::preload(&mut rng, &space, &options);
    let load_ms = rng.random_range(15_000..25_000);
    let load = workload::timed_load(&mut rng, &space, &options, load_ms);
    let faults = super::faults::choose(&mut rng, load_ms);
    let copy_keys_per_sec = rng.random_range(150..400);
    let source_replicas = usize::from(faults.iter().any(|f| f.fault == Fault::FailoverSource));
    EpisodePlan {
        seed,
        index,
        pair,
        options,
        source_persistence,
        target_persistence,
        source_replicas,
        source_password,
        preload,
        load,
        faults,
        load_ms,
        copy_keys_per_sec,
        space,
        without_rules: without.to_vec(),
    }
}

/// Random task options that lockstep supports for the workload of `space`: a
/// selection always keeps database 0 (the clock key), a mapping is one to one onto
/// databases nothing else uses.
fn task_options(rng: &mut ChaCha8Rng, space: &KeySpace) -> TaskOptions {
    let mut options = TaskOptions::default();
    match rng.random_range(0..10) {
        0..=4 => {}
        5..=7 => {
            options.dbs = space
                .dbs
                .iter()
                .copied()
                .filter(|&db| db == 0 || rng.random_bool(0.6))
                .collect();
        }
        _ => {
            options.dbs = space.dbs.clone();
            let free: Vec<u32> = (0..DATABASES)
                .filter(|db| !space.dbs.contains(db))
                .collect();
            let mut used = Vec::new();
            for &db in &space.dbs {
                if rng.random_bool(0.5) {
                    let to = free[rng.random_range(0..free.len())];
                    if !used.contains(&to) {
                        used.push(to);
                        options.map_db.push((db, to));
                    }
                }
            }
        }
    }
    match rng.random_range(0..10) {
        0..=5 => {}
        6..=7 => {
            // The clock's family is always included.
            options.prefix.push(CLOCK_FAMILY.to_owned());
            for family in workload::FAMILIES {
                if rng.random_bool(0.5) {
                    options.prefix.push(family.to_owned());
                }
            }
        }
        _ => {
            let family = workload::FAMILIES[rng.random_range(0..workload::FAMILIES.len())];
            options.exclude_prefix.push(family.to_owned());
        }
    }
    if rng.random_bool(0.25) {
        options.extend_ttl = [60, 600, 7200][rng.random_range(0..3)];
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for index in 0..5 {
            assert_eq!(episode(42, index), episode(42, index));
        }
    }

    #[test]
    fn episodes_and_seeds_differ() {
        assert_ne!(episode(42, 0), episode(42, 1));
        assert_ne!(episode(42, 0), episode(43, 0));
    }

    #[test]
    fn an_episode_replays_alone() {
        // Episode 3 does not depend on the episodes before it.
        let fresh = episode(7, 3);
        for i in 0..3 {
            episode(7, i);
        }
        assert_eq!(episode(7, 3), fresh);
    }

    #[test]
    fn plans_stay_within_what_lockstep_supports() {
        for index in 0..200 {
            let plan = episode(1, index);
            let o = &plan.options;
            if !o.dbs.is_empty() {
                assert!(o.dbs.contains(&0), "db 0 (the clock) is always kept");
            }
            let targets: Vec<u32> = o.map_db.iter().map(|(_, to)| *to).collect();
            for to in &targets {
                assert!(!plan.space.dbs.contains(to), "mapped onto a used db");
                assert_eq!(targets.iter().filter(|t| *t == to).count(), 1);
            }
            assert!(!o.map_db.is_empty() <= !o.dbs.is_empty());
            assert!(plan.faults.iter().all(|f| f.at_ms <= plan.load_ms));
            assert!(plan.load.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        }
    }

    #[test]
    fn the_options_decide_keys_and_databases() {
        let options = TaskOptions {
            dbs: vec![0, 5],
            map_db: vec![(5, 40)],
            prefix: vec!["str:".into()],
            exclude_prefix: vec!["str:x".into()],
            ..TaskOptions::default()
        };
        assert!(options.keeps_db(5) && !options.keeps_db(6));
        assert_eq!(options.target_db(5), 40);
        assert_eq!(options.target_db(0), 0);
        assert!(options.keeps_key(b"str:1"));
        assert!(!options.keeps_key(b"str:x1"));
        assert!(!options.keeps_key(b"lst:1"));
        assert!(!TaskOptions::default().keeps_key(b"LOCKSTEP_CHECKPOINT"));
    }
}
