"""The speed and budget plan a run prints early (utils/budget.py): its arithmetic, the reference curve read from
the committed results, and the plan of a real short run."""
import dataclasses
import json

import pytest

from utils import budget
from utils.config import recipe_config
from utils.provenance import RESULTS_DIR

CURVE = [{"images": 665_000, "epochs": 38, "n_train": 17_500, "ood_knn": 18.2, "ood_linear": 27.6, "device": "GPU A",
          "file": "a.json"},
         {"images": 6_450_000, "epochs": 129, "n_train": 50_000, "ood_knn": 35.5, "ood_linear": 40.5,
          "device": "GPU A", "file": "b.json"}]


def test_the_plan_comes_after_a_minute_or_a_quarter_of_a_short_budget():
    assert budget.plan_after_s(20 * 60) == 60.0
    assert budget.plan_after_s(30) == 7.5
    assert budget.plan_after_s(0) == 60.0            # an epochs-run: after a minute too


def test_the_plan_says_what_the_budget_buys_and_what_reaches_the_reference():
    cfg = recipe_config("shipped", time_budget_min=20)
    lines = budget.plan_lines(2000.0, 100_000, cfg, done_s=60, curve=CURVE)
    text = "\n".join(lines)
    assert "2,000 images/s, 1.20 epochs/min of these 100,000 training images" in lines[0]
    assert "The 20-minute budget buys about 24.0 epochs (2.40 M images seen)" in lines[1]
    # 665,000 images at 2,000 images/s: 5.5 minutes; 6.45 M: 53.75 minutes
    assert "0.67 M images seen (38 epochs of 17,500, GPU A): OOD k-NN 18.2%; at this speed 6 min" in text
    assert "6.45 M images seen (129 epochs of 50,000, GPU A): OOD k-NN 35.5%; at this speed 54 min" in text
    assert "TRAIN_MINUTES" in lines[-1] and "resumes" in lines[-1]
    # the batch is fitted to the GPU: a smaller one is still the shipped recipe
    assert budget.is_shipped_recipe(dataclasses.replace(cfg, batch_size=256, lr=1e-3))


def test_an_epochs_run_and_another_recipe_get_no_reference():
    lines = budget.plan_lines(500.0, 3_000, recipe_config("short"), done_s=30, curve=CURVE)
    assert "The 16 epochs take about 1.6 minutes of training." in lines[1]
    assert lines[-1].startswith("No reference curve for this recipe")


def test_the_reference_curve_is_the_committed_gpu_runs_of_the_shipped_recipe():
    curve = budget.reference_curve()
    assert [p["epochs"] for p in curve] == [38, 54, 129]
    for point in curve:
        record = json.loads((RESULTS_DIR / point["file"]).read_text())
        assert record["recipe"] in budget.REFERENCE_RECIPES and "cpu" not in record["device"].lower()
        assert point["images"] == record["epochs_reached"] * record["data"]["n_train"]
        assert point["ood_knn"] == pytest.approx(record["accuracies_percent"]["ood_knn"]["mean"])


def test_a_run_prints_its_plan(tiny_data_dir, tmp_path, capsys, monkeypatch):
    """A short budgeted run prints the plan once, from its own measured speed."""
    from utils.train import train
    monkeypatch.setattr(budget, "PLAN_AFTER_S", 0.0)     # the plan after the first step
    cfg = recipe_config("short", time_budget_min=0.02, local_views=0, batch_size=64, eval_every=0,
                        checkpoint_every=0, data_dir=str(tiny_data_dir), out_dir=str(tmp_path), progress=False)
    train(cfg)
    out = capsys.readouterr().out
    assert out.count("Speed after ") == 1 and "epochs/min of these 320 training images" in out
    assert "budget buys about" in out and "No reference curve for this recipe" in out
