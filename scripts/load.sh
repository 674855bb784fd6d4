#!/usr/bin/env bash
# Load campaign, long form: `scripts/load.sh MINUTES [SEARCHERS]`.
# Holds a temporary 3-of-6 cluster under SEARCHERS searching clients (default 4) and one indexing
# client for MINUTES minutes, through the library, and reports throughput, latency p50/p95/p99,
# errors (goal: 0) and every process's memory after the warm-up, at the end and at most (goal:
# flat within 10 %). The JSON report is kept in target/campaigns/load-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: scripts/load.sh MINUTES [SEARCHERS]}"
searchers="${2:-4}"
export CARGO_INCREMENTAL=0
cargo build --release -q -p obscura-cli
mkdir -p target/campaigns
out="target/campaigns/load-$(date -u +%Y%m%dT%H%M%SZ).json"
status=0
./target/release/obscura load --seconds $((minutes * 60)) --searchers "$searchers" --json > "$out" || status=$?
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f'{r["seconds"]:.0f} s, {r["searching_clients"]} searching clients + 1 indexing')
print(f'searches {r["searches"]} ({r["searches_per_s"]:.1f}/s), p50 {l["p50"]:.1f} ms, p95 {l["p95"]:.1f} ms, p99 {l["p99"]:.1f} ms')
print(f'indexed {r["indexed"]} ({r["indexed_per_s"]:.1f}/s), errors {r["errors"]}')
for m in r["memory"]:
    print(f'  {m["process"]:<9} after warm-up {m["after_warm_up_mb"]:7.1f} MB, end {m["end_mb"]:7.1f} MB, growth {100*m["growth"]:5.1f} %')
print("memory flat within 10 %:", "met" if r["memory_flat"] else "NOT met")
PY
echo "report: $out"
exit "$status"
