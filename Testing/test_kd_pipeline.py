"""Knowledge-distillation pipeline on tiny phantoms: teachers per site, adaptive distillation,
evaluation, export and segmentation; exact resume with adapters; parallel teachers; torchrun."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ProstateKDLib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "smoke.yaml"
SITES = ["BMC", "RUNMC"]


@pytest.fixture(scope="module")
def data_root(phantom_folder) -> Path:
    """Two sites x 4 coarse phantoms (48 x 48 x 12 voxels)."""
    return phantom_folder(4, SITES, seed=3)


def smoke_dict(root: Path, **changes) -> dict:
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(root)
    data["data"]["val_fraction"] = 0.34
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def teacher_dict(root: Path, **changes) -> dict:
    return smoke_dict(root, **{"model.kwargs": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0},
                               "export.name": "tiny-teacher", **changes})


def adaptive_dict(root: Path, **changes) -> dict:
    return smoke_dict(root, **{
        "distiller": {"name": "multi_teacher_adaptive", "weights": {"dice": 1, "lovasz": 1, "kl": 1, "feature": 1},
                      "tau": 0.1},
        "export.name": "tiny-adaptive-student", **changes,
    })


def write_yaml(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ the whole pipeline through the CLI
def _split(data_root: Path, work: Path, main) -> tuple[Path, list, Path | None]:
    """(training case list .csv, test cases, dataset index or None): prepare's split when it exists."""
    from ProstateKDLib.datasets import index_cases

    try:
        from training.prepare import index_split
    except ImportError:
        index_split = None
    index = None
    if index_split is not None:
        index = work / "index.json"
        assert main(["prepare", str(data_root), "--out", str(index), "--folds", "1", "--test-fraction", "0.25",
                     "--quiet"]) == 0
        pool = index_split(index, "train") + index_split(index, "val")
        test = index_split(index, "test")
    else:  # the data folder: the last case of each site is held out
        cases = index_cases(data_root)
        test = [c for c in cases if c.case_id.endswith("Case03")]
        pool = [c for c in cases if c not in test]
    table = work / "train.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "site"])
        writer.writerows([[str(c.image), str(c.label), c.site] for c in pool])
    assert len(test) == 2 and {c.site for c in test} == set(SITES)
    return table, test, index


