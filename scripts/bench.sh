#!/usr/bin/env bash
# make bench: the benchmarks on a release build, each printing a table with its baseline.
set -euo pipefail
bin=.build/release
"$bin/tally-bench" ingest --events "${TALLY_BENCH_EVENTS:-1000000}"
"$bin/tally-bench" query --events "${TALLY_BENCH_QUERY_EVENTS:-10000000}"
"$bin/tally-bench" agent --backlog "${TALLY_BENCH_BACKLOG:-10000000}"
