"""PSA density (ng/ml/cc) in the segment summary: ``--psa NG_PER_ML``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ProstateKDLib.cli import main
from ProstateKDLib.psa_density import psa_density

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "Resources" / "Samples" / "PhantomCase01.nii.gz"


def test_psa_density_is_psa_over_volume() -> None:
    assert psa_density(6.0, 40.0) == pytest.approx(0.15)
    assert psa_density(0, 12.5) == 0.0
    for psa in (-1.0, float("nan"), float("inf"), 10001.0, True, "6"):
        with pytest.raises(ValueError, match="^PSA must be a number in 0-10000 ng/ml, got "):
            psa_density(psa, 40.0)  # type: ignore[arg-type]
    for volume in (0.0, -3.0, float("nan")):
        with pytest.raises(ValueError, match="^gland volume must be > 0 ml for a PSA density, got "):
            psa_density(6.0, volume)


def test_segment_reports_psa_density(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The bundled student on the phantom sample: density = PSA / the reported gland volume."""
    args = ["segment", str(SAMPLE), str(tmp_path / "m.nii.gz"), "--device", "cpu", "--psa", "7.5", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["volume_ml"] > 5
    assert summary["psa_ng_ml"] == 7.5
    assert summary["psa_density_ng_ml_cc"] == pytest.approx(7.5 / summary["volume_ml"], rel=1e-2)
    assert main([*args[:3], "--device", "cpu", "--psa", "7.5", "--overwrite"]) == 0
    lines = capsys.readouterr().out.splitlines()
    density = f"{7.5 / summary['volume_ml']:.3f}"
    assert f"PSA:      7.5 ng/ml, density {density} ng/ml/cc" in lines


def test_bad_psa_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["segment", str(SAMPLE), str(tmp_path / "m.nii.gz"), "--psa", "-2"])
    assert excinfo.value.code == 2
    assert "argument --psa: PSA must be a number in 0-10000 ng/ml, got '-2'" in capsys.readouterr().err
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(SAMPLE.read_bytes())
    assert main(["segment", str(folder), str(tmp_path / "out"), "--batch", "--psa", "4"]) == 2
    assert capsys.readouterr().err.strip() == "prostatekd segment: error: --psa applies to one case, not a batch"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]
