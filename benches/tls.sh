#!/usr/bin/env bash
# The TLS keep-alive benchmark against nginx with TLS: installs nginx when missing
# (Debian), then runs `cargo bench --bench tls -- --nginx` with any arguments given here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
# Debian starts the packaged service; the benchmark runs its own.
systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null || true
exec cargo bench --bench tls -- --nginx "$@"
