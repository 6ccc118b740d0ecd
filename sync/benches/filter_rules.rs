//! The filter's cost per stream command under each kind of rule, against the default
//! filter in the same run (issue 17's bar: declarative rules within 5% of none on the
//! whole follower). Not a timed test: it prints ns per command, the median of
//! `FILTER_BENCH_ROUNDS` (5) rounds, for the command mix redis-benchmark sends
//! (`set,incr,lpush,hset`, as tests/benches/sync_incremental.rs).
//!
//! `cargo bench -p lockstep-sync --bench filter_rules`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_sync::filter::Filter;
use lockstep_sync::rdb::Kind;
use lockstep_sync::rename::KeyRenames;
use lockstep_sync::rules::hash_fields::HashFieldDrops;
use lockstep_sync::rules::key_match::KeyPatterns;
use lockstep_sync::rules::rename_regex::RegexRename;
use lockstep_sync::rules::ttl::TtlRule;
use lockstep_sync::rules::types::TypeRules;

fn mix(n: usize) -> Vec<Vec<Bytes>> {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    (0..n)
        .map(|i| match i % 4 {
            0 => vec![
                b("SET"),
                b(&format!("key:{:012}", i * 7919 % 100_000)),
                b("xxx"),
            ],
            1 => vec![b("INCR"), b("counter:__rand_int__")],
            2 => vec![b("LPUSH"), b("mylist"), b("xxx")],
            _ => vec![
                b("HSET"),
                b(&format!("myhash:{:012}", i % 1000)),
                b("element:__rand_int__"),
                b("xxx"),
            ],
        })
        .collect()
}

fn ns_per_command(filter: &Filter, commands: &[Vec<Bytes>]) -> f64 {
    let start = Instant::now();
    for argv in commands {
        black_box(filter.command(black_box(argv), 0).ok());
    }
    start.elapsed().as_nanos() as f64 / commands.len() as f64
}

fn main() {
    let rounds: usize = std::env::var("FILTER_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let commands = mix(400_000);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases: Vec<(&str, Filter)> = vec![
        ("none", Filter::default()),
        (
            "prefix",
            Filter {
                exclude_prefixes: vec![b"tmp:".to_vec()],
                ..Filter::default()
            },
        ),
        (
            "glob",
            Filter {
                patterns: KeyPatterns::new(&[], &s(&["*:tmp"]), &[], &[]).expect("valid"),
                ..Filter::default()
            },
        ),
        (
            "regex",
            Filter {
                patterns: KeyPatterns::new(&[], &[], &[], &s(&[r"^tmp:\d+$"])).expect("valid"),
                ..Filter::default()
            },
        ),
        (
            "types",
            Filter {
                types: TypeRules::new(Vec::new(), vec![Kind::Stream]),
                ..Filter::default()
            },
        ),
        (
            "ttl-cap",
            Filter {
                ttl_rule: TtlRule::Cap(Duration::from_secs(86_400)),
                ..Filter::default()
            },
        ),
        (
            "hash-field",
            Filter {
                hash_fields: HashFieldDrops::parse(&s(&["ssn"])).expect("valid"),
                ..Filter::default()
            },
        ),
        (
            "rename-prefix",
            Filter {
                renames: KeyRenames::new(vec![(b"key:".to_vec(), b"k2:".to_vec())]),
                ..Filter::default()
            },
        ),
        (
            "rename-regex",
            Filter {
                renames: KeyRenames::default().with_regexes(vec![RegexRename::new(
                    r"key:(\d+)",
                    "k2:$1",
                )
                .expect("valid")]),
                ..Filter::default()
            },
        ),
    ];
    println!("| rule | ns per command (median of {rounds}) | extra over none |");
    println!("|---|---|---|");
    let mut base = 0.0;
    for (name, filter) in &cases {
        let mut runs: Vec<f64> = (0..rounds)
            .map(|_| ns_per_command(filter, &commands))
            .collect();
        runs.sort_by(f64::total_cmp);
        let median = runs[rounds / 2];
        if *name == "none" {
            base = median;
        }
        println!("| {name} | {median:.1} | {:+.1} ns |", median - base);
    }
}
