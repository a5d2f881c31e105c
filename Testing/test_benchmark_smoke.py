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
        capture_output=True, text=True, cwd=ROOT, timeout=900,  # a guard against hanging, not a speed check
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    (item,) = result["inputs"]
    whole = item["whole_command"]
    assert set(whole) == {'python -c "import torch"', "model (auto backend)"}
    assert all(e["median_s"] > 0 and e["peak_rss_mb"] > 0 and len(e["runs_s"]) == 1 for e in whole.values())
    stages = item["in_process"]["auto"]
    assert stages["model"] == "tiny-test-model 0.0.1" and stages["backend"] == "torch"  # no ONNX export
    assert set(stages["warm_median_s"]) == {"read", "preprocess", "network", "postprocess", "write", "total"}
    assert stages["peak_rss_mb"] >= stages["baseline_rss_mb"] > 0
    assert whole["model (auto backend)"]["median_s"] > stages["warm_median_s"]["total"]
    assert "whole command" in done.stdout and "peak RSS" in done.stdout
    assert out.with_suffix(".md").read_text().startswith("# prostatekd segment")