def test_pipeline_teachers_per_site_adaptive_student_evaluate_export_segment(data_root, tmp_path, capsys):
    from ProstateKDLib.bundle import load_bundle
    from training.cli import main

    table, test, index = _split(data_root, tmp_path, main)
    teacher_yaml = write_yaml(teacher_dict(data_root), tmp_path / "teacher.yaml")
    student_yaml = write_yaml(adaptive_dict(data_root), tmp_path / "kd.yaml")
    teachers = tmp_path / "teachers"
    assert main(["train-teacher", str(teacher_yaml), "--run-dir", str(teachers), "--subsets", "per-site",
                 "--data-root", str(table), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "BMC/bundle" in out and "RUNMC/bundle" in out
    listing = json.loads((teachers / "teachers.json").read_text())
    assert [t["name"] for t in listing["teachers"]] == SITES
    for record in listing["teachers"]:
        assert all(c.startswith(record["name"] + "/") for c in record["train_cases"] + record["val_cases"])
        assert load_bundle(teachers / record["bundle"]).meta.provenance["training_subset"] == f"site {record['name']}"
    test_ids = {c.case_id for c in test}
    assert not test_ids & {c for t in listing["teachers"] for c in t["train_cases"] + t["val_cases"]}

    run = tmp_path / "kd"
    assert main(["distill", str(student_yaml), "--run-dir", str(run), "--teachers", str(teachers),
                 "--data-root", str(table), "--quiet"]) == 0
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert list(rows[0]) == ["epoch", "loss", "dice", "lovasz", "kl", "feature", "weight_t0", "weight_t1",
                             "reliability_t0", "reliability_t1", "val_dice", "lr", "seconds"]
    assert all(abs(float(r["weight_t0"]) + float(r["weight_t1"]) - 1) < 1e-5 for r in rows)
    info = json.loads((run / "run.json").read_text())
    assert [t["training_subset"] for t in info["teachers"]] == ["site BMC", "site RUNMC"]
    assert info["tensorboard"]["enabled"] or "tensorboard" in info["tensorboard"]["reason"]
    assert info["adapter_parameters"] > 0 and info["distributed"]["world_size"] == 1
    assert info["method"]["name"] == "multi_teacher_adaptive" and info["method"]["options"]["tau"] == 0.1

    bundle_dir = tmp_path / "bundle"
    assert main(["export", str(run), str(bundle_dir)]) == 0
    bundle = load_bundle(bundle_dir)
    prov = bundle.meta.provenance
    assert prov["method"].startswith(
        "distiller 'multi_teacher_adaptive' (knowledge distillation); loss 1*dice + 1*lovasz + 1*kl + 1*feature; "
        "temperature=2, feature_layers=all, feature_normalize=none, tau=0.1, confidence_weight=0.2, reliability=held_out"
    )
    assert prov["distillation"]["weights"] == {"dice": 1.0, "lovasz": 1.0, "kl": 1.0, "feature": 1.0}
    assert [t["name"] for t in prov["teachers"]] == ["tiny-teacher-BMC", "tiny-teacher-RUNMC"]
    assert all(t["version"] == "0.0.1" and t["training_subset"].startswith("site ") and "validation_dice" in t
               for t in prov["teachers"])
    student_keys = set(bundle.build_network().state_dict())
    assert set(bundle.load_state_dict()) == student_keys  # the student only: no adapter, no teacher
    capsys.readouterr()

    try:
        import training.evaluate  # noqa: F401
    except ImportError:
        pass
    else:
        if index is not None:
            ev = tmp_path / "eval"
            assert main(["evaluate", "--index", str(index), "--split", "test", "--model", str(bundle_dir),
                         "--model", str(teachers / "BMC" / "bundle"), "--out", str(ev), "--device", "cpu",
                         "--quiet"]) == 0
            summary = json.loads((ev / "summary.json").read_text())
            assert summary["cases"] == 2 and len(summary["models"]) == 2
            capsys.readouterr()

    mask = tmp_path / "mask.nii.gz"
    assert main(["segment", str(test[0].image), str(mask), "--model", str(bundle_dir), "--device", "cpu"]) == 0
    assert mask.is_file()


def test_train_teacher_checks(data_root, tmp_path, capsys):
    from training.cli import main
    from training.train_teacher import parse_subsets, plan_subsets
    from training.config import config_from_dict

    teacher_yaml = write_yaml(teacher_dict(data_root), tmp_path / "teacher.yaml")
    assert main(["train-teacher", str(teacher_yaml), "--run-dir", str(tmp_path / "t"), "--subsets", "sites"]) == 7
    assert capsys.readouterr().err.strip() == (
        "prostatekd train-teacher: error: --subsets must be all, per-site or random:K (K >= 2), got 'sites'"
    )
    assert parse_subsets("random:3") == ("random", 3)
    config = config_from_dict(teacher_dict(data_root), "teacher.yaml")
    assert [s.name for s in plan_subsets(config, "all")] == ["all"]
    assert [s.data for s in plan_subsets(config, "per-site")] == [{"sites": ["BMC"]}, {"sites": ["RUNMC"]}]
    from training.cases import random_subset
    from ProstateKDLib.datasets import index_cases

    cases = index_cases(data_root)
    parts = [random_subset(cases, i, 3, seed=0) for i in range(3)]
    assert sorted(c.case_id for p in parts for c in p) == sorted(c.case_id for c in cases)
    assert sorted(len(p) for p in parts) == [2, 3, 3]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["train-teacher", str(teacher_yaml), "--run-dir", str(tmp_path / "busy")]) == 4
    assert "is not empty; use --resume to complete it" in capsys.readouterr().err
    kd = adaptive_dict(data_root)
    kd["teachers"] = [str(tmp_path / "a"), str(tmp_path / "b")]
    bad = write_yaml(kd, tmp_path / "kd_as_teacher.yaml")
    assert main(["train-teacher", str(bad), "--run-dir", str(tmp_path / "t2")]) == 7
    assert "key 'teachers' must be empty for a teacher run" in capsys.readouterr().err


def test_random_teachers_in_parallel_processes(data_root, tmp_path):
    """``random:2`` with ``--jobs 2``: two subprocess runs, disjoint case sets, both exported."""
    from training.config import config_from_dict
    from training.train_teacher import train_teachers

    config = config_from_dict(teacher_dict(data_root, **{"train.epochs": 1, "train.num_threads": 1}), "t.yaml")
    listing = train_teachers(config, tmp_path / "random", subsets="random:2", jobs=2, progress=False)
    names = [t["name"] for t in listing["teachers"]]
    assert names == ["subset1of2", "subset2of2"]
    a, b = (set(t["train_cases"] + t["val_cases"]) for t in listing["teachers"])
    assert a and b and not a & b and len(a | b) == 8
    assert all((tmp_path / "random" / n / "bundle" / "model.json").is_file() for n in names)
    assert (tmp_path / "random" / "logs" / "subset1of2.log").is_file()
    again = train_teachers(config, tmp_path / "random", subsets="random:2", jobs=2, resume=True, progress=False)
    assert again == listing  # finished teachers are kept


# ------------------------------------------------------------------ exact resume with adapters
def test_resume_with_adapters_equals_uninterrupted_run(data_root, tmp_path, monkeypatch, model_json):
    from conftest import make_bundle
    from training import checkpoint
    from training.config import config_from_dict
    from training.train import train

    teacher = copy.deepcopy(model_json)
    teacher["input"].update(spacing=[4.0, 4.0, 6.0], patch_size=[32, 32, 16])
    make_bundle(tmp_path / "teacher", teacher, seed=5)
    data = smoke_dict(data_root, **{
        "train.epochs": 3, "model.kwargs.dropout": 0.2, "data.cases": 4,
        "distiller": {"name": "seed_kd", "weights": {"dice": 1, "lovasz": 1, "kl": 1, "feature": 1}},
    })
    data["teachers"] = [str(tmp_path / "teacher")]
    config = config_from_dict(data, "kd.yaml")
    full = train(config, tmp_path / "full", progress=False)

    real_save = checkpoint.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == checkpoint.LAST:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", progress=False)
    monkeypatch.undo()
    torch.manual_seed(99)
    np.random.seed(3)
    train(config, tmp_path / "stopped", resume=True, progress=False)
    a = checkpoint.load_checkpoint(full / checkpoint.LAST)
    b = checkpoint.load_checkpoint(tmp_path / "stopped" / checkpoint.LAST)
    assert a["epoch"] == b["epoch"] == 3
    assert a["distiller"] and set(a["distiller"]) == set(b["distiller"])
    for part in ("model", "distiller"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    # the teacher never entered the optimizer: its state has one entry per student/adapter parameter
    n_trainable = len(a["model"]) - sum(1 for k in a["model"] if "running" in k or "num_batches" in k)
    assert len(a["optimizer"]["state"]) <= n_trainable + len(a["distiller"])


def test_distill_refuses_a_teacher_on_another_grid(data_root, tmp_path, capsys, model_json):
    from conftest import make_bundle
    from training.cli import main

    make_bundle(tmp_path / "teacher", model_json)  # 1 x 1 x 3 mm; the student config uses 4 x 4 x 6 mm
    kd = smoke_dict(data_root, **{"distiller": {"name": "logit_kd"}})
    config = write_yaml(kd, tmp_path / "kd.yaml")
    code = main(["distill", str(config), "--run-dir", str(tmp_path / "run"), "--teachers", str(tmp_path / "teacher")])
    assert code == 7
    assert capsys.readouterr().err.strip() == (
        f"prostatekd distill: error: config kd.yaml: key 'preprocessing.spacing' is [4.0, 4.0, 6.0] but teacher "
        f"'tiny-test-model' ({tmp_path / 'teacher'}) was trained with [1.0, 1.0, 3.0]; teacher and student must "
        "share orientation, spacing and normalization for voxel-wise distillation"
    )
    assert main(["distill", str(config), "--run-dir", str(tmp_path / "run2")]) == 7
    assert "key 'teachers' lists 0 teachers but distiller 'logit_kd' needs at least 1 teacher" in capsys.readouterr().err


# ------------------------------------------------------------------ TensorBoard
def test_tensorboard_scalars_when_available(data_root, tmp_path, monkeypatch):
    """With ``torch.utils.tensorboard`` importable every log column is also a scalar; without it run.json says why."""
    import types

    from training.config import config_from_dict
    from training.train import train

    calls: list[tuple[str, float, int]] = []

    class FakeWriter:
        def __init__(self, logdir: str) -> None:
            self.logdir = logdir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, value, step))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    config = config_from_dict(smoke_dict(data_root, **{"train.epochs": 1, "data.cases": 3}), "smoke.yaml")
    run = train(config, tmp_path / "run", progress=False)
    assert json.loads((run / "run.json").read_text())["tensorboard"] == {"enabled": True, "logdir": "tensorboard"}
    assert {tag for tag, _, _ in calls} == {"train/loss", "train/dice", "train/ce", "train/lr", "train/seconds",
                                           "val/dice"}
    assert {step for _, _, step in calls} == {1}
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails like a missing package
    run = train(config, tmp_path / "run2", progress=False)
    info = json.loads((run / "run.json").read_text())["tensorboard"]
    assert info["enabled"] is False and info["reason"].startswith("torch.utils.tensorboard unavailable")


