"""Helpers of ``benchmarks/peer_benchmark.py``: ProstateKD models side by side with the peer TAPS.

``taps_runner.py`` runs in the peer's own environment (``benchmarks/.venv-peer``) and
imports nothing from here; every other module runs in the project's environment.
"""
