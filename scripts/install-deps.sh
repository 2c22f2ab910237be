#!/usr/bin/env bash
# Installs the system packages Tally builds and tests with, when they are missing.
# Debian/Ubuntu (apt-get); run as root or with sudo available.
set -euo pipefail

need=()
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists sqlite3 2>/dev/null || need+=(libsqlite3-dev)
# libyaml reads the config files; libcrypto hashes fingerprints (neither pulls in Foundation).
pkg-config --exists yaml-0.1 2>/dev/null || need+=(libyaml-dev)
pkg-config --exists libcrypto 2>/dev/null || need+=(libssl-dev)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# setpriv runs test servers as nobody and ties their life to the test process.
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# PostgreSQL (make test, make bench): Debian's postgresql provides /usr/lib/postgresql/<version>/bin.
if [ "${TALLY_NEEDS_POSTGRES:-0}" = 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  need+=(postgresql)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${need[*]}"
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "missing packages (${need[*]}) and not root: install them with apt-get" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
