#!/usr/bin/env bash
# Installs the system packages Tally builds and tests with, when they are missing.
# Debian/Ubuntu (apt-get); run as root or with sudo available.
set -euo pipefail

need=()
pkg-config --exists libzstd 2>/dev/null || need+=(libzstd-dev)
pkg-config --exists sqlite3 2>/dev/null || need+=(libsqlite3-dev)
# libyaml reads the config files (without pulling in Foundation).
pkg-config --exists yaml-0.1 2>/dev/null || need+=(libyaml-dev)
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
# The tools `make test` checks deploy/ and the HTTP APIs with (scripts/check-deploy.sh, the
# monitoring, UI and OpenAPI tests): Prometheus and promtool, systemd-analyze, Chromium, and
# Debian's Python with venv for the PyPI tools below. Installing `prometheus` may start its
# service on :9090; the tests start their own on a free loopback port.
if [ "${TALLY_NEEDS_TOOLS:-0}" = 1 ]; then
  { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || need+=(prometheus)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; } || need+=(python3-venv)
fi

if [ ${#need[@]} -gt 0 ]; then
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
fi

# The PyPI tools, in a venv inside the repository (.build-*/ is ignored by git), made or
# updated only when the requirements below differ from the ones it was made with.
if [ "${TALLY_NEEDS_TOOLS:-0}" = 1 ]; then
  venv="$(cd "$(dirname "$0")/.." && pwd)/.build-tools/venv"
  requirements="kubernetes-validate==1.37.0 dockerfile-parse==2.0.1 schemathesis==4.32.5 hypothesis==6.170.15"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.tally-requirements" 2>/dev/null)" != "$requirements" ]; then
    echo "installing into $venv: $requirements"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # shellcheck disable=SC2086 # one requirement per word
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    echo "$requirements" > "$venv/.tally-requirements"
  fi
fi
