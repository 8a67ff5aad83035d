"""The GPU benchmarks run on the CPU in a tiny configuration, so they cannot rot between GPU sessions."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils.synthetic import DataSpec, write_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
import quality  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_script(name, *args):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def only_json(folder: Path, pattern: str) -> dict:
    files = sorted(folder.glob(pattern))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def assert_provenance(record):
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["device"] and record["torch"] and record["date"]


def test_speed_tiny_writes_every_figure(tmp_path):
    stdout = run_script("speed.py", "--tiny", "--out", tmp_path)
    record = only_json(tmp_path, "speed-tiny-*.json")
    assert_provenance(record)
    assert record["config"]["arch"] == "tiny" and record["config"]["flops_per_step"] > 0
    rows = {r["variant"]: r for r in record["variants"]}
    assert set(rows) == {"course_pipeline", "engine", "ceiling"}          # compile is CUDA-only
    assert "engine_compiled" in record["skipped"]
    for row in rows.values():
        assert row["views_per_s"] > 0 and math.isfinite(row["epoch_s"]) and len(row["repeat_s"]) == 2
        assert row["epoch_s"] == pytest.approx(2 * record["config"]["images"] / row["views_per_s"])
    assert rows["engine"]["model_tflops_per_s"] > 0 and rows["course_pipeline"]["model_tflops_per_s"] is None
    evaluation = record["evaluation"]
    assert evaluation["fast"]["seconds"] > 0 and evaluation["exact"]["seconds"] > 0
    assert 0 <= evaluation["max_abs_difference_points"] <= 1.0          # fast probes agree with scikit-learn
    targets = record["targets"]
    assert set(targets) == {"engine_vs_course_pipeline", "engine_vs_ceiling", "engine_mfu_h100",
                            "fast_eval_seconds", "fast_vs_exact_points"}
    assert targets["engine_mfu_h100"]["met"] is None                   # not measured on a CPU: never invented
    assert "not measured" in stdout


def test_quality_tiny_averages_ood_draws(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    spec = DataSpec(id_classes=4, train_per_class=30, val_per_class=10, ood_classes=4, ood_per_class=20)
    write_dataset(data, spec, seed=0, progress=False)
    write_dataset(other, spec, seed=1, progress=False)
    run_script("quality.py", "--tiny", "batch_size=16", "--data-dir", data, "--out", tmp_path, "--ood-files",
               data / "ood.npz", other / "ood.npz")
    record = only_json(tmp_path, "quality-ntxent-tiny-*.json")
    assert_provenance(record)
    assert record["config"]["batch_size"] == 16 and record["config"]["arch"] == "tiny"
    assert record["data"]["n_train"] == 120 and record["epochs_reached"] == 1
    acc = record["accuracies_percent"]
    draws = [d["ood_linear"] for d in acc["ood_draws"]]
    assert len(draws) == 2 and acc["ood_linear"]["mean"] == pytest.approx(sum(draws) / 2)
    assert all(0 <= acc[k] <= 100 for k in ("id_knn", "id_linear"))


def test_recipes_are_valid_configs_and_overrides_apply():
    from models import ARCHITECTURES
    for name in quality.RECIPES:                               # utils/config.py's table (tests/test_config.py)
        assert quality.recipe_config(name, []).arch in ARCHITECTURES
    assert quality.recipe_config("student_baseline", []).arch == "resnet18"
    cfg = quality.recipe_config("student_baseline", ["lr=1e-3"])
    assert (cfg.lr, cfg.batch_size, cfg.temperature) == (1e-3, 1024, 0.1)
    with pytest.raises(ValueError, match="unknown recipe"):
        quality.recipe_config("nope", [])


def test_suites_name_known_recipes_and_compare_with_the_shipped_one():
    for name, chosen in quality.SUITES.items():
        assert quality.suite(name).recipes and all(r in quality.RECIPES for r in chosen.recipes), name
        assert chosen.recipes[0] == "shipped"                  # every suite compares against the shipped recipe
    with pytest.raises(ValueError, match="unknown suite"):
        quality.suite("recipes-1h")


def test_quality_suite_tiny_writes_every_recipe_then_trains_the_winner(tmp_path):
    """A suite in the tiny CPU configuration (two of its recipes, 2 views to keep it cheap): one results file
    with a record per recipe (peak GPU memory "not measured" on the CPU), the winner by mean OOD accuracy, and a
    longer run of the winner."""
    data = tmp_path / "data"
    write_dataset(data, DataSpec(id_classes=4, train_per_class=30, val_per_class=10, ood_classes=4, ood_per_class=20),
                  seed=0, progress=False)
    stdout = run_script("quality.py", "--tiny", "--suite", "recipes-1min", "--only", "shipped", "dino", "--data-dir",
                        data, "--out", tmp_path, "--winner-until-min", "1", "--export", tmp_path / "winner.safetensors",
                        "batch_size=16", "local_views=0")
    record = only_json(tmp_path, "quality-suite-recipes-1min-tiny-*.json")
    assert_provenance(record)
    assert [r["recipe"] for r in record["recipes"]] == ["shipped", "dino"]
    for r in record["recipes"]:
        assert r["config"]["arch"] == "tiny" and r["config"]["local_views"] == 0 and r["epochs_reached"] == 1
        assert r["peak_gpu_memory_gib"] is None and r["recipe_wall_s"] > 0        # null in JSON: not measured
        assert 0 <= r["accuracies_percent"]["ood_linear"]["mean"] <= 100
    assert record["recipes"][1]["config"]["loss"] == "dino"
    scores = {r["recipe"]: quality.ood_score(r) for r in record["recipes"]}
    assert record["winner"] == max(scores, key=scores.get)
    assert record["winner_run"]["recipe"] == record["winner"] and record["winner_run"]["epochs_reached"] == 2
    assert (tmp_path / "winner.safetensors").is_file()
    assert "not measured" in stdout and f"winner: {record['winner']}" in stdout


def test_mfu_and_peaks():
    assert common.mfu(1e12, 100.0, 1e15) == pytest.approx(0.1)
    assert common.mfu(1e12, 100.0, None) is None
    assert common.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert common.median([3.0, 1.0, 2.0]) == 2.0


def test_speed_keeps_other_figures_when_one_variant_fails(tmp_path):
    run_script("speed.py", "--tiny", "--out", tmp_path, "--variants", "ceiling", "--skip-eval", "--tag", "t",
               "--ceiling-archs", "small", "no_such_arch")
    record = only_json(tmp_path, "speed-tiny-*.json")
    assert [r["variant"] for r in record["variants"]] == ["ceiling", "ceiling[small]"]
    tiny, small = record["variants"]
    assert small["arch"] == "small" and small["model_gflops_per_step"] > tiny["model_gflops_per_step"] > 0
    assert record["skipped"]["ceiling[no_such_arch]"].startswith("failed: ValueError: unknown arch 'no_such_arch'")


def test_profile_tiny_groups_the_step_time(tmp_path):
    stdout = run_script("profile_step.py", "--tiny", "--out", tmp_path)
    record = only_json(tmp_path, "profile-tiny-*.json")
    assert_provenance(record)
    assert record["device_ms_per_step"] > 0 and record["top_ops"]
    assert sum(record["group_share"].values()) == pytest.approx(1.0)
    assert record["group_share"].get("convolution", 0) > 0            # a conv net spends time in convolutions
    assert "groups:" in stdout


def test_suite_time_records_each_module_of_a_selection(tmp_path):
    stdout = run_script("suite_time.py", "--out", tmp_path, "--", "tests/test_provenance.py", "tests/test_progress.py")
    record = only_json(tmp_path, "suite-time-selection-*.json")
    assert_provenance(record)
    assert record["pytest_exit_status"] == 0 and record["pytest_args"] == ["tests/test_provenance.py",
                                                                            "tests/test_progress.py"]
    assert set(record["per_module_s"]) == {"tests/test_provenance.py", "tests/test_progress.py"}
    assert record["tests"] == len(record["slowest_tests_s"]) > 2          # fewer tests than SLOWEST: all listed
    assert record["wall_s"] >= max(record["per_module_s"].values()) - 0.5   # modules run side by side (-n auto)
    assert "-n auto" in record["pytest_ini_addopts"]
    assert record["target_met"] is None and "not measured by a selection" in stdout   # a selection is no verdict


def test_suite_time_target_needs_the_whole_green_suite():
    import suite_time
    rows = [{"module": "tests/test_a.py", "test": "t1", "seconds": 2.0},
            {"module": "tests/test_a.py", "test": "t2", "seconds": 3.0},
            {"module": "nb.ipynb", "test": "Cell 0", "seconds": 4.0}]
    whole = suite_time.summarise(rows, wall_s=12.0, exit_status=0, pytest_args=[])
    assert whole["target_met"] is True and whole["per_module_s"] == {"tests/test_a.py": 5.0, "nb.ipynb": 4.0}
    assert [r["test"] for r in whole["slowest_tests_s"]] == ["Cell 0", "t2", "t1"]
    assert suite_time.summarise(rows, wall_s=12.0, exit_status=1, pytest_args=[])["target_met"] is False
    assert suite_time.summarise(rows, wall_s=suite_time.TARGET_S + 1, exit_status=0, pytest_args=[])[
        "target_met"] is False
