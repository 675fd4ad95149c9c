#!/usr/bin/env bash
# Installs the headless browser the dashboard test drives (tests/test_dashboard.py):
# Debian's chromium package, at /usr/bin/chromium. A chromium already there wins.
# Playwright's own browser download is not used. Prints the binary's path.
set -euo pipefail

browser=/usr/bin/chromium

if [ ! -x "$browser" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-browser.sh: $browser is missing and installing it needs root (apt-get)" >&2
    exit 1
  fi
  apt-get update -qq
  # Fonts so the page (and docs/dashboard.png) renders text properly.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core fonts-liberation >/dev/null
fi

if [ ! -x "$browser" ]; then
  echo "install-browser.sh: apt-get finished but $browser is still missing" >&2
  exit 1
fi
echo "$browser"
