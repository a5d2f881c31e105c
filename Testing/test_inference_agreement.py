"""benchmarks/inference_agreement.py on one real PROMISE12 case: it runs, and the backends agree."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_agreement_script_on_one_real_case(shared_data, tmp_path):
    out = tmp_path / "agreement.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference_agreement.py"), "--data", str(shared_data / "promise12"),
         "--cases", "Case17", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["cases"] == 1 and result["rows"][0]["case"] == "Case17" and result["rows"][0]["site"] == "HK"
    agreement = result["summary"]["agreement_min"]
    assert agreement["onnx_whole vs torch_whole"] >= 0.999
    assert agreement["onnx_sliding vs torch_sliding"] >= 0.999
    assert agreement["torch_sliding vs monai_reference"] >= 0.999  # numpy pipeline == the MONAI one
    assert set(result["summary"]["mean_dice"]) == {"onnx_whole", "onnx_sliding", "onnx_sliding_0.5", "onnx_tta",
                                                   "onnx_whole_tta", "torch_whole", "torch_sliding", "monai_reference"}
    assert out.with_suffix(".md").read_text().startswith("# Inference options on real cases")
    priced = {(q["option"], q["baseline"]): q for q in result["summary"]["priced"]}
    assert priced[("onnx_tta", "onnx_sliding")]["median_time_ratio"] > 1  # TTA costs network passes
