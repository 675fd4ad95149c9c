#!/usr/bin/env bash
# Installs the etcd and Consul servers the integration tests start.
# Binaries already on PATH win; otherwise etcd comes from Debian's etcd-server
# package and Consul (absent from the current Debian release) from Debian bullseye,
# unpacked into .stores/ (git ignores it). Prints the two binary paths it settled on.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
stores="$root/.stores"
mkdir -p "$stores"

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

find_etcd() {
  command -v etcd || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true
}

find_consul() {
  command -v consul || { [ -x "$stores/consul/usr/bin/consul" ] && echo "$stores/consul/usr/bin/consul"; } || true
}

install_etcd() {
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
  # The package's service must not hold the default ports on a machine with systemd.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
  fi
}

install_consul() {
  local parts lists work deb
  parts="$(apt-config dump | sed -n 's/^Dir::Etc::sourceparts "\(.*\)";/\1/p')"
  case "$parts" in /*) ;; *) parts="/etc/apt/$parts" ;; esac
  work="$stores/apt-bullseye"
  lists="$work/lists"
  mkdir -p "$lists/partial" "$work/debs"
  # Keep the main archive's stanza only (the security archive names its suites differently).
  awk -v RS= -v ORS='\n\n' '!/Suites:[^\n]*security/' "$parts/debian.sources" \
    | sed -E 's/^Suites:.*/Suites: bullseye/' >"$work/debian.sources"
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work"
              -o "Dir::State::Lists=$lists" -o Acquire::Check-Valid-Until=false)
  apt-get "${opts[@]}" update -qq
  (cd "$work/debs" && apt-get "${opts[@]}" download consul >/dev/null)
  deb="$(ls "$work"/debs/consul_*.deb | head -n 1)"
  rm -rf "$stores/consul"
  dpkg -x "$deb" "$stores/consul"
}

etcd_bin="$(find_etcd)"
[ -n "$etcd_bin" ] || { install_etcd; etcd_bin="$(find_etcd)"; }
consul_bin="$(find_consul)"
[ -n "$consul_bin" ] || { install_consul; consul_bin="$(find_consul)"; }

[ -x "$etcd_bin" ] || { echo "install-stores: etcd could not be installed" >&2; exit 1; }
[ -x "$consul_bin" ] || { echo "install-stores: consul could not be installed" >&2; exit 1; }
echo "etcd:   $etcd_bin ($("$etcd_bin" --version | head -n 1))"
echo "consul: $consul_bin ($("$consul_bin" version | head -n 1))"
