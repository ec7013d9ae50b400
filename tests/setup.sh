#!/usr/bin/env bash
# What the suite needs besides Python packages, installed when missing: Debian's redis-server
# (the cluster tests start their own on free loopback ports, never a system service), ss, nginx
# with the Nchan module (the bench's smoke test compares with it, on an nginx of its own) and
# the browser tests' tools. tox runs this before the suite, so `tox` alone works on a fresh machine.
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
# `ss` (iproute2) shows the tests what the kernel holds for a server's socket.
if ! command -v ss >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2
    else
        echo "The limits tests need ss: run 'sudo apt-get install iproute2'." >&2
        exit 1
    fi
fi
# The bench installs Nchan as it would for `python -m bench --compare nchan` (apt-get as root,
# otherwise it says the command), leaving no nginx service running.
(cd .. && python -c "from bench.nchan import ensure_nchan; ensure_nchan()")
bash browser/setup.sh
