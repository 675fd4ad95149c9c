#!/usr/bin/env bash
# Writes .env from .env.example with a random admin password and token secret, once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e .env ] && exit 0
pass="$(python3 -c 'import secrets; print(secrets.token_hex(9))')"
# 48 random bytes, 64 characters: the gateway refuses a secret under 32 bytes.
secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
sed -e "s|^# ADMIN_PASS=.*|ADMIN_PASS=$pass|" -e "s|^# ADMIN_SECRET=.*|ADMIN_SECRET=$secret|" \
  .env.example >.env
chmod 600 .env
echo "Wrote .env: log in as admin with the password $pass (change it in .env)."
