#!/usr/bin/env bash
# make bench: the benchmarks on a release build, each printing a table with its baseline.
set -euo pipefail
bin=.build/release
"$bin/tally-bench" ingest --events "${TALLY_BENCH_EVENTS:-1000000}"
"$bin/tally-bench" query --events "${TALLY_BENCH_QUERY_EVENTS:-10000000}"
"$bin/tally-bench" spool --events "${TALLY_BENCH_EVENTS:-1000000}"
"$bin/tally-bench" agent --backlog "${TALLY_BENCH_BACKLOG:-10000000}"
# PostgreSQL (fsync on): naive per-event inserts vs agents draining into one and two collectors,
# and the charges query; TALLY_BENCH_CLUSTER_QUERY_EVENTS=10000000 for the 10M figure.
"$bin/tally-bench" cluster --bin "$bin" --events "${TALLY_BENCH_CLUSTER_EVENTS:-250000}" \
    --query-events "${TALLY_BENCH_CLUSTER_QUERY_EVENTS:-3000000}"
