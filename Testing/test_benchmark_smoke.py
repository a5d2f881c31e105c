"""Smoke run of the segmentation benchmark (tiny volume, one repeat): keeps it from rotting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_segment_benchmark_smoke(tmp_path, tiny_bundle):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "segment_benchmark.py"), "--smoke", "--threads", "1",
         "--model", str(tiny_bundle.path), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["model"] == "tiny-test-model 0.0.1"
    assert set(result["warm_median_s"]) == {"read", "preprocess", "network", "postprocess", "write", "total"}
    assert result["peak_rss_mb"] >= result["baseline_rss_mb_after_imports_and_model"] > 0
    assert result["cli_wall_s"] > result["warm_median_s"]["total"]
    assert "network" in done.stdout and "peak RSS" in done.stdout