# ------------------------------------------------------------------ torchrun
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_cpu_processes(data_root, tmp_path, model_json):
    """``torchrun --nproc_per_node 2`` trains a KD student with DDP (gloo) and no code change."""
    from conftest import make_bundle

    teacher = copy.deepcopy(model_json)
    teacher["input"].update(spacing=[4.0, 4.0, 6.0], patch_size=[32, 32, 16])
    make_bundle(tmp_path / "teacher", teacher, seed=5)
    config = write_yaml(smoke_dict(data_root, **{"train.epochs": 1, "train.num_threads": 1,
                                                 "distiller": {"name": "seed_kd"}}), tmp_path / "kd.yaml")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000), "-m",
           "training.cli", "distill", str(config), "--run-dir", str(tmp_path / "run"), "--teachers",
           str(tmp_path / "teacher"), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run finished") == 1  # rank 0 only
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["distributed"] == {"world_size": 2, "backend": "gloo"}
    last = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["sampler_ranks"]) == 2 and last["distiller"]
    # 8 cases at val_fraction 0.34 -> 5 training volumes x 1 patch = 5 slots, padded to 6: 3 per rank
    assert last["step"] == 2  # batches of 2 per rank: ceil(3 / 2)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != "tensorboard") == [
        "checkpoint_best.pt", "checkpoint_last.pt", "config.yaml", "log.csv", "run.json"]


