//! The bodies of lockstep's fuzz targets, one function per entry point that takes
//! bytes from outside (docs/fuzzing.md). Each `fuzz_targets/<name>.rs` is a one-line
//! libFuzzer wrapper around the function of the same name here, so that the same
//! bodies can also run over the checked-in corpora on the stable toolchain
//! (`tests/corpus.rs`).
//!
//! Every body asserts more than "no panic": the limits the caller sets are set
//! small here, and what comes out must respect them (batch sizes, string lengths,
//! argument counts), byte counts must add up, positions must lie inside their
//! input, and no error message may show a password. The allocation bound is
//! libFuzzer's `-malloc_limit_mb`, set per target by `scripts/fuzz.sh`.

pub mod command_decoder;
pub mod config_file;
pub mod dump_decoder;
pub mod endpoint_url;
pub mod key_table;
pub mod rdb_parser;
pub mod resp_decoder;

// The config loader of the `lockstep` binary, compiled here from its sources (see
// config_file.rs); at the crate root, because they name each other `crate::args`
// and `crate::chaos`.
#[allow(dead_code, clippy::all)]
#[path = "../../cli/src/args.rs"]
mod args;
#[allow(dead_code, clippy::all)]
#[path = "../../cli/src/config.rs"]
mod config;

/// The one name `args.rs` takes from the chaos catalog (whose options no config
/// key reaches).
mod chaos {
    #[derive(Debug, clap::Args)]
    pub struct ChaosArgs {}
}

/// The one name `args.rs` takes from the audit (whose TOML file is read by its own
/// loader, not by `config.rs`).
mod audit {
    #[derive(Debug, clap::Args)]
    pub struct AuditArgs {}
}

/// A target's body: one input, a panic when an assertion fails.
pub type Body = fn(&[u8]);

/// The targets by name, for the corpus test and the script's list.
pub const TARGETS: &[(&str, Body)] = &[
    ("rdb_parser", rdb_parser::run),
    ("dump_decoder", dump_decoder::run),
    ("resp_decoder", resp_decoder::run),
    ("command_decoder", command_decoder::run),
    ("key_table", key_table::run),
    ("endpoint_url", endpoint_url::run),
    ("config_file", config_file::run),
];
