#!/usr/bin/env bash
# Every timing-dependent test, N times in a row (default 20), while stress-ng keeps both
# cores busy; stops at the first failure. Installs stress-ng when missing (Debian); the
# fleet tests run too when redis-server is installed.
#
#   bash benches/stress.sh        # 20 runs
#   bash benches/stress.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
if ! command -v stress-ng >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null
fi
tests=(--lib --test strategies --test resilience --test hooks --test queue --test pool --test observability --test quotas --test fewer_calls --test events --test tls --test proxy --test explain)
if command -v redis-server >/dev/null; then
  tests+=(--features fleet --test fleet)
fi
cargo test --release --no-run --quiet "${tests[@]}"
stress-ng --cpu 2 --timeout 7200s >/dev/null 2>&1 &
hog=$!
trap 'kill $hog 2>/dev/null || true' EXIT
log=$(mktemp)
for i in $(seq 1 "$runs"); do
  if ! cargo test --release --quiet "${tests[@]}" >"$log" 2>&1; then
    grep -E "panicked|FAILED" "$log" | head -20
    echo "run $i of $runs FAILED (output: $log)"
    exit 1
  fi
  echo "run $i of $runs passed"
done
echo "$runs of $runs runs passed with both cores busy"
