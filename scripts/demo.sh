#!/usr/bin/env bash
# Runs lockstep's main job on an embedded default: two throwaway Redis servers
# (source 7.0, target 8.2) started by the testkit, the source filled with every type,
# then sync, verify and a report. Installs the Redis versions when missing and builds
# the release binary. Extra arguments go to `lockstep demo` (see --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/install-redis.sh"
cargo build --release --quiet -p lockstep
exec "$root/target/release/lockstep" demo "$@"
