#!/usr/bin/env bash
# Known vulnerabilities in the locked dependencies, with pip-audit (on PATH).
#   scripts/audit.sh LOCK...
# Exit 0: audited, nothing known. Exit 1: vulnerabilities (listed). When the vulnerability
# database cannot be reached, no package is audited: that is said in one loud line and
# is a failure (exit 3), unless AUDIT_UNREACHABLE=warn, which makes it a warning (exit 0).
set -uo pipefail

[ "$#" -gt 0 ] || { echo "usage: $0 LOCK..." >&2; exit 2; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
args=()
for lock in "$@"; do args+=(-r "$lock"); done

pip-audit --strict --require-hashes --disable-pip --progress-spinner off "${args[@]}" 2>"$log"
status=$?
if [ "$status" = 0 ]; then
  echo "audit: no known vulnerability in $*"
  exit 0
fi
# --strict stops at the first package the service could not look up; a connection error
# or "not found" for a locked package means the database did not answer, not a finding.
if grep -qE 'could not be audited|ConnectionError|NameResolution|Max retries|timed out' "$log"; then
  reason="$(grep -m1 -oE 'could not be audited: [^ ]+|ConnectionError|NameResolution\w*|timed out' "$log")"
  echo "audit: NOT AUDITED: the vulnerability database is unreachable from here ($reason)" >&2
  [ "${AUDIT_UNREACHABLE:-fail}" = warn ] && exit 0
  exit 3
fi
cat "$log" >&2
exit 1
