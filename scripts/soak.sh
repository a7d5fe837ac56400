#!/usr/bin/env bash
# The full soak: predictions, annotation webhooks and training against one server on loopback,
# for LABELBRIDGE_SOAK_SECONDS (default 600; or the first argument), then the figures: requests,
# error rate, latency, RSS and open descriptors of the server after warm-up.
# Usage: scripts/soak.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${LABELBRIDGE_SOAK_SECONDS:-600}}"
report="${LABELBRIDGE_SOAK_REPORT:-$(mktemp -t labelbridge-soak.XXXXXX.json)}"
status=0
LABELBRIDGE_SOAK_SECONDS="$seconds" LABELBRIDGE_SOAK_REPORT="$report" \
  .venv/bin/pytest -q -p no:cacheprovider tests/reliability/test_soak.py \
  --timeout "$(( ${seconds%.*} + 300 ))" || status=$?
if [ -s "$report" ]; then
  echo "soak figures (${seconds} s), also in $report:"
  cat "$report"
fi
exit "$status"
