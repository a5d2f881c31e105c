"""Methods compared over several seeds: mean ± SD, and the paired per-case difference to a baseline.

A method is *better* than the baseline only when the 95 % interval of its paired per-case
difference excludes 0. Per case, each method's Dice is first averaged over its seeds (so
seed noise shrinks the difference's spread instead of being mistaken for cases); the interval
is a percentile bootstrap over cases (10 000 resamples, fixed generator), and the Wilcoxon
signed-rank p-value is given beside it (SciPy).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


def paired_difference(
    scores: Mapping[str, float], baseline: Mapping[str, float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> dict[str, Any]:
    """Mean of ``scores[c] - baseline[c]`` over the cases both have, its bootstrap interval and Wilcoxon p.

    Returns:
        ``{"n", "mean", "low", "high", "wilcoxon_p", "excludes_zero"}`` (NaN values when there is no case).
    """
    cases = sorted(c for c in scores if c in baseline and np.isfinite(scores[c]) and np.isfinite(baseline[c]))
    if not cases:
        nan = float("nan")
        return {"n": 0, "mean": nan, "low": nan, "high": nan, "wilcoxon_p": nan, "excludes_zero": False}
    diff = np.array([scores[c] - baseline[c] for c in cases], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    alpha = (1.0 - CONFIDENCE) / 2.0
    low, high = (float(v) for v in np.quantile(means, [alpha, 1.0 - alpha]))
    p = float("nan")
    if np.any(diff != 0):
        from scipy.stats import wilcoxon

        p = float(wilcoxon(diff).pvalue)
    return {"n": len(cases), "mean": float(diff.mean()), "low": low, "high": high, "wilcoxon_p": p,
            "excludes_zero": bool(low > 0 or high < 0)}


def summarise_seeds(rows: Sequence[Mapping[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """One row per method from per-case rows ``{"method", "seed", "case", "dice"}``.

    Each row: ``method``, ``seeds``, ``mean`` and ``sd`` (over seeds of the seed's mean Dice),
    and (methods other than ``baseline``) ``diff`` = :func:`paired_difference` of the
    seed-averaged per-case Dice against the baseline's.
    """
    per_seed: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = float(row["dice"])
        if not math.isnan(value):
            per_seed[row["method"]][row["seed"]].append(value)
    baseline_cases = case_means(rows, baseline) if baseline in per_seed else None
    out = []
    for method in per_seed:
        seed_means = [float(np.mean(v)) for v in per_seed[method].values()]
        record: dict[str, Any] = {
            "method": method, "seeds": len(seed_means), "mean": float(np.mean(seed_means)),
            "sd": float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else float("nan"),
        }
        if method != baseline and baseline_cases is not None:
            record["diff"] = paired_difference(case_means(rows, method), baseline_cases)
        out.append(record)
    return out


def seed_table_markdown(summary: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """A Markdown table of :func:`summarise_seeds` with the verdict per method."""
    lines = [f"| method | seeds | mean Dice ± SD over seeds | paired difference to {baseline} [95 % bootstrap] "
             "| Wilcoxon p | verdict |", "|---|---|---|---|---|---|"]
    for row in summary:
        sd = "" if math.isnan(row["sd"]) else f" ± {row['sd']:.3f}"
        if "diff" not in row:
            lines.append(f"| {row['method']} | {row['seeds']} | {row['mean']:.3f}{sd} | (baseline) | | |")
            continue
        d = row["diff"]
        verdict = ("better" if d["mean"] > 0 else "worse") if d["excludes_zero"] else "no difference shown"
        p = "" if math.isnan(d["wilcoxon_p"]) else f"{d['wilcoxon_p']:.3f}"
        lines.append(f"| {row['method']} | {row['seeds']} | {row['mean']:.3f}{sd} | {d['mean']:+.3f} "
                     f"[{d['low']:+.3f}, {d['high']:+.3f}] (n={d['n']}) | {p} | {verdict} |")
    return "\n".join(lines) + "\n"


def case_means(rows: Sequence[Mapping[str, Any]], method: str) -> dict[str, float]:
    """Per case, ``method``'s Dice averaged over its seeds (NaN values skipped)."""
    per_case: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["method"] == method and not math.isnan(float(row["dice"])):
            per_case[row["case"]].append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in per_case.items()}


def pairwise_markdown(rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of the paired per-case difference ``a - b`` for each ``(a, b)`` of ``pairs``."""
    lines = ["| comparison | paired difference [95 % bootstrap] | Wilcoxon p | verdict |", "|---|---|---|---|"]
    for a, b in pairs:
        d = paired_difference(case_means(rows, a), case_means(rows, b))
        verdict = ((f"{a} better" if d["mean"] > 0 else f"{b} better") if d["excludes_zero"]
                   else "no difference shown")
        p = "" if math.isnan(d["wilcoxon_p"]) else f"{d['wilcoxon_p']:.3f}"
        lines.append(f"| {a} − {b} | {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (n={d['n']}) | {p} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def per_site_markdown(rows: Sequence[Mapping[str, Any]], sites: Sequence[str]) -> str:
    """Per method and site: mean Dice ± SD over seeds (each seed's mean over that site's cases).

    ``rows`` need ``method``, ``seed``, ``site`` and ``dice``.
    """
    per: dict[str, dict[str, dict[Any, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        value = float(row["dice"])
        if not math.isnan(value):
            per[row["method"]][row["site"]][row["seed"]].append(value)
            per[row["method"]]["all"][row["seed"]].append(value)
    lines = ["| method | seeds | " + " | ".join(sites) + " | all |", "|---|---|" + "---|" * (len(sites) + 1)]
    for method, by_site in per.items():
        cells = []
        for site in [*sites, "all"]:
            means = [float(np.mean(v)) for v in by_site.get(site, {}).values()]
            if not means:
                cells.append("-")
            elif len(means) == 1:
                cells.append(f"{means[0]:.3f}")
            else:
                cells.append(f"{np.mean(means):.3f} ± {np.std(means, ddof=1):.3f}")
        lines.append(f"| {method} | {len(by_site['all'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
