#!/usr/bin/env bash
# The main command: sets up .venv (first run only) and starts the default backend on :9090.
# Extra arguments go to `labelbridge start` (e.g. --debug, --port 9091, --production).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh "examples,rq,production"
exec .venv/bin/labelbridge start examples/sentiment --port "${PORT:-9090}" "$@"
