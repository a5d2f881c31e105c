"""Ratios (student vs TAPS, student vs teacher), the terminal table and its Markdown twin."""

from __future__ import annotations

from typing import Any

TARGET_SPEEDUP = 20.0  # the default student at least 20x faster than TAPS end to end...
TARGET_MEMORY_FRACTION = 0.5  # ...with under half its peak memory (2 CPU threads, typical volume)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def compare(student: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """How the student compares with ``other`` measured in the same cell (same input, threads, device).

    ``*_speedup`` = other's time / student's time (> 1: the student is faster);
    ``memory_fraction`` = student's peak RSS / other's; ``parameters_ratio`` = other's / student's.
    """
    return {
        "other": other["model"], "other_label": other["label"],
        "size": student["size"], "threads": student["threads"], "device": student["device"],
        "time_basis": f"{student.get('time_basis')} / {other.get('time_basis')}",
        "end_to_end_speedup": _ratio(other.get("time_s"), student.get("time_s")),
        "cold_speedup": _ratio(other.get("cold_s"), student.get("cold_s")),
        "first_call_fresh_process_speedup": _ratio(other.get("first_call_in_fresh_process_s"),
                                                   student.get("first_call_in_fresh_process_s")),
        "network_speedup": _ratio(other.get("network_warm_median_s") or other.get("network_cold_s"),
                                  student.get("network_warm_median_s") or student.get("network_cold_s")),
        "memory_fraction": _ratio(student.get("peak_rss_mb"), other.get("peak_rss_mb")),
        "memory_saved_mb": (other["peak_rss_mb"] - student["peak_rss_mb"])
        if other.get("peak_rss_mb") and student.get("peak_rss_mb") else None,
        "parameters_ratio": _ratio(other.get("parameters"), student.get("parameters")),
        "gflops_as_run_ratio": _ratio(other.get("gflops_as_run"), student.get("gflops_as_run")),
    }


def ratios(rows: list[dict[str, Any]], headline: tuple[str, int, str]) -> dict[str, Any]:
    """Every student-vs-other comparison per cell, and the headline one against the targets."""
    cells: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row.get("time_s") is not None:
            cells.setdefault((row["size"], row["threads"], row["device"]), {})[row["model"]] = row
    vs_peer, vs_teacher = [], []
    for models in cells.values():
        student = models.get("student")
        if not student:
            continue
        for key, row in models.items():
            if row["role"] == "peer":
                vs_peer.append(compare(student, row))
            elif row["role"] == "teacher":
                vs_teacher.append(compare(student, row))

    def pick(items: list[dict]) -> list[dict]:
        size, threads, device = headline
        return [c for c in items if (c["size"], c["threads"], c["device"]) == (size, threads, device)]

    head_peer = pick(vs_peer)
    target: dict[str, Any] = {
        "cell": {"size": headline[0], "threads": headline[1], "device": headline[2]},
        "speedup_at_least": TARGET_SPEEDUP, "memory_fraction_below": TARGET_MEMORY_FRACTION,
    }
    if head_peer:
        h = head_peer[0]
        target.update(end_to_end_speedup=h["end_to_end_speedup"], memory_fraction=h["memory_fraction"],
                      speed_met=bool(h["end_to_end_speedup"] and h["end_to_end_speedup"] >= TARGET_SPEEDUP),
                      memory_met=bool(h["memory_fraction"] is not None and h["memory_fraction"] < TARGET_MEMORY_FRACTION))
    else:
        target["note"] = "not measured: no TAPS result in this cell"
    return {
        "student_vs_taps": {"headline": head_peer[0] if head_peer else None, "all": vs_peer},
        "student_vs_teacher": {"headline": pick(vs_teacher), "all": vs_teacher},
        "target": target,
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


COLUMNS = ("model", "input", "thr", "dev", "params M", "GFLOPs 320x320x24", "GFLOPs as run",
           "end-to-end s", "cold s", "network s", "peak RSS MB", "mask ml", "Dice vs TAPS", "Dice vs phantom GT",
           "other load (cores)")


def _input_name(row: dict[str, Any]) -> str:
    size = "x".join(map(str, row["input_size"]))
    return size if row["size"] == size else f"{row['size']} {size}"


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One tuple of cells per result row, in :data:`COLUMNS` order."""
    out = []
    for r in rows:
        if r.get("time_s") is None:
            out.append((r["label"], r["size"], str(r["threads"]), r["device"], "failed: " + "; ".join(r["errors"]),
                        *[""] * (len(COLUMNS) - 5)))
            continue
        end_to_end = f"{_fmt(r['time_s'])} ({r['warm_runs']} warm)" if r["warm_runs"] else f"{_fmt(r['time_s'])} (cold)"
        network = r.get("network_warm_median_s") if r["warm_runs"] else r.get("network_cold_s")
        out.append((
            r["label"], _input_name(r), str(r["threads"]), r["device"],
            _fmt(r["parameters"] / 1e6 if r.get("parameters") else None, 3), _fmt(r.get("gflops_320x320x24"), 1),
            _fmt(r.get("gflops_as_run"), 0), end_to_end, _fmt(r.get("cold_s")), _fmt(network),
            _fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("mask_volume_ml"), 1), _fmt(r.get("dice_vs_peer"), 3),
            _fmt(r.get("dice_vs_phantom_label"), 3), _fmt(r.get("other_processes_cores"), 1),
        ))
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    """Aligned plain-text table on stdout."""
    body = table_rows(rows)
    width = [max(len(c[i]) for c in [COLUMNS, *body]) for i in range(len(COLUMNS))]
    print("  ".join(h.ljust(w) for h, w in zip(COLUMNS, width)))
    for cells in body:
        print("  ".join(c.ljust(w) for c, w in zip(cells, width)))


