"""PNG plots: time vs input size (per model and thread count), Dice vs time (per model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"student": "tab:green", "teacher": "tab:blue", "peer": "tab:red"}


def _color(row: dict[str, Any]) -> str:
    return COLORS.get(row["role"], "tab:gray")


def _plain_log_ticks(axis) -> None:  # noqa: ANN001  (a matplotlib axis)
    """Label a log axis 0.5, 1, 2, 5, 10... instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def time_vs_size(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """End-to-end time (warm median, or cold where no warm run) against input voxels, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    lines: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("time_s") is not None:
            lines.setdefault((row["label"], row["threads"], row["device"]), []).append(row)
    styles = {1: ":", 2: "-"}
    for (label, threads, device), points in sorted(lines.items(), key=lambda kv: kv[0]):
        points.sort(key=lambda r: r["input_voxels"])
        x = [r["input_voxels"] / 1e6 for r in points]
        y = [r["time_s"] for r in points]
        marker = "o" if device == "cpu" else "s"
        ax.plot(x, y, styles.get(threads, "--"), marker=marker, color=_color(points[0]),
                label=f"{label}, {threads} thr, {device}")
        for r in points:
            if r["warm_runs"] == 0:  # cold only: hollow marker
                ax.plot(r["input_voxels"] / 1e6, r["time_s"], marker, mfc="white", color=_color(r))
    sizes = {r["input_voxels"] / 1e6: f"{r['size']}\n{'x'.join(map(str, r['input_size']))}" for r in rows}
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), list(sizes.values()), fontsize=8)
    ax.minorticks_off()
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("input volume (voxels)")
    ax.set_ylabel("end-to-end seconds (file in -> mask out)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def dice_vs_time(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Dice against the phantom label (filled) and against TAPS's mask (hollow) vs end-to-end time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    seen: set[str] = set()
    for row in rows:
        if row.get("time_s") is None:
            continue
        color = _color(row)
        gt, peer = row.get("dice_vs_phantom_label"), row.get("dice_vs_peer")
        if gt is not None:
            label = f"{row['label']} vs phantom label" if row["label"] + "gt" not in seen else None
            seen.add(row["label"] + "gt")
            ax.scatter(row["time_s"], gt, color=color, marker="o", label=label)
            ax.annotate(f"{row['size']} {row['threads']}t", (row["time_s"], gt), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        if peer is not None:
            label = f"{row['label']} vs TAPS mask" if row["label"] + "peer" not in seen else None
            seen.add(row["label"] + "peer")
            ax.scatter(row["time_s"], peer, facecolors="white", edgecolors=color, marker="D", label=label)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("end-to-end seconds (log)")
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
