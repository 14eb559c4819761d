#!/usr/bin/env bash
# The end-to-end benchmark with its upstreams: installs nginx and HAProxy when missing
# (Debian), then runs `cargo bench --bench e2e` with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; the benchmark runs its own, so stop those.
systemctl stop nginx haproxy 2>/dev/null || service nginx stop 2>/dev/null || true
exec cargo bench --bench e2e -- "$@"
