#!/usr/bin/env bash
# What the browser tests need, installed when missing: Debian's Chromium, Node and
# playwright-core.
# tox runs this before the suite, so `tox` alone works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium
    else
        echo "The browser tests need Chromium at $chromium:" \
             "run 'sudo apt-get install chromium', or set CHROMIUM to its path." >&2
        exit 1
    fi
fi
if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm
    else
        echo "The browser tests need Node and npm: run 'sudo apt-get install nodejs npm'." >&2
        exit 1
    fi
fi
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund
fi
