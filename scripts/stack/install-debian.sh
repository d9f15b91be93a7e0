#!/usr/bin/env bash
# Installs the Debian packages of the test stack (Prometheus, Alertmanager,
# PostgreSQL, openssl, curl, and Chromium with its driver for the browser
# tests of the incident pages) without starting their packaged services: the
# tests run them as plain processes on free loopback ports with temp dirs.
#
# Idempotent: when every package is already installed it only checks that no
# packaged service runs and returns in well under a second.
set -euo pipefail

packages=(prometheus prometheus-alertmanager postgresql openssl curl chromium chromium-driver)
services=(prometheus prometheus-alertmanager prometheus-node-exporter postgresql)
log() { echo "debian: $*"; }

installed() {
  # No pipe into `grep -q`: with pipefail, dpkg's SIGPIPE would read as "missing".
  local status
  status=$(dpkg -s "$1" 2>/dev/null) || return 1
  [[ $status == *"Status: install ok installed"* ]]
}

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  log "already installed: ${packages[*]}"
else
  [ "$(id -u)" -eq 0 ] || { echo "debian: must run as root to install ${missing[*]}" >&2; exit 1; }
  t0=$(date +%s)
  # policy-rc.d exiting 101 tells invoke-rc.d/deb-systemd-invoke not to start
  # services. Keep a pre-existing one (container images often ship one).
  policy=/usr/sbin/policy-rc.d
  backup=""
  if [ -e "$policy" ]; then
    backup=$(mktemp /usr/sbin/policy-rc.d.rollbackd.XXXXXX)
    cp -p "$policy" "$backup"
  fi
  restore_policy() {
    if [ -n "$backup" ]; then
      mv -f "$backup" "$policy"
    else
      rm -f "$policy"
    fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# rollbackd test stack: do not start services during apt-get install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  export DEBIAN_FRONTEND=noninteractive
  log "installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
  restore_policy
  trap - EXIT
  log "installed ${missing[*]} in $(( $(date +%s) - t0 ))s"
fi

# If a packaged service started anyway, stop it and keep it from starting at boot.
# Only the service managers are asked: plain processes the tests started (same
# binaries, other ports) are not touched.
systemd_running=false
[ -d /run/systemd/system ] && systemd_running=true
for s in "${services[@]}"; do
  if $systemd_running; then
    systemctl list-unit-files "$s.service" >/dev/null 2>&1 || continue
    if systemctl is-active --quiet "$s" 2>/dev/null; then
      systemctl stop "$s" && log "stopped service $s"
    fi
    if systemctl is-enabled --quiet "$s" 2>/dev/null; then
      systemctl disable --quiet "$s" 2>/dev/null && log "disabled service $s"
    fi
  elif [ -x "/etc/init.d/$s" ]; then
    if "/etc/init.d/$s" status >/dev/null 2>&1; then
      "/etc/init.d/$s" stop >/dev/null 2>&1 && log "stopped service $s"
    fi
    if ls /etc/rc[2345].d/S??"$s" >/dev/null 2>&1; then
      update-rc.d "$s" disable >/dev/null 2>&1 && log "disabled service $s (update-rc.d)"
    fi
  fi
done
log "ok: no packaged prometheus/alertmanager/postgresql service running"
