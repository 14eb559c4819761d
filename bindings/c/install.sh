#!/usr/bin/env bash
# Installs switchyard for C and C++ under PREFIX (default /usr/local), the way a C
# library installs: lib/libswitchyard.so and lib/libswitchyard.a, include/switchyard.h
# and include/switchyard.hpp, and lib/pkgconfig/switchyard.pc, so that
#   cc app.c $(pkg-config --cflags --libs switchyard)
# builds a program against it. Builds the release library first, unless
# SWITCHYARD_LIB_DIR names a directory holding both libraries already.
#
#   bash bindings/c/install.sh                 # /usr/local
#   bash bindings/c/install.sh "$HOME/.local"
set -euo pipefail
prefix=${1:-/usr/local}
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
lib_dir=${SWITCHYARD_LIB_DIR:-}
if [ -z "$lib_dir" ]; then
  cargo build --release --lib --quiet
  lib_dir="${CARGO_TARGET_DIR:-target}/release"
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 755 "$lib_dir/libswitchyard.so" "$prefix/lib/"
install -m 644 "$lib_dir/libswitchyard.a" "$prefix/lib/"
install -m 644 include/switchyard.h bindings/cpp/switchyard.hpp "$prefix/include/"
cat > "$prefix/lib/pkgconfig/switchyard.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: switchyard
Description: A blocking client-side load balancer for programs that depend on several external HTTP APIs
Version: $version
Libs: -L\${libdir} -lswitchyard
Libs.private: -lpthread -ldl -lm
Cflags: -I\${includedir}
PC
echo "installed switchyard $version under $prefix"
