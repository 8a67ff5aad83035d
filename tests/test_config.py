"""utils/config.py: every setting of a run (TrainConfig, key=value overrides, the fingerprint) and the recipe table, one
home for the kit's settings, named (not restated) by the notebook and the benchmarks."""
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

from models import ARCHITECTURES
from utils.config import RECIPES, SHIPPED, TrainConfig, parse_overrides, recipe_config, recipe_settings

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


def test_overrides_are_typed_and_checked():
    cfg = parse_overrides(["batch_size=32", "lr=0.5", "compile=true", "loss=vicreg"])
    assert (cfg.batch_size, cfg.lr, cfg.compile, cfg.loss) == (32, 0.5, True, "vicreg")
    with pytest.raises(ValueError, match="Did you mean batch_size"):
        parse_overrides(["batchsize=32"])
    with pytest.raises(ValueError, match="batch_size expects int, got 'big'"):
        parse_overrides(["batch_size=big"])
    with pytest.raises(ValueError, match="loss must be one of"):
        parse_overrides(["loss=byol"])
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["lr"])


def test_new_settings_are_validated_with_the_setting_named():
    for settings, message in [
        (dict(loss="vicreg", decoupled=True), "decoupled=True is an option of loss='ntxent'"),
        (dict(ema_momentum=1.0), r"ema_momentum must be in \[0, 1\)"),
        (dict(ema_momentum=0.99, ema_momentum_end=0.9), "ema_momentum_end must be in"),
        (dict(loss="dino"), "loss='dino' needs a teacher.*ema_momentum > 0"),
        (dict(loss="dino", ema_momentum=0.99, dino_prototypes=1), "dino_prototypes must be an int >= 2"),
        (dict(dino_teacher_temperature=0.2), "dino_teacher_temperature .* must be below dino_student_temperature"),
        (dict(dino_student_temperature=-1.0), "dino_student_temperature must be a finite number > 0"),
        (dict(dino_center_momentum=1.5), r"dino_center_momentum must be in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**settings)
    with pytest.raises(ValueError, match="loss must be one of .*dino"):
        TrainConfig(loss="byol")


def test_new_settings_and_code_change_the_fingerprint():
    base = TrainConfig()
    changed = [TrainConfig(decoupled=True), TrainConfig(ema_momentum=0.996), TrainConfig(ema_momentum=0.996,
               ema_momentum_end=0.996), TrainConfig(dino_center_momentum=0.8), TrainConfig(local_size=48)]
    prints = {cfg.fingerprint("data") for cfg in changed} | {base.fingerprint("data")}
    assert len(prints) == len(changed) + 1
    assert base.fingerprint("data", "code") != base.fingerprint("data") == base.fingerprint("data", "")
