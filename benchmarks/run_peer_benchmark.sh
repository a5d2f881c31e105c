#!/usr/bin/env bash
# One command for the peer benchmark: set up the project's environment (.ci/setup) and the peer
# TAPS environment (benchmarks/setup_peer.sh) if missing, then run
# benchmarks/peer_benchmark.py with the project's Python (arguments are passed on).
#   benchmarks/run_peer_benchmark.sh                                  # full run (see --help)
#   benchmarks/run_peer_benchmark.sh --sizes typical --threads 2 --repeats 5
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
if [[ -n "${PROSTATEKD_PYTHON:-}" ]]; then
    PY="$PROSTATEKD_PYTHON"
else
    "$ROOT/.ci/setup"  # the project's environment (.venv), created if missing
    PY="$ROOT/.venv/bin/python"
fi
if [[ " $* " != *" --no-peer "* ]]; then
    "$HERE/setup_peer.sh"
fi
exec "$PY" "$HERE/peer_benchmark.py" "$@"
