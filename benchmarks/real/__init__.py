"""Helpers of the real-data reports (``benchmarks/real_test_report.py``, ``benchmarks/prostatex_runs.py``)."""
