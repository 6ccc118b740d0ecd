#!/usr/bin/env bash
# Runs lockstep's whole test suite on this machine: installs the server versions the
# tests need (Redis 6.2, 7.0, 8.2 and Valkey 8.1) when missing, then every test of
# every crate against real servers. Uses cargo-nextest (one process per test, so a crashing test cannot
# take others with it) when it is installed, plain `cargo test` otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/install-redis.sh"
# The audit HTML test screenshots the page in headless Chromium (cli/tests/audit_html.rs).
"$root/scripts/install-browser.sh"
# Most tests wait on servers rather than compute: more threads than cores keeps
# the 2-core machines busy without starving them.
threads="${LOCKSTEP_TEST_THREADS:-4}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "$threads" "$@"
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@" -- --test-threads "$threads"
fi
# The fuzz targets' bodies over their checked-in corpora, without libFuzzer
# (docs/fuzzing.md); the fuzz crate is outside the workspace.
cargo test --manifest-path fuzz/Cargo.toml --quiet
