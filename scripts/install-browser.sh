#!/usr/bin/env bash
# Installs the headless browser the audit HTML test drives (cli/tests/audit_html.rs):
# Debian's `chromium` package. Idempotent: nothing is installed when a chromium binary
# is already found, through LOCKSTEP_CHROMIUM or on PATH (chromium, chromium-browser).
set -euo pipefail

find_chromium() {
  if [ -n "${LOCKSTEP_CHROMIUM:-}" ]; then
    [ -x "$LOCKSTEP_CHROMIUM" ] && { echo "$LOCKSTEP_CHROMIUM"; return 0; }
    echo "install-browser: LOCKSTEP_CHROMIUM=$LOCKSTEP_CHROMIUM is not an executable file; unset it or point it at a chromium binary" >&2
    exit 1
  fi
  command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null || return 1
}

if ! bin="$(find_chromium)"; then
  echo "install-browser: installing Chromium from Debian (chromium)" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
  bin="$(find_chromium)" || { echo "install-browser: the chromium package did not put chromium on PATH" >&2; exit 1; }
fi
printf 'install-browser: %s: %s\n' "$bin" "$("$bin" --version 2>/dev/null || echo 'version unknown')" >&2
