#!/usr/bin/env bash
# The demo: for now the reference workload generator; the whole pipeline arrives with pricing.
set -euo pipefail
bin=.build/release
out=$(mktemp -d)
"$bin/tallyctl" gen --seed 1 --events 200000 --expect "$out/expected.json" > "$out/events.ndjson"
echo "generated $(wc -l < "$out/events.ndjson") lines ($(du -h "$out/events.ndjson" | cut -f1)) into $out"
head -n 3 "$out/events.ndjson"
