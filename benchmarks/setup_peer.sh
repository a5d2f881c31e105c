#!/usr/bin/env bash
# Set up the peer's own virtual environment (benchmarks/.venv-peer) for peer_benchmark.py.
#
# The peer is TAPS (PyPI `lavlab-taps`, MIT licence): a SegResNetDS prostate model shipped
# as ONNX, run by onnxruntime inside MONAI's sliding-window inference. Its own requirements
# pull `onnxruntime-gpu`, so it is installed with --no-deps and its runtime needs are listed
# here: torch (MONAI transforms and the sliding window run in torch), monai, nibabel, numpy,
# scipy, onnxruntime. Nothing is installed into the project's environment.
#
# Idempotent: an environment that already imports taps and onnxruntime is left alone
# (pass --force to rebuild it). Environment variables:
#   PYTHON        interpreter for the venv (default: python3)
#   TAPS_VERSION  lavlab-taps version (default 1.1.2, the version benchmarked)
#   TORCH_SPEC    torch requirement (default torch==2.13.0; install a CPU build: a plain
#                 `torch` on Linux pulls a multi-GB CUDA build)
#   ORT_PACKAGE   onnxruntime (default) or onnxruntime-gpu for CUDAExecutionProvider
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PEER_VENV:-$HERE/.venv-peer}"
PYTHON="${PYTHON:-python3}"
TAPS_VERSION="${TAPS_VERSION:-1.1.2}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
ORT_PACKAGE="${ORT_PACKAGE:-onnxruntime}"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
fi
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import taps, onnxruntime" 2>/dev/null; then
    echo "peer environment ready: $VENV ($("$VENV/bin/python" -c 'import taps; print("lavlab-taps", taps.__version__)'))"
    exit 0
fi

echo "creating the peer environment in $VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" "monai>=1.4,<1.7" "nibabel>=5.0" "numpy>=1.23" "scipy>=1.10" "$ORT_PACKAGE>=1.16"
"${PIP[@]}" --no-deps "lavlab-taps==$TAPS_VERSION"
"$VENV/bin/python" -c "import taps, onnxruntime as ort; print('peer environment ready: lavlab-taps', taps.__version__, '| onnxruntime', ort.__version__, ort.get_available_providers())"
