#!/usr/bin/env bash
# Create .venv with labelbridge and its extras; re-install only when pyproject.toml changed.
# Usage: scripts/bootstrap.sh [extras]   (default extras: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      py="$candidate"; break
    fi
  done
fi
[ -n "$py" ] || { echo "labelbridge needs Python 3.10 or newer on PATH" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# the test extras (dev) also take the examples' heavy requirements (PyTorch for zero-shot)
reqs=(examples/*/requirements.txt)
case ",$extras," in *,dev,*) reqs+=(examples/*/requirements-heavy.txt) ;; esac
stamp=".venv/.labelbridge-$extras-$({ cat pyproject.toml; cat "${reqs[@]}" 2>/dev/null || true; } | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
  for req in "${reqs[@]}"; do
    [ -f "$req" ] && .venv/bin/python -m pip install -q -r "$req"
  done
  touch "$stamp"
fi