# ------------------------------------------------------------------ the comparison recipe
def test_compare_recipe_tiny(tmp_path, capsys):
    """``compare_kd.py --scale tiny``: every teacher and student trained, evaluated and reported."""
    from training.recipes.compare_kd import METHODS, main

    out = tmp_path / "compare"
    assert main(["--out", str(out), "--scale", "tiny", "--quiet", "--seeds", "1"]) == 0
    assert "| multi_teacher_adaptive | student | per-site teachers |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    names = [m["model"] for m in results["models"]]
    assert names == ["teacher_BMC", "teacher_RUNMC", "teacher_full", "assistant_1", "assistant_2", *METHODS]
    assert "synthetic phantoms" in results["meta"]["note"]
    students = [m for m in results["models"] if m["role"] == "student"]
    assert len({m["parameters"] for m in students}) == 1  # the same student architecture for every method
    assert all(m["gflops_320x320x24"] > 0 and m["cpu_latency_s"] > 0 and 0 <= m["dice_mean"] <= 1
               for m in results["models"])
    assert len(results["per_case"]) == 15 * 2  # 15 models x 2 held-out test cases
    rows = {m["model"]: m for m in results["models"]}
    assistants = rows["assistant_1"]["train_s"] + rows["assistant_2"]["train_s"]
    for method in ("ta_ensemble", "curriculum_experts"):  # the assistants' training counts in the total
        assert rows[method]["train_total_s"] == pytest.approx(rows[method]["train_s"] + assistants)
    assert rows["self_distill"]["train_total_s"] == pytest.approx(rows["self_distill"]["train_s"] + rows["none"]["train_s"])
    assert rows["seed_kd"]["train_total_s"] == rows["seed_kd"]["train_s"]
    assert rows["assistant_1"]["parameters"] < rows["assistant_2"]["parameters"] < rows["teacher_full"]["parameters"]
    assert rows["assistant_1"]["parameters"] > rows["none"]["parameters"]
    teachers_of = lambda m: [t["path"] for t in json.loads(  # noqa: E731
        (out / "students" / m / "bundle" / "model.json").read_text())["provenance"]["teachers"]]
    assert teachers_of("self_distill") == [str(out / "students" / "none" / "bundle")]
    assert teachers_of("ta_ensemble") == [str(out / "students" / f"assistant_{i}" / "bundle") for i in (1, 2)]
    assert len(teachers_of("curriculum_experts")) == 3
    assert (out / "ctkd_temperature.png").stat().st_size > 0
    for name in ("results.md", "results.csv", "dice_per_method.png", "dice_vs_latency.png"):
        assert (out / name).stat().st_size > 0
    assert "measured on synthetic phantoms" in (out / "results.md").read_text(encoding="utf-8")
    budgets = {json.loads((out / "students" / m / "run.json").read_text())["parameters"] for m in METHODS}
    assert len(budgets) == 1
    epochs = {len(list(csv.DictReader(open(out / "students" / m / "log.csv")))) for m in METHODS}
    assert epochs == {2}  # the same epoch budget


