#!/usr/bin/env bash
# The dashboard's tests in a real headless browser: Debian's Chromium driven by
# playwright-core (pinned in tests/browser/package-lock.json). Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

(
  cd tests/browser
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
)
cargo build --bin retryd --locked
cd tests/browser
node --test dashboard.test.mjs cross_site.test.mjs