def ratio_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable ratio lines (the headline cell first, then per cell)."""
    lines = []
    r = result["ratios"]
    t = r["target"]
    cell = f"{t['cell']['size']}, {t['cell']['threads']} threads, {t['cell']['device']}"
    h = r["student_vs_taps"]["headline"]
    if h:
        lines.append(
            f"student vs TAPS ({cell}): {_fmt(h['end_to_end_speedup'], 1)}x faster end to end "
            f"(target >= {TARGET_SPEEDUP:g}x: {'met' if t['speed_met'] else 'NOT met'}), "
            f"{_fmt(h['network_speedup'], 1)}x faster network-only, {_fmt(h['cold_speedup'], 1)}x faster cold; "
            f"peak memory {_fmt(h['memory_fraction'], 2)} of TAPS's (target < {TARGET_MEMORY_FRACTION:g}: "
            f"{'met' if t['memory_met'] else 'NOT met'}); {_fmt(h['parameters_ratio'], 0)}x fewer parameters")
    else:
        lines.append(f"student vs TAPS ({cell}): not measured")
    for c in r["student_vs_teacher"]["headline"]:
        lines.append(
            f"student vs {c['other_label']} ({cell}): {_fmt(c['end_to_end_speedup'], 1)}x faster end to end, "
            f"{_fmt(c['network_speedup'], 1)}x network-only; peak memory {_fmt(c['memory_fraction'], 2)} of "
            f"the teacher's; {_fmt(c['parameters_ratio'], 1)}x fewer parameters")
    for c in r["student_vs_taps"]["all"] + r["student_vs_teacher"]["all"]:
        lines.append(
            f"  {c['size']}, {c['threads']} thr, {c['device']}: vs {c['other']}: time x{_fmt(c['end_to_end_speedup'], 1)}, "
            f"network x{_fmt(c['network_speedup'], 1)}, memory {_fmt(c['memory_fraction'], 2)}")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The table and the ratios as Markdown (for the README)."""
    m = result["machine"]
    out = [f"Measured {result['date']} on {m['description']} ({m['note']}).", ""]
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "---|" * len(COLUMNS))
    for cells in table_rows(result["results"]):
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += [f"- {line.strip()}" for line in ratio_lines(result) if not line.startswith("  ")]
    return "\n".join(out) + "\n"
