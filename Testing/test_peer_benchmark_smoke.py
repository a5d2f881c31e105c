"""Smoke run of the peer benchmark (one tiny volume, no TAPS, student + tiny teacher): keeps it from rotting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer import report  # noqa: E402

ROW_KEYS = {"model", "role", "size", "threads", "device", "parameters", "gflops_320x320x24", "gflops_as_run",
            "cold_s", "warm_median_s", "time_s", "network_warm_median_s", "peak_rss_mb", "dice_vs_peer",
            "dice_vs_phantom_label", "windows"}


def test_peer_benchmark_smoke(tmp_path, tiny_bundle):
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "peer_benchmark.py"), "--no-peer", "--no-gpu",
         "--sizes", "96x96x16", "--spacing", "0.8", "0.8", "3.0", "--threads", "1", "--repeats", "1",
         "--teacher", str(tiny_bundle.path), "--out-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "peer_benchmark.json").read_text())
    assert {"date", "machine", "settings", "inputs", "models", "results", "ratios", "not_measured"} <= set(result)
    assert set(result["models"]) == {"student", "teacher"}
    assert result["models"]["teacher"]["name"] == "tiny-test-model 0.0.1"
    rows = {row["model"]: row for row in result["results"]}
    assert set(rows) == {"student", "teacher"}
    for row in rows.values():
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["time_s"] > 0 and row["cold_s"] > 0 and row["peak_rss_mb"] > 100 and row["windows"] >= 1
        assert row["dice_vs_peer"] is None and 0.0 <= row["dice_vs_phantom_label"] <= 1.0
    student, teacher = rows["student"], rows["teacher"]
    assert student["parameters"] == 150633

    ratios = result["ratios"]
    assert ratios["student_vs_taps"]["headline"] is None and ratios["student_vs_taps"]["all"] == []
    assert "not measured" in ratios["target"]["note"]
    (vs_teacher,) = ratios["student_vs_teacher"]["headline"]
    assert vs_teacher["end_to_end_speedup"] == pytest.approx(teacher["time_s"] / student["time_s"])
    assert vs_teacher["memory_fraction"] == pytest.approx(student["peak_rss_mb"] / teacher["peak_rss_mb"])
    assert vs_teacher["parameters_ratio"] == pytest.approx(teacher["parameters"] / student["parameters"])
    assert any("TAPS" in line for line in result["not_measured"])

    for name in ("peer_time_vs_size.png", "peer_dice_vs_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| model |" in (out / "peer_benchmark.md").read_text()
    assert "peak RSS MB" in done.stdout and "student vs tiny-test-model" not in done.stdout
    assert "student vs teacher tiny-test-model" in done.stdout


def _row(model: str, role: str, time_s: float, rss: float, params: int) -> dict:
    return {"model": model, "label": model, "role": role, "size": "typical", "threads": 2, "device": "cpu",
            "time_s": time_s, "time_basis": "warm median", "cold_s": time_s * 2, "peak_rss_mb": rss,
            "parameters": params, "network_warm_median_s": time_s / 2, "first_call_in_fresh_process_s": time_s * 3,
            "gflops_as_run": None}


def test_ratios_against_targets():
    rows = [_row("student", "student", 1.5, 600.0, 150_000), _row("taps", "peer", 45.0, 1600.0, 19_900_000),
            _row("teacher", "teacher", 6.0, 900.0, 1_200_000)]
    result = report.ratios(rows, ("typical", 2, "cpu"))
    head = result["student_vs_taps"]["headline"]
    assert head["end_to_end_speedup"] == pytest.approx(30.0)
    assert head["memory_fraction"] == pytest.approx(0.375)
    assert head["parameters_ratio"] == pytest.approx(19_900_000 / 150_000)
    assert result["target"]["speed_met"] and result["target"]["memory_met"]
    rows[0]["peak_rss_mb"] = 900.0
    assert not report.ratios(rows, ("typical", 2, "cpu"))["target"]["memory_met"]
    (teacher,) = result["student_vs_teacher"]["headline"]
    assert teacher["end_to_end_speedup"] == pytest.approx(4.0)
