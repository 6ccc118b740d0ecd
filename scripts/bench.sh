#!/usr/bin/env bash
# Runs every benchmark of issue 9 with one command and records the results:
#   full sync of three data sets (2M strings, 500k mixed keys, 20 x 50 MB) against a
#   native replica, incremental lag under redis-benchmark load against a native
#   replica, full-copy memory with a 500 MB list in a 2 GB set, verify against a SCAN
#   walk and a naive per-key script, the audit against verify (keys/s) and the audit
#   daemon's RSS over 100 audits, and the RDB parser against redis-check-rdb.
# The sync benches append their tables to docs/benchmarks.md (BENCH_RECORD=1); the
# whole output goes to target/bench-<UTC time>.log. Each measurement is repeated
# BENCH_RUNS times (3) and reported as median, min and max.
#
#   scripts/bench.sh            # everything (about 15 minutes on 2 cores)
#   BENCH_RUNS=1 scripts/bench.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/install-redis.sh"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -p lockstep
export LOCKSTEP_BIN="$target_dir/release/lockstep"
export BENCH_RECORD=1 BENCH_RUNS="${BENCH_RUNS:-3}"
log="$target_dir/bench-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "lockstep benchmarks at $(git rev-parse --short HEAD), log: $log"
{
  for dataset in strings mixed big; do
    BENCH_DATASET=$dataset cargo bench -p lockstep-tests --bench sync_full
  done
  BENCH_SECONDS="${BENCH_SECONDS:-15}" cargo bench -p lockstep-tests --bench sync_incremental
  BENCH_TOTAL_MB="${BENCH_TOTAL_MB:-2000}" BENCH_BIG_MB=500 \
    cargo bench -p lockstep-tests --bench sync_memory
  cargo bench -p lockstep-verify --bench verify_full
  cargo bench -p lockstep-tests --bench audit_rate
  cargo bench -p lockstep-tests --bench audit_memory
  cargo bench -p lockstep-sync --bench rdb_parse
} 2>&1 | tee "$log"
