#!/usr/bin/env bash
# Writes .env from .env.example with a random admin password and token secret, once, and
# prints the password last (after pip's output) with the addresses to open.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e .env ] && exit 0
pass="$(python3 -c 'import secrets; print(secrets.token_hex(9))')"
# 48 random bytes, 64 characters: the gateway refuses a secret under 32 bytes.
secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
sed -e "s|^# ADMIN_PASS=.*|ADMIN_PASS=$pass|" -e "s|^# ADMIN_SECRET=.*|ADMIN_SECRET=$secret|" \
  .env.example >.env
chmod 600 .env
url="http://localhost:${PORT:-4122}"
cat <<MESSAGE

  Wrote .env (first run). Log in as admin with this password (ADMIN_PASS in .env):

      $pass

  dashboard   $url/
  API docs    $url/docs
  CLI         export SPACE_CLOUD_TOKEN=\$(.venv/bin/space-cloud login)   # asks for it

MESSAGE
