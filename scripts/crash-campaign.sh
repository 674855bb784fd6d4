#!/usr/bin/env bash
# Crash campaign, long form: `scripts/crash-campaign.sh TRIALS [SEED]` (goal: 200 trials, 0
# violations). Each trial indexes, deletes, rotates the token keys or writes a secret at the
# keepers, and SIGKILLs the client, a random node or a random keeper at a random moment; see
# scripts/crash_campaign.py for what is checked after each. The summary is kept in
# target/campaigns/crash-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:?usage: scripts/crash-campaign.sh TRIALS [SEED]}"
export CARGO_INCREMENTAL=0
if [ -z "${OBSCURA_BIN:-}" ]; then
    cargo build --release -q -p obscura-cli
    export OBSCURA_BIN="$PWD/target/release/obscura"
fi
mkdir -p target/campaigns
export OBSCURA_CAMPAIGN_OUT="$PWD/target/campaigns/crash-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 scripts/crash_campaign.py "$trials" ${2:+"$2"}
echo "summary: $OBSCURA_CAMPAIGN_OUT"
