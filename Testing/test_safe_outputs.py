"""``prostatekd segment`` never replaces an input, never writes outside OUTDIR, never loses a summary.

Issue 15, items 1-6: each hostile situation is built by the test and run
through the real command (tiny random-weight bundle).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from ProstateKDLib.cli import main
from ProstateKDLib.temp_files import remove_stale_temporaries, temporary_path

from conftest import MODEL_JSON, ROOT, make_bundle
from test_cli import write_dicom_series


@pytest.fixture
def run(tiny_bundle, capsys):
    """Run ``prostatekd`` with the tiny bundle; returns (exit code, stdout, stderr)."""

    def runner(*args: str):
        code = main([*args, "--model", str(tiny_bundle.path), "--device", "cpu"])
        out, err = capsys.readouterr()
        return code, out, err

    return runner


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------- items 1 and 2
def test_output_that_is_the_input_is_refused(run, tmp_path, make_volume):
    source = tmp_path / "t2.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    before = source.read_bytes()
    code, _, err = run("segment", str(source), str(source), "--overwrite")
    assert (code, err.strip()) == (
        4, f"prostatekd segment: error: output {source} is the input file {source}; choose another output path"
    )
    link = tmp_path / "L.nii.gz"
    link.symlink_to(source)
    code, _, err = run("segment", str(source), str(link), "--overwrite")
    assert code == 4 and err.strip().endswith(f"output {link} is the input file {source}; choose another output path")
    hard = tmp_path / "hard.nii.gz"
    os.link(source, hard)
    code, _, _ = run("segment", str(source), str(hard), "--overwrite")
    assert code == 4
    assert source.read_bytes() == before and link.is_symlink()
    assert _files(tmp_path) == ["L.nii.gz", "hard.nii.gz", "t2.nii.gz"]


def test_output_that_is_a_file_of_the_input_dicom_series_is_refused(run, tmp_path, make_volume):
    series = tmp_path / "series"
    write_dicom_series(make_volume(), series)
    for index, path in enumerate(sorted(series.iterdir())):  # scanner-style names, no suffix
        path.rename(series / f"IM{index:05d}")
    target = series / "IM00000"
    link = tmp_path / "slice.nii.gz"
    link.symlink_to(target)
    before = target.read_bytes()
    code, _, err = run("segment", str(series), str(link), "--overwrite")
    assert (code, err.strip()) == (
        4, f"prostatekd segment: error: output {link} is a file of the input DICOM series {series}; "
        "choose another output path",
    )
    assert target.read_bytes() == before


# -------------------------------------------------------------------- item 3
def test_unsafe_case_names_are_error_rows_and_nothing_escapes(run, tmp_path, make_volume):
    work = tmp_path / "work"
    work.mkdir()
    sitk.WriteImage(make_volume(), str(work / "a.nrrd"))
    (work / "list.csv").write_text(
        f"case,image\n../escaped,a.nrrd\n{tmp_path}/abs,a.nrrd\n..,a.nrrd\nsub/dir,a.nrrd\nfine,a.nrrd\n"
    )
    outdir = work / "out"
    code, out, _ = run("segment", str(work / "list.csv"), str(outdir))
    assert code == 1 and "4 failed" in out
    rows = _rows(outdir / "summary.csv")
    assert [(r["case"], r["status"]) for r in rows] == [
        ("../escaped", "error"), (f"{tmp_path}/abs", "error"), ("..", "error"), ("sub/dir", "error"), ("fine", "ok")
    ] or rows[-1]["status"] == "warning"
    assert rows[0]["warnings"] == "unsafe case name '../escaped' (it starts with '.'); nothing written"
    assert rows[3]["warnings"] == "unsafe case name 'sub/dir' (it holds a path separator or control character); " \
                                  "nothing written"
    assert _files(outdir) == ["fine_segmentation.nii.gz", "summary.csv"]
    assert _files(work) == ["a.nrrd", "list.csv", "out"]
    assert _files(tmp_path) == ["work"]


def test_a_symlinked_mask_in_outdir_is_not_followed_out_of_it(run, tmp_path, make_volume):
    inputs, outdir, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "precious.nii.gz"
    inputs.mkdir()
    outdir.mkdir()
    sitk.WriteImage(make_volume(), str(inputs / "c1.nii.gz"))
    elsewhere.write_bytes(b"keep me")
    (outdir / "c1_segmentation.nii.gz").symlink_to(elsewhere)
    code, _, _ = run("segment", str(inputs), str(outdir), "--overwrite")
    assert code == 1
    row = _rows(outdir / "summary.csv")[0]
    assert row["status"] == "error" and "outside the output folder" in row["warnings"]
    assert elsewhere.read_bytes() == b"keep me"


# -------------------------------------------------------------------- item 4
def test_rerun_skips_finished_cases_and_keeps_the_summary(run, tmp_path, make_volume):
    inputs, outdir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(3):
        sitk.WriteImage(make_volume(seed=i), str(inputs / f"c{i}.nii.gz"))
    code, _, _ = run("segment", str(inputs), str(outdir), "--batch")
    assert code == 0
    first = _rows(outdir / "summary.csv")
    assert [r["status"] in ("ok", "warning") for r in first] == [True] * 3
    masks = {name: (outdir / name).stat().st_mtime_ns for name in _files(outdir) if name != "summary.csv"}

    # same inputs, no flag: every finished case is kept, the summary is unchanged
    code, out, _ = run("segment", str(inputs), str(outdir))
    assert code == 0 and "3 kept from the previous run" in out
    assert _rows(outdir / "summary.csv") == first
    assert {n: (outdir / n).stat().st_mtime_ns for n in masks} == masks

    # a lost mask is made again, the others are kept
    (outdir / "c1_segmentation.nii.gz").unlink()
    code, out, _ = run("segment", str(inputs), str(outdir))
    assert code == 0 and "2 kept" in out and (outdir / "c1_segmentation.nii.gz").exists()
    assert [r["case"] for r in _rows(outdir / "summary.csv")] == ["c0", "c1", "c2"]

    # other inputs that would collide with the existing masks: refused, nothing touched
    other = tmp_path / "other"
    other.mkdir()
    sitk.WriteImage(make_volume(seed=7), str(other / "c0.nii.gz"))
    summary_before = (outdir / "summary.csv").read_bytes()
    code, _, err = run("segment", str(other), str(outdir))
    assert code == 4
    assert err.strip() == (
        f"prostatekd segment: error: {outdir} already holds masks of 1 of these cases (c0) from a run with "
        "other inputs; use --skip-existing to keep them or --overwrite to replace them"
    )
    assert (outdir / "summary.csv").read_bytes() == summary_before

    # a new case added to the folder: run alone, the old rows stay
    sitk.WriteImage(make_volume(seed=3), str(inputs / "c3.nii.gz"))
    code, out, _ = run("segment", str(inputs), str(outdir), "--skip-existing")
    assert code == 0 and "3 kept" in out
    assert [r["case"] for r in _rows(outdir / "summary.csv")] == ["c0", "c1", "c2", "c3"]

    # --overwrite recomputes; rows of cases not in this run are kept
    code, out, _ = run("segment", str(other), str(outdir), "--overwrite")
    assert code == 0
    rows = _rows(outdir / "summary.csv")
    assert [r["case"] for r in rows] == ["c0", "c1", "c2", "c3"]
    assert rows[0]["input"] == str(other / "c0.nii.gz")


# -------------------------------------------------------------------- item 5
def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """A real ``prostatekd segment`` process, terminated while its mask is being written."""
    data = {**MODEL_JSON, "input": {**MODEL_JSON["input"], "spacing": [12.0, 12.0, 12.0]}}
    bundle = make_bundle(tmp_path / "coarse", data)
    big = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 20, (160, 512, 512)).astype(np.int16))
    big.SetSpacing((0.5, 0.5, 1.0))
    source = tmp_path / "big.nii"
    sitk.WriteImage(big, str(source))
    outdir = tmp_path / "out"
    outdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "ProstateKDLib.cli", "segment", str(source), str(outdir / "mask.nii.gz"),
         "--model", str(bundle.path), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    deadline = time.monotonic() + 240
    while child.poll() is None and not any(".tmp-" in n for n in _files(outdir)):
        assert time.monotonic() < deadline, "no temporary mask file appeared"
        time.sleep(0.005)
    assert child.poll() is None, f"finished before the write could be interrupted: {child.communicate()}"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130
    assert err.strip().splitlines()[-1] == "prostatekd segment: interrupted"
    assert _files(outdir) == []


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(run, tmp_path, make_volume):
    source = tmp_path / "t2.nii.gz"
    sitk.WriteImage(make_volume(), str(source))
    outdir = tmp_path / "out"
    outdir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = outdir / f".mask.tmp-{dead_pid}-0a1b2c3d.nii.gz"
    stale_summary = outdir / f".summary.tmp-{dead_pid}-0a1b2c3d.csv"
    live = outdir / f".other.tmp-{os.getpid()}-0a1b2c3d.nii.gz"  # a live process's file: kept
    user = outdir / ".notes.tmp"  # not ours: kept
    for path in (stale, stale_summary, live, user):
        path.write_bytes(b"partial")
    code, _, _ = run("segment", str(source), str(outdir / "mask.nii.gz"))
    assert code == 0
    assert _files(outdir) == sorted([live.name, user.name, "mask.nii.gz"])
    assert remove_stale_temporaries(outdir) == []
    assert temporary_path(outdir / "m.nii.gz", ".nii.gz").name.startswith(f".m.tmp-{os.getpid()}-")


# -------------------------------------------------------------------- item 6
def test_a_stray_volume_in_a_dicom_folder_does_not_switch_to_batch(run, tmp_path, make_volume):
    series = tmp_path / "series"
    volume = make_volume()
    write_dicom_series(volume, series)
    sitk.WriteImage(sitk.Cast(volume > 200, sitk.sitkUInt8), str(series / "old_mask.nii.gz"))
    output = tmp_path / "mask.nii.gz"
    code, out, err = run("segment", str(series), str(output))
    assert code == 0, err
    assert output.is_file()
    assert sitk.ReadImage(str(output)).GetSize() == volume.GetSize()
    assert "input:    " + str(series) in out


def test_multi_site_layout_runs_as_a_batch_when_asked(run, tmp_path, make_volume, capsys):
    root = tmp_path / "phantoms"
    for site in ("RUNMC", "HK"):
        (root / site).mkdir(parents=True)
        sitk.WriteImage(make_volume(), str(root / site / "Case00.nii.gz"))
        sitk.WriteImage(sitk.Cast(make_volume() > 200, sitk.sitkUInt8), str(root / site / "Case00_segmentation.nii.gz"))
    out = tmp_path / "out"
    code, _, err = run("segment", str(root), str(out))
    assert (code, err.strip()) == (
        2, f"prostatekd segment: error: {root} holds volumes, not a DICOM series; to segment them all, "
        "give an existing output folder or add --batch",
    )
    assert not out.exists()
    code, stdout, err = run("segment", str(root), str(out), "--batch")
    assert code == 0, err
    assert [r["case"] for r in _rows(out / "summary.csv")] == ["HK_Case00", "RUNMC_Case00"]
    out2 = tmp_path / "existing"
    out2.mkdir()
    code, _, err = run("segment", str(root), str(out2))
    assert code == 0, err
    assert _files(out2) == ["HK_Case00_segmentation.nii.gz", "RUNMC_Case00_segmentation.nii.gz", "summary.csv"]
