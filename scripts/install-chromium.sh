#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian's packages (chromium, chromium-driver), for the
# dashboard's browser tests (tests/integration/test_dashboard.py). Idempotent: nothing happens when
# /usr/bin/chromium and /usr/bin/chromedriver are there. Needs root (CI runs as root; no sudo). Without root and
# without the packages it says so and exits 0: the browser tests then skip locally, and fail where CI is set.
# Progress goes to stderr.
set -euo pipefail

log() { printf '[install-chromium] %s\n' "$*" >&2; }

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
    log "not root: cannot apt-get install chromium chromium-driver (the browser tests will skip, or fail under CI)"
    exit 0
fi
log "installing chromium and chromium-driver from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q chromium chromium-driver >&2
