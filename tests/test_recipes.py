"""The recipe table: one home for the kit's settings, named (not restated) by the notebook and the benchmarks."""
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

from models import ARCHITECTURES
from utils.recipes import RECIPES, SHIPPED, SUITES, recipe_config, recipe_settings, suite
from utils.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_train_config_defaults_are_the_shipped_recipe():
    """`TrainConfig()` and `python -m utils.train` train what was shipped: every setting the recipe names has
    its default value, and the recipe's config equals the defaults in every field."""
    defaults = TrainConfig()
    for key, value in SHIPPED.items():
        assert getattr(defaults, key) == value, key
    assert recipe_config("shipped") == defaults
    assert RECIPES["ntxent_s2_multicrop"] == SHIPPED           # the name its measurements were recorded under


def test_every_recipe_is_a_valid_config():
    for name in RECIPES:
        cfg = recipe_config(name)
        assert cfg.arch in ARCHITECTURES, name
    # Recipes measured before multi-crop became the default state their two views explicitly.
    assert recipe_config("student_baseline").local_views == 0
    assert (recipe_config("dino").loss, recipe_config("dino").ema_momentum) == ("dino", 0.99)
    assert recipe_config("shipped_dcl").decoupled and recipe_config("shipped_ema").ema_momentum == 0.996


def test_settings_and_overrides_go_on_top_in_that_order():
    cfg = recipe_config("student_baseline", ["lr=1e-3"], lr=5e-3, epochs=3)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.temperature) == (1e-3, 3, 1024, 0.1)
    settings = recipe_settings("shipped")
    settings["lr"] = 1.0                                       # a copy: the table itself does not change
    assert RECIPES["shipped"]["lr"] == 2e-3
    with pytest.raises(ValueError, match="unknown recipe 'nope'; known recipes: .*shipped"):
        recipe_config("nope")
    with pytest.raises(ValueError, match="Did you mean batch_size"):
        recipe_config("shipped", ["batchsize=3"])


def test_suites_name_known_recipes_and_fit_their_calls():
    for name, chosen in SUITES.items():
        assert suite(name).recipes and all(r in RECIPES for r in chosen.recipes), name
    # The prepared device call (benchmarks/README.md): training alone must leave room in a 10-minute call.
    one_call = SUITES["recipes-1min"]
    assert len(one_call.recipes) * one_call.budget_min <= 6
    assert one_call.recipes[0] == "shipped"                     # every suite compares against the shipped recipe
    with pytest.raises(ValueError, match="unknown suite"):
        suite("recipes-1h")


def test_notebook_and_benchmarks_name_the_recipes_instead_of_restating_them():
    builder = (ROOT / "tools" / "build_notebook.py").read_text()
    assert 'recipe_config("shipped"' in builder and 'recipe_config("short"' in builder
    assert "TrainConfig(arch=" not in builder
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    quality = importlib.import_module("quality")
    assert quality.RECIPES is RECIPES


def test_short_profile_is_a_cpu_run():
    cfg = recipe_config("short")
    # A CPU run: the tiny network for a fixed number of epochs (16 on the embedded data: 368 steps of 128
    # images), never a time budget.
    assert cfg.arch == "tiny" and cfg.time_budget_min == 0 and cfg.epochs <= 16
    assert dataclasses.replace(cfg, data_dir="x").fingerprint() == cfg.fingerprint()   # data_dir: not a result
