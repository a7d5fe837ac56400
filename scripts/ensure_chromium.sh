#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the status page's browser test
# (tests/test_status_page.py drives it with Playwright; Playwright's own browser download does
# not work here). Without apt-get, say so and go on: that test then skips, naming this reason.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: apt-get is not available; the browser test of the status page will be skipped" >&2
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium (for tests/test_status_page.py)" >&2
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
[ -x /usr/bin/chromium ] || { echo "ensure_chromium: chromium did not install" >&2; exit 1; }
