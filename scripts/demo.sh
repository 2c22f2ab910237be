#!/usr/bin/env bash
# make demo: a collector on the embedded SQLite store and an agent, fed the reference workload
# (retries, late and invalid events included) over the agent's HTTP API; then a report, and the
# services keep running until Ctrl-C.
set -euo pipefail
bin=.build/release
dir=./tally-demo
events=${TALLY_DEMO_EVENTS:-300000}
rm -rf "$dir"
mkdir -p "$dir"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_for() {  # wait_for URL: until it answers 200, at most 30 s
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: $1 did not come up; see $dir/*.log" >&2
  exit 1
}

"$bin/tally-collector" --store "sqlite:$dir/ledger.db" --pricing deploy/demo-pricing.yaml \
  --listen 127.0.0.1:7400 --http 127.0.0.1:7480 2> "$dir/collector.log" &
pids+=($!)
wait_for http://127.0.0.1:7480/healthz
"$bin/tally-agent" --spool "$dir/spool" --listen 127.0.0.1:7380 --collector 127.0.0.1:7400 \
  --agent-id demo-agent --default-metric api_calls 2> "$dir/agent.log" &
pids+=($!)
wait_for http://127.0.0.1:7380/healthz

# The workload ends two minutes ago, so no event is in the future.
rate=50
start=$(date -u -d "@$(( $(date +%s) - events / rate - 120 ))" +%Y-%m-%dT%H:%M:%SZ)
"$bin/tallyctl" gen --seed 1 --events "$events" --start "$start" --rate "$rate" \
  --expect "$dir/expected.json" > "$dir/events.ndjson"
echo "generated $events lines from $start ($(du -h "$dir/events.ndjson" | cut -f1))"

began=$(date +%s.%N)
split -l 5000 "$dir/events.ndjson" "$dir/chunk."
sent=0
for chunk in "$dir"/chunk.*; do
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/x-ndjson' \
    --data-binary "@$chunk" http://127.0.0.1:7380/v1/events)
  case "$code" in 200|207|400) ;; *) echo "demo: the agent answered $code" >&2; exit 1 ;; esac
  sent=$(( sent + $(wc -l < "$chunk") ))
  rm -f "$chunk"
done

# Wait until the spool is drained (everything acknowledged by the collector).
for _ in $(seq 1 1200); do
  backlog=$("$bin/tallyctl" spool status --spool "$dir/spool" --json 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("events", -1))' 2>/dev/null || echo -1)
  [ "$backlog" = 0 ] && break
  sleep 0.25
done
took=$(python3 -c "import time; print(f'{time.time() - $began:.1f}')")

echo
echo "== sent $sent lines to the agent; spool drained into the collector in ${took}s"
curl -fsS http://127.0.0.1:7480/v1/reconciliation | python3 -c '
import json, sys
total = json.load(sys.stdin)["total"]
keys = ["received", "accepted", "duplicate", "late", "rejected"]
adjusted = total["adjusted"]
print("   collector: " + ", ".join(f"{k} {total[k]}" for k in keys) + f" ({adjusted} of the late events billed as adjustments)")
print("   received = accepted + duplicate + late + rejected:", "yes" if total["balances"] else "NO")'
agent_rejected=$(curl -fsS http://127.0.0.1:7380/metrics | awk '/^tally_agent_events_rejected_total/ {s += $NF} END {print s + 0}')
echo "   agent: $agent_rejected invalid lines refused at ingest with their field and reason (never spooled)"
python3 - "$dir/expected.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"   generator: {s['uniqueEvents']} unique events, {s['retries']} retries, {s['late']} late, {s['invalid']} invalid")
PY
echo
echo "== invoices (largest tenants) against the generator's expected totals"
"$bin/tallyctl" compare --expect "$dir/expected.json" --store "sqlite:$dir/ledger.db" \
  --pricing deploy/demo-pricing.yaml --top 5 | sed 's/^/   /'
period=$(date -u +%Y-%m)
echo
echo "== explore (Ctrl-C to stop)"
echo "   http://127.0.0.1:7480/ui/tenants/t0001"
echo "   http://127.0.0.1:7480/v1/tenants/t0001/invoices/$period?format=html"
echo "   http://127.0.0.1:7480/v1/usage?tenant=t0001&metric=api_calls&granularity=hour"
echo "   http://127.0.0.1:7480/metrics    http://127.0.0.1:7380/metrics"
if [ -n "${TALLY_DEMO_EXIT:-}" ]; then exit 0; fi
wait
