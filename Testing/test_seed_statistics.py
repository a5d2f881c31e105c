"""Paired per-case differences over seeds: the interval, the verdict, seed averaging."""

from __future__ import annotations

import math

from training.recipes.seed_statistics import paired_difference, seed_table_markdown, summarise_seeds


def test_a_consistent_gain_excludes_zero_and_noise_does_not():
    base = {f"c{i}": 0.80 + 0.01 * (i % 5) for i in range(12)}
    better = {c: v + 0.03 for c, v in base.items()}
    noisy = {c: v + (0.03 if i % 2 else -0.03) for i, (c, v) in enumerate(base.items())}
    gain = paired_difference(better, base)
    assert gain["excludes_zero"] and math.isclose(gain["mean"], 0.03) and gain["n"] == 12
    assert gain["wilcoxon_p"] < 0.01
    flat = paired_difference(noisy, base)
    assert not flat["excludes_zero"] and flat["low"] < 0 < flat["high"]
    assert paired_difference({"a": 1.0}, {"b": 1.0})["n"] == 0


def test_summarise_seeds_averages_seeds_per_case_before_pairing():
    rows = []
    for seed in (0, 1, 2):
        for i in range(8):
            rows.append({"method": "none", "seed": seed, "case": f"c{i}", "dice": 0.8})
            rows.append({"method": "kd", "seed": seed, "case": f"c{i}", "dice": 0.8 + 0.02 * (seed - 1) + 0.01})
    summary = {r["method"]: r for r in summarise_seeds(rows, "none")}
    assert summary["kd"]["seeds"] == 3 and math.isclose(summary["kd"]["sd"], 0.02)
    assert math.isclose(summary["kd"]["diff"]["mean"], 0.01) and summary["kd"]["diff"]["excludes_zero"]
    assert "diff" not in summary["none"]
    text = seed_table_markdown(list(summary.values()), "none")
    assert "| kd | 3 | 0.810 ± 0.020 | +0.010" in text and "better" in text
