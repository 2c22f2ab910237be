#!/usr/bin/env bash
# make bench: the benchmarks on a release build, each printing a table with its baseline measured
# in the same run, and all their figures in one table in bench/RESULTS.md with the date, the
# commit and the machine. Sizes: TALLY_BENCH_EVENTS, TALLY_BENCH_QUERY_EVENTS,
# TALLY_BENCH_BACKLOG, TALLY_BENCH_CLUSTER_EVENTS, TALLY_BENCH_CLUSTER_QUERY_EVENTS; extra
# arguments for the agent bench in TALLY_BENCH_AGENT_ARGS (for a short run).
set -euo pipefail
bin=.build/release
mkdir -p bench
results=bench/RESULTS.md
partial="$results.partial"

device=$(df --output=source . | tail -1)
disk=$(lsblk -dno NAME,MODEL,SIZE,ROTA "$(lsblk -no PKNAME "$device" 2>/dev/null | head -1 | sed 's|^|/dev/|')" 2>/dev/null ||
    lsblk -dno NAME,MODEL,SIZE,ROTA "$device" 2>/dev/null || echo "$device")
{
    echo "# Tally benchmark results"
    echo
    echo "Written by \`make bench\` ($(basename "$0")); every figure beside its baseline measured in the same run, or its target."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory, kernel $(uname -r)"
    echo "- disk: $(df -h --output=fstype,size . | tail -1 | tr -s ' ') on ${disk} (name, model, size, rotational)"
    echo "- sizes: events ${TALLY_BENCH_EVENTS:-1000000}, query events ${TALLY_BENCH_QUERY_EVENTS:-10000000}, backlog ${TALLY_BENCH_BACKLOG:-10000000}, cluster events ${TALLY_BENCH_CLUSTER_EVENTS:-250000}, cluster query events ${TALLY_BENCH_CLUSTER_QUERY_EVENTS:-3000000}${TALLY_BENCH_AGENT_ARGS:+, agent: $TALLY_BENCH_AGENT_ARGS}"
    echo
    echo "| bench | figure | value | unit | baseline (same run) or target |"
    echo "|---|---|---|---|---|"
} >"$partial"
export TALLY_BENCH_MARKDOWN="$PWD/$partial"

"$bin/tally-bench" ingest --events "${TALLY_BENCH_EVENTS:-1000000}"
# The same with a collector's aggregation (the example pricing file's group-by properties): what
# a collector with a pricing file does per event.
"$bin/tally-bench" ingest --events "${TALLY_BENCH_EVENTS:-1000000}" --pricing deploy/pricing.example.yaml
# The preparation steps alone, one thread, best of 5: what the drain's preparation figure is made
# of, without the other threads' noise.
"$bin/tally-bench" prepare
"$bin/tally-bench" query --events "${TALLY_BENCH_QUERY_EVENTS:-10000000}"
"$bin/tally-bench" spool --events "${TALLY_BENCH_EVENTS:-1000000}"
# shellcheck disable=SC2086
"$bin/tally-bench" agent --backlog "${TALLY_BENCH_BACKLOG:-10000000}" ${TALLY_BENCH_AGENT_ARGS:-}
# PostgreSQL (fsync on): naive per-event inserts vs agents draining into one and two collectors,
# and the charges query; TALLY_BENCH_CLUSTER_QUERY_EVENTS=10000000 for the issue's 10M figure.
"$bin/tally-bench" cluster --bin "$bin" --events "${TALLY_BENCH_CLUSTER_EVENTS:-250000}" \
    --query-events "${TALLY_BENCH_CLUSTER_QUERY_EVENTS:-3000000}"

mv "$partial" "$results"
echo "wrote $results"
