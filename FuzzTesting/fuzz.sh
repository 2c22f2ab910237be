#!/usr/bin/env bash
# Runs libFuzzer targets built by `make fuzz-build`, one at a time, each for a fixed time over
# its kept corpus (Corpus/<target>/, read only) and a scratch corpus (.artifacts/corpus/<target>/,
# where libFuzzer keeps what it finds). Crashes and hangs go to .artifacts/<target>/. Prints a
# line of final stats per target and exits non-zero when any target found something.
#
# usage: FuzzTesting/fuzz.sh BIN_DIR MAX_TOTAL_TIME TARGET...
set -u
bin_dir=$1
max_time=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
# Swift's hashing is seeded per process: fix it so an input always takes the same path.
export SWIFT_DETERMINISTIC_HASHING=1
# libFuzzer and ASan report crashes themselves; Swift's backtracer in the same process only
# trips over ASan (a stack-buffer-underflow report in its memory server).
export SWIFT_BACKTRACE=enable=no
failed=()
summary=()
for target in "$@"; do
    artifacts="$here/.artifacts/$target"
    scratch="$here/.artifacts/corpus/$target"
    mkdir -p "$artifacts" "$scratch"
    log="$artifacts/run.log"
    # Only what this run leaves counts (older artifacts may still wait to be triaged).
    touch "$artifacts/.start"
    extra=()
    # The spool's I/O thread releases its last objects just after `close()` has returned, so a
    # leak check between two inputs can catch them mid-release: a false leak, never reproducible.
    if [ "$target" = FuzzSpoolRecovery ]; then extra=(-detect_leaks=0); fi
    echo "== $target: ${max_time}s (log: $log)"
    nice -n 10 "$bin_dir/$target" -max_total_time="$max_time" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${extra[@]}" -artifact_prefix="$artifacts/" "$scratch" "$here/Corpus/$target" >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    found=$(find "$artifacts" -maxdepth 1 -type f -newer "$artifacts/.start" \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    summary+=("$(printf '%-24s %12s execs %8s/s  cov %6s  ft %7s  exit %3s  artifacts %s' "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$status" "$found")")
    if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
        failed+=("$target")
        grep -E 'ERROR|SUMMARY|Fatal error|fuzz finding' "$log" | head -5
    fi
done
echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzzing found problems in: ${failed[*]} (inputs in FuzzTesting/.artifacts/<target>/)"
    exit 1
fi
