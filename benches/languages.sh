#!/usr/bin/env bash
# Each language's binding against its users' usual clients: installs what the clients
# need when missing (Debian: nginx, HAProxy, libcurl's headers, a C and C++ compiler,
# python3-venv), builds the native library, then runs `cargo bench --bench languages`
# with any arguments given here (first: python, c, rust or all).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl-config >/dev/null || need+=(libcurl4-openssl-dev)
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged services; the benchmark runs its own.
systemctl stop nginx haproxy 2>/dev/null || service nginx stop 2>/dev/null || true
service haproxy stop 2>/dev/null || true
cargo build --release --lib --quiet
exec cargo bench --bench languages -- "$@"