def test_compare_recipe_methods_subset(tmp_path):
    """``--methods none,logit_kd --seeds 2``: only the full-data teacher; each student twice; the seed table."""
    from training.recipes.compare_kd import main

    out = tmp_path / "compare"
    assert main(["--out", str(out), "--scale", "tiny", "--quiet", "--methods", "none,logit_kd", "--seeds", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["model"] for m in results["models"]] == ["teacher_full", "none", "none@seed1", "logit_kd",
                                                       "logit_kd@seed1"]
    seeds = json.loads((out / "seeds.json").read_text())
    assert seeds["baseline"] == "none" and [m["method"] for m in seeds["methods"]] == ["none", "logit_kd"]
    assert all(m["seeds"] == 2 for m in seeds["methods"])
    diff = seeds["methods"][1]["diff"]
    assert diff["n"] == 2 and diff["low"] <= diff["mean"] <= diff["high"]
    assert "## Students over seeds" in (out / "results.md").read_text(encoding="utf-8")
    assert json.loads((out / "students" / "logit_kd@seed1" / "run.json").read_text())["seeds"]["train"] == 1
    assert not (out / "teachers_site").exists() and not (out / "students" / "seed_kd").exists()
    provenance = json.loads((out / "students" / "logit_kd" / "bundle" / "model.json").read_text())["provenance"]
    assert [t["path"] for t in provenance["teachers"]] == [str(out / "teacher_full" / "all" / "bundle")]


def test_compare_recipe_rejects_unknown_method(tmp_path, capsys):
    from training.recipes.compare_kd import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--scale", "tiny", "--methods", "none,fancy_kd"])
    assert exc.value.code == 2
    assert "unknown fancy_kd" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_compare_recipe_default_scale_exports_phantom_names():
    """The phantom ``default`` scale never exports under the bundled (real-data) names.

    The bundled student and teacher are trained on real PROMISE12 cases (``student_real.yaml``,
    ``teacher_strong_real.yaml``); the phantom recipe's student keeps the bundled student's network and patch.
    """
    from ProstateKDLib.bundle import resolve_model
    from training.recipes.compare_kd import SCALES, base_config

    scale = SCALES["default"]
    student = base_config(Path("pool.csv"), scale, "student", 2)
    teacher = base_config(Path("pool.csv"), scale, "teacher", 2)
    assert student["export"]["name"] == "prostatekd-phantom-student"
    assert teacher["export"]["name"] == "prostatekd-phantom-teacher"
    assert "phantom" in student["export"]["training_data"].lower()
    bundled = resolve_model("prostatekd-student").meta
    assert list(bundled.patch_size) == student["preprocessing"]["patch_size"]
    assert bundled.network_kwargs["channels"] == student["model"]["kwargs"]["channels"]
    for name in ("prostatekd-student", "prostatekd-teacher"):
        assert "PROMISE12" in resolve_model(name).meta.provenance["training_data"], name