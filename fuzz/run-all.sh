#!/usr/bin/env bash
# Fuzz every target (or only those named) for SECONDS seconds each, one after the other:
#
#   fuzz/run-all.sh 60
#   fuzz/run-all.sh 300 session_file store_records
#
# Each run starts from the committed corpus fuzz/corpus/<target>/ (read only) and saves the new
# inputs it finds in fuzz/work/<target>/ (ignored by git), so the committed corpus stays small.
# Crashes, leaks, timeouts and out-of-memory inputs are copied into fuzz/regressions/<target>/,
# where the stable replay test (cargo test -p obscura-fuzz) keeps running them. Prints a table of
# runs, seconds and crashes per target, writes it to fuzz/last-run.json, and exits non-zero if
# any target crashed or failed to run. Needs a nightly toolchain and cargo-fuzz.
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
cd "$(dirname "$0")/.."

all=$(cargo +nightly fuzz list)
targets=${*:-$all}
for target in $targets; do
  if ! grep -qx "$target" <<<"$all"; then
    echo "no fuzz target $target (cargo +nightly fuzz list)" >&2
    exit 2
  fi
done
mkdir -p fuzz/logs
rows=()
json=()
failed=0

for target in $targets; do
  mkdir -p "fuzz/work/$target" "fuzz/corpus/$target" "fuzz/regressions/$target" \
    "fuzz/artifacts/$target"
  log="fuzz/logs/$target.log"
  marker=$(mktemp)
  started=$(date +%s)
  status=0
  cargo +nightly fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  ended=$(date +%s)

  # libFuzzer's last words: "Done N runs in S second(s)"; after a crash, its last "#N" status.
  done_line=$(grep -E 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  if [[ -n $done_line ]]; then
    runs=$(sed -E 's/.*Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")
    secs=$(sed -E 's/.*Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")
  else
    runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    runs=${runs:-0}
    secs=$((ended - started))
  fi

  crashes=0
  while IFS= read -r -d '' artifact; do
    cp "$artifact" "fuzz/regressions/$target/"
    crashes=$((crashes + 1))
  done < <(find "fuzz/artifacts/$target" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) \
    -newer "$marker" -print0)
  rm -f "$marker"

  if [[ $crashes -gt 0 ]]; then
    state=crashed
    failed=1
  elif [[ $status -ne 0 ]]; then
    state="exit $status (see $log)"
    failed=1
  else
    state=ok
  fi
  rows+=("$(printf '%-18s %14s %8s %8s  %s' "$target" "$runs" "$secs" "$crashes" "$state")")
  json+=("$(printf '{"target": "%s", "runs": %s, "seconds": %s, "crashes": %s, "status": "%s"}' \
    "$target" "$runs" "$secs" "$crashes" "$state")")
done

printf '%-18s %14s %8s %8s  %s\n' target runs seconds crashes status
printf '%s\n' "${rows[@]}"

{
  printf '{\n  "seconds_per_target": %s,\n  "targets": [\n' "$seconds"
  for i in "${!json[@]}"; do
    sep=","
    [[ $i -eq $((${#json[@]} - 1)) ]] && sep=""
    printf '    %s%s\n' "${json[$i]}" "$sep"
  done
  printf '  ]\n}\n'
} >fuzz/last-run.json

if [[ $failed -ne 0 ]]; then
  echo "some targets crashed or failed to run: inputs are in fuzz/regressions/, logs in fuzz/logs/" >&2
  exit 1
fi
