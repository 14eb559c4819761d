#!/usr/bin/env bash
# The C and Python layers' cost per call over Rust's: the same loop of calls to one nginx
# upstream from each language, alternated (Rust, C, Python, ...) five times.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/nginx.conf" <<CONF
worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 10000000; client_body_temp_path $dir/b; proxy_temp_path $dir/p;
  fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  server { listen 127.0.0.1:$port; location / { return 200 '{"ok":true}'; } } }
CONF
nginx -p "$dir" -c "$dir/nginx.conf"
trap 'kill $(cat "$dir/nginx.pid") 2>/dev/null; rm -rf "$dir"' EXIT
printf '[[services.bench.providers]]\nname = "u"\nbase_url = "http://127.0.0.1:%s"\n' "$port" > "$dir/switchyard.toml"
cargo build --release --quiet
cargo bench --bench ffi_overhead --no-run --quiet 2>/dev/null
rust=$(ls -t target/release/deps/ffi_overhead-* | grep -v '\.d$' | head -1)
cc -O2 -std=c11 -Iinclude benches/ffi_overhead.c -Ltarget/release -lswitchyard -Wl,-rpath,"$PWD/target/release" -o "$dir/c_loop"
n=${1:-20000}
for i in 1 2 3 4 5; do
  "$rust" "$dir/switchyard.toml" "$n"
  "$dir/c_loop" "$dir/switchyard.toml" "$n"
  SWITCHYARD_LIB="$PWD/target/release/libswitchyard.so" PYTHONPATH=bindings/python python3 benches/ffi_overhead.py "$dir/switchyard.toml" "$n"
done
