#!/usr/bin/env bash
# The test command: sets up .venv, makes sure Redis runs, then lint, types and the test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh dev
scripts/ensure_redis.sh
scripts/ensure_chromium.sh
.venv/bin/ruff check src tests examples scripts bench
.venv/bin/ruff format --check src tests examples scripts
.venv/bin/mypy
# two workers (the machines have 2 cores); the Label Studio tests share one worker (tests/e2e)
exec .venv/bin/pytest -q -n 2 --dist loadgroup "$@"
