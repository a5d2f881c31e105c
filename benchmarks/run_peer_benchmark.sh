#!/usr/bin/env bash
# One command for the peer benchmark: set up the peer TAPS environment if missing, then run
# benchmarks/peer_benchmark.py with the project's Python (arguments are passed on).
#   benchmarks/run_peer_benchmark.sh                                  # full run (see --help)
#   benchmarks/run_peer_benchmark.sh --sizes typical --threads 2 --repeats 5
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PROSTATEKD_PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
if [[ " $* " != *" --no-peer "* ]]; then
    "$HERE/setup_peer.sh"
fi
exec "$PY" "$HERE/peer_benchmark.py" "$@"
