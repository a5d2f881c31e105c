"""plot_runs_column: one column of several runs' log.csv in one PNG, the values beside it as JSON."""

from __future__ import annotations

import json

import pytest

from ProstateKDLib.errors import InputError
from training.plot_log import plot_runs_column


def write_log(path, rows):
    path.write_text("epoch,loss,val_dice\n" + "".join(f"{e},{l},{v}\n" for e, l, v in rows))
    return path


def test_plot_runs_column_marks_each_runs_best(tmp_path):
    a = write_log(tmp_path / "a.csv", [(1, 1.0, 0.5), (2, 0.8, 0.7), (3, 0.7, 0.6)])
    b = write_log(tmp_path / "b.csv", [(1, 1.0, 0.4), (2, 0.9, ""), (3, 0.6, 0.8), (4, 0.5, 0.75)])
    png = plot_runs_column({"short": a, "long": b}, "val_dice", tmp_path / "out" / "val.png", title="validation")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    record = json.loads(png.with_suffix(".json").read_text())
    assert record["short"]["best"] == {"epoch": 2.0, "val_dice": 0.7}
    assert record["long"]["best"] == {"epoch": 3.0, "val_dice": 0.8}  # the empty epoch is skipped, not a 0
    assert record["long"]["epoch"] == [1.0, 2.0, 3.0, 4.0]


def test_plot_runs_column_refuses_bad_input(tmp_path):
    a = write_log(tmp_path / "a.csv", [(1, 1.0, 0.5)])
    with pytest.raises(InputError, match=r"has no column 'dice' \(columns: epoch, loss, val_dice\)$"):
        plot_runs_column({"a": a}, "dice", tmp_path / "x.png")
    with pytest.raises(InputError, match=r"^log file not found: "):
        plot_runs_column({"a": tmp_path / "missing.csv"}, "val_dice", tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_runs_column({}, "val_dice", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.json").exists()
