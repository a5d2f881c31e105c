"""CLI conventions: errors as JSON under --json, -q/-v, log-friendly progress, --set on training commands."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import build_parser, main
from ProstateKDLib.cli.conventions import LOG_PROGRESS_INTERVAL_S, configured_output
from ProstateKDLib.errors import UsageError
from ProstateKDLib.progress import LineProgress, progress_bar

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"


def test_errors_are_json_under_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.nii.gz"
    assert main(["segment", str(missing), str(tmp_path / "m.nii.gz"), "--json"]) == 3
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {"error": f"input not found: {missing}", "exit_code": 3, "kind": "input",
                               "command": "segment"}
    (tmp_path / "m.nii.gz").write_bytes(b"old")
    assert main(["segment", str(SAMPLE), str(tmp_path / "m.nii.gz"), "--json"]) == 4
    assert json.loads(capsys.readouterr().out)["kind"] == "output"
    assert (tmp_path / "m.nii.gz").read_bytes() == b"old"
    with pytest.raises(SystemExit) as excinfo:  # a usage error too
        main(["segment", str(SAMPLE), "--json"])
    assert excinfo.value.code == 2
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out) == {
        "error": "the following arguments are required: output", "exit_code": 2, "kind": "usage", "command": "segment"
    }
    assert main(["series", str(tmp_path), "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["error"] == f"no DICOM series found in folder {tmp_path}"


def test_errors_without_json_stay_one_line_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["segment", str(tmp_path / "x.nii.gz"), str(tmp_path / "m.nii.gz")]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err == f"prostatekd segment: error: input not found: {tmp_path / 'x.nii.gz'}\n"


def test_quiet_and_verbose(tiny_bundle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = ["--model", str(tiny_bundle.path), "--device", "cpu"]
    assert main(["segment", str(SAMPLE), str(tmp_path / "a.nii.gz"), "-q", *model]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "a.nii.gz").is_file()
    assert main(["segment", str(SAMPLE), str(tmp_path / "b.nii.gz"), "--quiet", "--json", *model]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str((tmp_path / "b.nii.gz").resolve())
    assert main(["segment", str(SAMPLE), str(tmp_path / "c.nii.gz"), "-v", *model]) == 0
    assert "gland:" in capsys.readouterr().out
    parser = build_parser()
    for command in (["models"], ["series", "x"], ["phantom", "x"], ["train", "c.yaml", "--run-dir", "r"]):
        assert parser.parse_args([*command, "-q"]).quiet is True
        assert parser.parse_args([*command, "-v"]).verbose is True
    assert parser.parse_args(["train", "c.yaml", "--run-dir", "r", "--quiet"]).quiet is True  # its own option


def test_series_quiet_prints_the_uid_for_scripts(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["series", str(shared_data / "dicom" / "ProstateX-0000"), "-q"]) == 0
    assert capsys.readouterr().out == "1.3.6.1.4.1.14519.5.2.1.7311.5101.160028252338004527274326500702\n"


def test_line_progress_does_not_flood() -> None:
    stream = io.StringIO()
    bar = LineProgress(200, "segment", "case", stream)
    for _ in range(200):
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 21 and "\r" not in stream.getvalue()  # the first case, then one line per 5 %
    assert lines[0].startswith("segment: 1/200 cases (0%), ") and lines[1].startswith("segment: 10/200 cases (5%), ")
    assert lines[-1].startswith("segment: 200/200 cases (100%)")
    stream = io.StringIO()
    bar = LineProgress(3, "segment", "case", stream)
    for _ in range(3):
        bar.update(1)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == [
        "segment: 1/3 cases (33%)", "segment: 2/3 cases (66%)", "segment: 3/3 cases (100%)"
    ]
    assert isinstance(progress_bar(5, "x", file=io.StringIO()), LineProgress)  # not a terminal


def test_batch_progress_in_a_log_is_one_line_per_case(tiny_bundle, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a", "b"):
        shutil.copyfile(SAMPLE, cases / f"{name}.nii.gz")
    assert main(["segment", str(cases), str(tmp_path / "out"), "--batch", "--model", str(tiny_bundle.path)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [line.split(",")[0] for line in err.splitlines()] == [
        "segment: 1/2 cases (50%)", "segment: 2/2 cases (100%)"
    ]


def test_tqdm_redraws_rarely_when_stderr_is_no_terminal() -> None:
    """tqdm reads TQDM_* defaults when first imported: the parser must not import it before the command runs."""
    code = (
        "import os, sys\n"
        "from training.cli import build_parser\n"
        "from ProstateKDLib.cli.conventions import configured_output\n"
        "build_parser()\n"
        "assert 'tqdm' not in sys.modules\n"
        "with configured_output(quiet=False, verbose=False):\n"
        "    from tqdm import tqdm\n"
        "    print(tqdm(total=10, file=sys.stderr).mininterval)\n"
        "print('TQDM_MININTERVAL' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            check=True)  # stderr is a pipe here, not a terminal
    assert result.stdout.split() == [f"{LOG_PROGRESS_INTERVAL_S:.1f}", "False"]
    code = code.replace("quiet=False", "quiet=True").replace(".mininterval", ".disable")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                            check=True)
    assert result.stdout.split() == ["True", "False"]


def test_set_overrides_reach_the_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.config import load_config
    from training.config_set import parse_set_options, using_overrides

    assert parse_set_options(["train.learning_rate=3e-4", "data.sites=[RUNMC, HK]", "train.epochs=5",
                              "train.amp=true", "train.epochs=7"]) == {
        "train.learning_rate": 3e-4, "data.sites": ["RUNMC", "HK"], "train.epochs": 7, "train.amp": True
    }
    for bad, message in (("epochs", "--set needs KEY=VALUE, got 'epochs'"),
                         ("1x=2", "--set key '1x' is not a dotted config key such as train.epochs")):
        with pytest.raises(UsageError) as excinfo:
            parse_set_options([bad])
        assert str(excinfo.value) == message
    with using_overrides({"train.epochs": 9, "data.root": str(tmp_path)}):
        config = load_config(SMOKE, {"train.epochs": 3})
    assert config.train.epochs == 9 and config.data.root == str(tmp_path)
    assert load_config(SMOKE).train.epochs == 2  # outside the command, the file's value

    run_dir = tmp_path / "run"
    assert main(["train", str(SMOKE), "--run-dir", str(run_dir), "--set", "train.epochs=ten"]) == 7
    assert capsys.readouterr().err.strip() == (
        "prostatekd train: error: config smoke.yaml: key 'train.epochs' must be an integer, got 'ten'"
    )
    assert main(["train", str(SMOKE), "--run-dir", str(run_dir), "--set", "train.nonsense=1"]) == 7
    assert capsys.readouterr().err.startswith(
        "prostatekd train: error: config smoke.yaml: unknown key 'train.nonsense' (known: amp, batch_size,"
    )
    assert main(["distill", str(SMOKE), "--run-dir", str(run_dir), "--set", "=1"]) == 2
    assert capsys.readouterr().err.strip() == "prostatekd distill: error: --set needs KEY=VALUE, got '=1'"
    assert not run_dir.exists()
    assert build_parser().parse_args(["train-teacher", "c.yaml", "--run-dir", "r", "--set", "a.b=1"]).set_options


def test_broken_pipe_is_quiet(shared_data: Path) -> None:
    command = (f"{sys.executable} -m ProstateKDLib series {shared_data / 'dicom'} --json | head -c 10 >/dev/null; "
               "exit ${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT)
    assert "Traceback" not in result.stderr
