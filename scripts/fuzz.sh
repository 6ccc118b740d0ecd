#!/usr/bin/env bash
# Runs lockstep's libFuzzer targets (fuzz/, docs/fuzzing.md) one after the other.
#
# usage: scripts/fuzz.sh [seconds-per-target] [target...]
#   seconds-per-target  default 600; targets default to all of them:
#   rdb_parser dump_decoder resp_decoder command_decoder key_table endpoint_url config_file
#
# One fuzzer at a time, niced (the machine is shared). Each target starts from its
# checked-in seeds (fuzz/corpus/<target>, read only) plus what earlier runs found
# (fuzz/target/corpus/<target>, where new inputs go); crashes, leaks and inputs over
# the allocation bound land in fuzz/artifacts/<target>/, logs in fuzz/target/logs/.
# Exit status: 0 when every target ran its time without a finding.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-fuzz passes rustc nightly-only flags (-Zsanitizer=address, sanitizer
# coverage passes); this machine and CI have the stable toolchain only, and
# RUSTC_BOOTSTRAP=1 makes stable accept them. Nothing else is built this way.
export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own target dir, apart from the workspace's.
unset CARGO_TARGET_DIR
FUZZ_TARGET_DIR=fuzz/target

ALL=(rdb_parser dump_decoder resp_decoder command_decoder key_table endpoint_url config_file)
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL[@]}")

# The bounds of docs/fuzzing.md: the largest single allocation (MiB) and the
# longest input (bytes) per target. The targets set the parsers' limits small
# (1 MiB strings), so a bigger allocation means a length field was trusted.
malloc_limit_mb() {
  case $1 in
    rdb_parser | dump_decoder | config_file) echo 32 ;;
    *) echo 8 ;;
  esac
}
max_len() {
  case $1 in
    rdb_parser | dump_decoder | resp_decoder | command_decoder) echo 65536 ;;
    config_file) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
}
nice -n 10 cargo fuzz build --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR"
mkdir -p "$FUZZ_TARGET_DIR/logs"
failed=0
for target in "${targets[@]}"; do
  log="$FUZZ_TARGET_DIR/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"
  mkdir -p "$FUZZ_TARGET_DIR/corpus/$target" "fuzz/artifacts/$target"
  echo "== $target: ${seconds}s, malloc limit $(malloc_limit_mb "$target") MiB, max_len $(max_len "$target"), log $log"
  if nice -n 10 cargo fuzz run --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" "$target" \
    "$FUZZ_TARGET_DIR/corpus/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb="$(malloc_limit_mb "$target")" -max_len="$(max_len "$target")" \
    -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status="FAILED (see $log and fuzz/artifacts/$target/)"
    failed=1
  fi
  done_line=$(grep -E '^#[0-9]+ +DONE' "$log" | tail -1 || true)
  execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  echo "   $status; executions: ${execs:-?}; last: ${done_line:-$(grep -E '^#[0-9]+' "$log" | tail -1)}"
done
exit $failed
