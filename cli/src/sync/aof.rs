//! `lockstep sync --source aof:///PATH` (issue 18, part 3): the options of a replay
//! of an append-only file (`lockstep_sync::source::aof`), a Redis 7 appendonlydir
//! or one AOF file, into each target, in mode `full`, to its end or to `--until`.
//! Like an RDB file source: no precheck (no source server to ask), no TTL guard,
//! no heartbeat, keys of the snapshot already expired dropped as a server loading
//! the file drops them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_sync::engine::Mode;
use lockstep_sync::source::aof::AofSpec;

use super::{engine_options, Expanded};
use crate::args::{ModeArg, SyncArgs, TruncatedTailArg};
use crate::connection::Side;

/// The URL scheme of an AOF source.
const SCHEME: &str = "aof://";

/// The AOF of `--source aof:///PATH`, or None for another source; refuses `--until`
/// and `--truncated-tail ok` without one, and a mode with a live stream.
pub(super) fn source_aof(args: &SyncArgs) -> anyhow::Result<Option<AofSpec>> {
    let truncated_tail_ok = args.truncated_tail == TruncatedTailArg::Ok;
    let Some(path) = args.source.strip_prefix(SCHEME) else {
        anyhow::ensure!(
            args.until.is_none() && !truncated_tail_ok,
            "--until and --truncated-tail are options of an AOF source (fix: --source aof:///PATH/appendonlydir)"
        );
        return Ok(None);
    };
    anyhow::ensure!(
        path.starts_with('/'),
        "--source {}: an AOF source is aof:///ABSOLUTE/PATH (three slashes) of an appendonlydir, its manifest, or one AOF file, e.g. aof:///var/lib/redis/appendonlydir",
        args.source
    );
    anyhow::ensure!(
        args.mode != ModeArg::Incremental,
        "--source aof://...: an AOF is replayed from its start, snapshot then commands (fix: --mode full)"
    );
    Ok(Some(AofSpec {
        path: PathBuf::from(path),
        until: args.until,
        truncated_tail_ok,
    }))
}

/// Per target, the options of a replay of `spec`.
pub(super) fn aof_targets(args: &SyncArgs, spec: &AofSpec) -> anyhow::Result<Expanded> {
    if args.mode == ModeArg::FullAndIncremental {
        tracing::info!("the source is an AOF, replayed to its end (or --until): mode full");
    }
    let name = lockstep_sync::endpoint::Endpoint::parse("redis://aof-file.invalid:6379")
        .map_err(|e| anyhow::anyhow!("internal: the AOF source's placeholder: {e}"))?;
    let mut all = Vec::new();
    for (index, url) in args.target.iter().enumerate() {
        let target = args.connection.endpoint(Side::Target, url)?;
        let mut options = engine_options(args, name.clone(), target, index)?;
        options.mode = Mode::Full;
        options.source_aof = Some(spec.clone());
        options.load.ttl_guard = Duration::ZERO;
        options.load.drop_expired = true;
        options.heartbeat = false;
        all.push((index, options));
    }
    let bases = all.iter().map(|(_, o)| o.clone()).collect();
    Ok((bases, all))
}

/// How the source is shown (status, log).
pub(super) fn shown(path: &Path) -> String {
    format!("{SCHEME}{}", path.display())
}
