#!/usr/bin/env bash
# make test: every file in deploy/ checked by a real tool (deploy/README.md says which checks
# which). The tools come from `TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh` (the Makefile's
# deps-tools): systemd-analyze, promtool, and a venv in .build-tools/venv with
# kubernetes-validate and dockerfile-parse. With CI=true a missing tool fails the run; elsewhere
# its checks are skipped with a loud line.
#
# What runs later, in `swift test`: Tests/EndToEndTests/MonitoringTests.swift (a real Prometheus
# scrapes a real agent and collector; every metric of the dashboard and the rules has data),
# Tests/TallyCollectorTests/DeployConfigTests.swift (the ConfigMaps' configs and the units',
# manifests' and Dockerfile's command lines read by the binaries' own parsers).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes releases whose schemas the manifests are validated against (offline, from
# kubernetes-validate's own copies): the oldest they support (native sidecars need 1.29) and
# the newest that kubernetes-validate 1.37 ships.
KUBERNETES_VERSIONS=(1.29.0 1.37.0)
venv=.build-tools/venv
python="$venv/bin/python"

failures=0
skipped=()
fail() { echo "check-deploy: FAILED: $*" >&2; failures=$((failures + 1)); }
ok() { echo "check-deploy: ok: $*"; }
ci() { case "${CI:-}" in true|TRUE|True|1) return 0 ;; *) return 1 ;; esac; }
# have TOOL: whether it is there; a missing tool fails in CI and is skipped (loudly) elsewhere.
have() {
  if [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; then return 0; fi
  if ci; then fail "$1 is missing (TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh installs it)"; else skipped+=("$1"); fi
  return 1
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- systemd units: systemd-analyze verify and security ------------------------------------
# `verify` refuses a unit whose ExecStart binary does not exist, and the binaries are not
# installed here. So it runs against a throwaway root (--root): the host's own system units
# (for sysinit.target and the like), the units under test unchanged in etc/systemd/system, and
# for each ExecStart path an executable stand-in at that path. The flags themselves are checked
# by the binaries' parser in DeployConfigTests. `verify` exits 0 after warnings such as an
# unknown key, so any line it prints fails the check.
if have systemd-analyze; then
  root="$scratch/root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
  units=()
  for unit in deploy/systemd/*.service; do
    cp "$unit" "$root/etc/systemd/system/"
    units+=("$(basename "$unit")")
    for executable in $(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$unit"); do
      mkdir -p "$root$(dirname "$executable")"
      printf '#!/bin/sh\nexit 0\n' > "$root$executable"
      chmod 0755 "$root$executable"
    done
  done
  for unit in "${units[@]}"; do
    if output=$(systemd-analyze verify --root="$root" "$root/etc/systemd/system/$unit" 2>&1) && [ -z "$output" ]; then
      ok "systemd-analyze verify $unit"
    else
      fail "systemd-analyze verify $unit:"$'\n'"$output"
    fi
    # The exposure score, 0 (locked down) to 10: above 2.0 fails (the agent scores 1.1, the collector 1.3: RestrictRealtime=no for its event loops).
    if output=$(systemd-analyze security --offline=true --root="$root" --threshold=20 --no-pager "$unit" 2>&1); then
      ok "systemd-analyze security $unit: $(printf '%s\n' "$output" | tail -n 1 | sed 's/^→ //')"
    else
      fail "systemd-analyze security $unit (exposure above 2.0):"$'\n'"$(printf '%s\n' "$output" | grep -E '✗|Overall')"
    fi
    # What the units promise platform engineers, whatever systemd would accept.
    file="deploy/systemd/$unit"
    for rule in '^(DynamicUser=yes|User=[a-z])' '^ProtectSystem=strict$' '^StateDirectory=tally-' '^NoNewPrivileges=yes$' \
      '^PrivateTmp=yes$' '^ProtectHome=yes$' '^RestrictAddressFamilies=' '^Restart=on-failure$' '^LoadCredential=[a-z.]+:/etc/tally/' \
      '^ExecStart=/usr/local/bin/tally-[a-z]+ --config %d/'; do
      grep -Eq "$rule" "$file" || fail "$file: no line matching $rule"
    done
    stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$file")
    if [ -z "$stop" ] || [ "$stop" -lt 45 ]; then
      fail "$file: TimeoutStopSec must be at least 45s (http.body_timeout 30s + shutdown grace + fsync)"
    fi
  done
fi

# --- Prometheus rules: promtool check rules, and the rules' unit tests ----------------------
if have promtool; then
  if output=$(promtool check rules deploy/monitoring/tally-alerts.yaml 2>&1); then
    ok "promtool check rules: $(printf '%s\n' "$output" | grep -o 'SUCCESS.*' | head -n 1)"
  else
    fail "promtool check rules deploy/monitoring/tally-alerts.yaml:"$'\n'"$output"
  fi
  if output=$(promtool test rules deploy/monitoring/tally-alerts.test.yaml 2>&1); then
    ok "promtool test rules deploy/monitoring/tally-alerts.test.yaml"
  else
    fail "promtool test rules deploy/monitoring/tally-alerts.test.yaml:"$'\n'"$output"
  fi
fi

# --- Python checks: the Dockerfile, the manifests, the dashboard ----------------------------
if have "$python" && have "$venv/bin/kubernetes-validate"; then
  if output=$("$python" scripts/deploy_checks.py dockerfile deploy/Dockerfile 2>&1); then
    ok "deploy/Dockerfile (dockerfile-parse)"
  else
    fail "deploy/Dockerfile:"$'\n'"$output"
  fi

  mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' | sort)
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    if output=$("$venv/bin/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "${manifests[@]}" 2>&1); then
      ok "kubernetes-validate --strict, Kubernetes $version: ${#manifests[@]} files"
    else
      fail "kubernetes-validate (Kubernetes $version):"$'\n'"$output"
    fi
  done
  if output=$("$python" scripts/deploy_checks.py kubernetes "${manifests[@]}" 2>&1); then
    ok "deploy/kubernetes: Tally's rules (probes, sidecar, non-root, scrape annotations)"
  else
    fail "deploy/kubernetes:"$'\n'"$output"
  fi

  if output=$("$python" scripts/deploy_checks.py dashboard deploy/monitoring/tally-dashboard.json 2>&1); then
    ok "deploy/monitoring/tally-dashboard.json (structure)"
  else
    fail "deploy/monitoring/tally-dashboard.json:"$'\n'"$output"
  fi
  if output=$("$python" scripts/deploy_checks.py metrics --sources Sources 2>&1); then
    count=$("$python" scripts/deploy_checks.py metrics | "$python" -c 'import json, sys; print(len(json.load(sys.stdin)["metrics"]))')
    ok "deploy/monitoring: the $count metric names of the dashboard and the rules are registered in Sources/"
  else
    fail "deploy/monitoring metric names:"$'\n'"$output"
  fi
fi

if [ ${#skipped[@]} -gt 0 ]; then
  echo "check-deploy: SKIPPED the checks that need: ${skipped[*]} — run TALLY_NEEDS_TOOLS=1 scripts/install-deps.sh" >&2
fi
if [ "$failures" -gt 0 ]; then
  echo "check-deploy: $failures check(s) failed" >&2
  exit 1
fi
