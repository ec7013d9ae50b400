#!/usr/bin/env bash
# What the suite needs besides Python packages, installed when missing: Debian's redis-server
# (the cluster tests start their own on free loopback ports, never a system service) and the
# browser tests' tools. tox runs this before the suite, so `tox` alone works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server
    else
        echo "The cluster tests need redis-server: run 'sudo apt-get install redis-server'." >&2
        exit 1
    fi
fi
bash browser/setup.sh
