#!/usr/bin/env bash
# The soak: a million requests against flapping upstreams; exits non-zero on any caller
# error, lost or doubled outcome, or RSS growth of 1 MiB or more. Arguments go to it
# (--requests N, --callers N).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench soak -- "$@"
