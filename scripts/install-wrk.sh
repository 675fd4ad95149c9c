#!/usr/bin/env bash
# Installs wrk (the HTTP load generator bench/reads.py drives) unless it is on PATH.
set -euo pipefail
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
echo "wrk:    $(command -v wrk)"
