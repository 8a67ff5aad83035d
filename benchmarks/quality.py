"""Accuracy on unseen classes: train a named recipe for a fixed wall-clock budget, then the grader's protocol.

The grader's protocol, exactly (scikit-learn, utils.probes): raw get_features of ToTensor() images, 5-NN and
LogisticRegression(max_iter=1000). ID: fit on train, score on val. OOD: the course's RandomState(42) 80/20
split of each OOD file. OOD figures from one draw are noisy: pass several OOD files (tiny64's
`build.py course --ood-draw K` writes draw K) and the results give the mean and spread over them.

    python benchmarks/quality.py --recipe ntxent --data-dir /tmp/tiny64 --ood-files /tmp/ood0.npz /tmp/ood1.npz ...
    python benchmarks/quality.py --recipe vicreg --budget-min 20 lr=3e-3       # key=value overrides the recipe
    python benchmarks/quality.py --tiny                                        # CPU smoke run, used by the tests
    python benchmarks/quality.py --suite recipes-1min --fast-eval --data-dir /tmp/t64 --winner-until-min 9

Recipes live in utils/config.py (RECIPES), suites below. A suite trains its recipes back to back for the same
budget each, evaluates each under the same protocol, records each one's peak GPU memory, and rewrites its results
file after every recipe (a run cut short keeps what it measured); with --winner-until-min it then trains the best
recipe (mean of OOD k-NN and OOD linear) for as long as fits before that many minutes since the start.

Writes quality-<recipe>-<device>-<date>.json (quality-suite-<suite>-<device>-<date>.json for a suite) under --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import time
from pathlib import Path

import torch

import common
from models import ImageEncoder
from utils import probes
from utils.checkpoint import load_weights_strict, weights_arch
from utils.config import RECIPES, recipe_config
from utils.data import data_dir_help, load_npz, load_splits, prepare_data, resolve_data_dir
from utils.device import pick_device
from utils.provenance import provenance
from utils.synthetic import DataSpec
from utils.train import seed_all, train


@dataclasses.dataclass(frozen=True)
class Suite:
    """Recipes trained back to back for the same wall-clock budget each, so that they compare per GPU-minute."""
    recipes: tuple[str, ...]
    budget_min: float
    note: str = ""


CANDIDATES = ("shipped", "shipped_dcl", "shipped_ema", "dino", "combo_guess")
SUITES: dict[str, Suite] = {
    "recipes-1min": Suite(CANDIDATES, 1.0, "the shipped recipe and four ideas, 1 minute each"),
    "recipes-2min": Suite(CANDIDATES, 2.0, "the same at 2 minutes each"),
    "local-crops-2min": Suite(("shipped", "shipped_local48"), 2.0, "4 x 32 px against 2 x 48 px local views"),
}


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    unknown = [r for r in SUITES[name].recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"suite {name!r} names unknown recipes {unknown}")
    return SUITES[name]


TINY_SPEC = DataSpec(id_classes=5, train_per_class=40, val_per_class=10, ood_classes=5, ood_per_class=20)
PROTOCOLS = {True: "torch fast probes", False: "scikit-learn, exactly as the grader"}     # by --fast-eval


def mean_and_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def evaluate(model, splits, ood_files: list[Path], fast: bool, device) -> dict:
    """The grader's four numbers (percent), by probes.evaluate_encoder: ID once, OOD per draw plus mean and
    spread over the draws, and the linear probes' lbfgs iterations."""
    oods = [splits["ood"] if path is None else load_npz(path) for path in ood_files]
    protocol, _ = probes.evaluate_encoder(model, splits["train"], splits["val"], oods, fast=fast, device=device)
    result = {"id_knn": protocol.id_knn, "id_linear": protocol.id_linear,
              "ood_draws": [{"file": str(path or ood.path), **draw}
                            for path, ood, draw in zip(ood_files, oods, protocol.ood_draws)],
              "lbfgs_iter": protocol.lbfgs_iter, "converged": protocol.converged}
    for key in ("ood_knn", "ood_linear"):
        result[key] = mean_and_spread([d[key] for d in result["ood_draws"]])
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="ntxent", choices=sorted(RECIPES))
    parser.add_argument("--suite", default=None, choices=sorted(SUITES),
                        help="train every recipe of this suite (SUITES) instead of --recipe")
    parser.add_argument("--only", nargs="+", default=None, metavar="RECIPE",
                        help="suite: only these of its recipes (e.g. those a run cut short did not reach)")
    parser.add_argument("--data-dir", default=None, help=f"course-format folder (train/val/ood.npz; default: "
                        f"{data_dir_help()})")
    parser.add_argument("--ood-files", nargs="*", type=Path, default=None,
                        help="OOD draws to average over (default: the data folder's ood.npz only)")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="training wall-clock budget in minutes, per recipe (default: 20, or the suite's)")
    parser.add_argument("--winner-until-min", type=float, default=0.0, help="suite: then train the best recipe for "
                        "as long as ends (evaluation included) this many minutes after the start; 0 = no winner run")
    parser.add_argument("--fast-eval", action="store_true", help="torch probes instead of scikit-learn")
    parser.add_argument("--export", type=Path, default=None,
                        help="copy the trained final_model.safetensors here (a suite: the winner run's)")
    parser.add_argument("--weights", type=Path, default=None, help="evaluate these weights (arch from their "
                        "metadata) instead of training, e.g. the exact protocol on a CPU for a model trained on a GPU")
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/quality_runs"), help="checkpoints (resume)")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke run: tiny arch, 1 epoch, generated data unless --data-dir is given")
    common.add_out_argument(parser)
    parser.add_argument("overrides", nargs="*", help="TrainConfig settings as key=value (every recipe of a suite)")
    args = parser.parse_args(argv)
    if args.suite and args.weights:
        parser.error("--suite trains its recipes; --weights evaluates saved weights: use one or the other")
    if args.only and not args.suite:
        parser.error("--only selects recipes of a --suite")
    if args.only and (unknown := [r for r in args.only if r not in SUITES[args.suite].recipes]):
        parser.error(f"--only {' '.join(unknown)}: not in suite {args.suite} ({', '.join(SUITES[args.suite].recipes)})")
    return args


@dataclasses.dataclass
class Setup:
    """What every recipe of one invocation shares: data, device, OOD draws, protocol and run settings."""
    splits: dict
    device: torch.device
    ood_files: list
    fast_eval: bool
    tiny: bool
    settings: dict              # TrainConfig settings on top of each recipe (budget, output folder, ...)
    overrides: list[str]        # key=value from the command line, applied last


def run_recipe(name: str, setup: Setup, *, budget_min: float | None = None, weights: Path | None = None,
               export: Path | None = None, extra: dict | None = None) -> dict:
    """Train recipe `name` (or load `weights`), evaluate it under the grader's protocol, and return its record:
    configuration, epochs and steps reached, times, peak GPU memory of the training, accuracies."""
    settings = {**setup.settings, **(extra or {})}
    if budget_min is not None and not setup.tiny:
        settings["time_budget_min"] = budget_min
    cfg = recipe_config(name, setup.overrides, **settings)
    device = setup.device
    seed_all(cfg.seed)
    common.reset_peak_memory(device)
    start = time.perf_counter()
    if weights:         # an ImageEncoder of the architecture the file records, loaded strictly
        model = load_weights_strict(ImageEncoder(weights_arch(weights)), weights).to(device)
        history, trained_from = {"train": []}, str(weights)
        cfg = dataclasses.replace(cfg, arch=model.arch)
    else:
        result = train(cfg, prepare_data(setup.splits, device))
        model, history, trained_from = result.model, result.history, "trained in this run"
        if export:
            shutil.copy(result.weights_path, export)
    wall_s = time.perf_counter() - start
    peak = None if weights else common.peak_memory_gib(device)
    eval_start = time.perf_counter()
    accuracies = evaluate(model.eval(), setup.splits, setup.ood_files, setup.fast_eval, device)
    eval_s = time.perf_counter() - eval_start
    final = history["train"][-1] if history["train"] else {}
    return {
        "recipe": name, "weights": trained_from,
        "budget_min": None if weights else cfg.time_budget_min,
        "epochs_reached": final.get("epoch"), "steps": final.get("step"),
        "train_wall_s": None if weights else wall_s, "eval_s": eval_s,
        "peak_gpu_memory_gib": None if peak is None else round(peak, 2),   # None: not measured (CPU)
        "config": dataclasses.asdict(cfg), "accuracies_percent": accuracies,
    }


def summary_row(record: dict) -> dict:
    if "failed" in record:
        return {"recipe": record["recipe"], **dict.fromkeys(["epochs", "ID k-NN", "ID linear", "OOD k-NN (mean)",
                                                             "OOD linear (mean)", "peak GiB"])}
    acc = record["accuracies_percent"]
    return {"recipe": record["recipe"], "epochs": record["epochs_reached"], "ID k-NN": acc["id_knn"],
            "ID linear": acc["id_linear"], "OOD k-NN (mean)": acc["ood_knn"]["mean"],
            "OOD linear (mean)": acc["ood_linear"]["mean"], "peak GiB": record["peak_gpu_memory_gib"]}


def ood_score(record: dict) -> float:
    """How a suite ranks recipes: the mean of OOD k-NN and OOD linear (means over the draws), what the grade
    rewards. A failed recipe ranks last."""
    if "failed" in record:
        return float("-inf")
    acc = record["accuracies_percent"]
    return (acc["ood_knn"]["mean"] + acc["ood_linear"]["mean"]) / 2


def run_suite(args, setup: Setup, data_record: dict, started: float) -> int:
    """Every recipe of the suite for the same budget, the results file rewritten after each; then, with
    --winner-until-min, the best one for the longest budget that still ends in time."""
    chosen = suite(args.suite)
    budget_min = args.budget_min if args.budget_min is not None else chosen.budget_min
    record = {
        "benchmark": "quality-suite", "suite": args.suite, "note": chosen.note, **provenance(setup.device),
        "data": data_record, "budget_min_per_recipe": None if setup.tiny else budget_min,
        "protocol": PROTOCOLS[setup.fast_eval], "ranking": "mean of OOD k-NN and OOD linear (means over the OOD draws)",
        "recipes": [], "winner": None, "winner_run": None,
    }
    tag = f"{args.suite}-tiny" if setup.tiny else args.suite
    path = common.results_path(args.out, "quality-suite", setup.device, tag)
    for name in [r for r in chosen.recipes if not args.only or r in args.only]:
        print(f"\n=== {args.suite}: {name} ({'1 epoch, tiny' if setup.tiny else f'{budget_min} min'}) ===",
              flush=True)
        recipe_start = time.perf_counter()
        try:
            result = run_recipe(name, setup, budget_min=budget_min)
        except Exception as error:         # one recipe failing must not lose the others' figures
            result = {"recipe": name, "failed": f"{type(error).__name__}: {str(error)[:300]}"}
            print(f"{name} failed: {result['failed']}", flush=True)
        result["recipe_wall_s"] = round(time.perf_counter() - recipe_start, 1)
        record["recipes"].append(result)
        common.write_results(path, record)

    measured = [r for r in record["recipes"] if "failed" not in r]
    if measured:
        record["winner"] = max(measured, key=ood_score)["recipe"]
        record["winner_run"] = winner_run(args, setup, record, started, budget_min)
        common.write_results(path, record)
    rows = [summary_row(r) for r in record["recipes"]]
    if isinstance(record["winner_run"], dict) and "accuracies_percent" in record["winner_run"]:
        rows.append({**summary_row(record["winner_run"]), "recipe": f"{record['winner']} (winner run)"})
    common.print_table(rows)
    print(f"winner: {record['winner']}; wrote {path}")
    return 0


def winner_run(args, setup: Setup, record: dict, started: float, budget_min: float):
    """The best recipe again, for the longest budget that ends --winner-until-min minutes after the start, with
    the same margin for evaluation as the longest recipe of the suite needed beyond its budget. A string says
    why it did not run."""
    if not args.winner_until_min:
        return "not run (no --winner-until-min)"
    if setup.tiny:
        extra, budget = dict(epochs=2), None           # another run than the suite's 1-epoch one
    else:
        overhead_s = max(r["recipe_wall_s"] - budget_min * 60 for r in record["recipes"] if "failed" not in r)
        left_s = args.winner_until_min * 60 - (time.perf_counter() - started)
        budget = round((left_s - 1.25 * overhead_s - 15) / 60, 2)
        if budget < 1.0:
            return f"not run: {max(left_s, 0) / 60:.1f} min left, less than 1 min of training after evaluation"
        extra = {}
    print(f"\n=== winner {record['winner']}: {'2 epochs, tiny' if setup.tiny else f'{budget} min'} ===", flush=True)
    try:
        return run_recipe(record["winner"], setup, budget_min=budget, export=args.export, extra=extra)
    except Exception as error:
        return f"failed: {type(error).__name__}: {str(error)[:300]}"


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.tiny:
        data_dir = common.tiny_dataset(Path(args.data_dir or args.out / "tiny_data"), TINY_SPEC)
        args.runs_dir = args.out / "tiny_runs"
        settings = dict(arch="tiny", batch_size=32, epochs=1, time_budget_min=0.0, eval_every=0,
                        eval_linear_iters=50, progress=False)
    else:
        data_dir = resolve_data_dir(args.data_dir)
        settings = dict(time_budget_min=args.budget_min or 20.0, eval_every=0, progress=True)
    splits = load_splits(data_dir)
    setup = Setup(splits=splits, device=pick_device("auto"), ood_files=args.ood_files or [None],
                  fast_eval=args.fast_eval, tiny=args.tiny,
                  settings={**settings, "data_dir": str(data_dir), "out_dir": str(args.runs_dir)},
                  overrides=list(args.overrides))
    data_record = {"dir": str(data_dir), "kind": "generated (tiny)" if args.tiny else "course format",
                   "n_train": len(splits["train"]), "n_val": len(splits["val"]),
                   "train_classes": len(splits["train"].classes),
                   "ood_files": [str(p) for p in setup.ood_files if p]}
    if args.suite:
        return run_suite(args, setup, data_record, started)

    result = run_recipe(args.recipe, setup, weights=args.weights, export=args.export)
    record = {"benchmark": "quality", **provenance(setup.device), "data": data_record,
              "protocol": PROTOCOLS[args.fast_eval], **result}
    tag = f"{args.recipe}-tiny" if args.tiny else args.recipe
    if args.weights:
        tag = f"{tag}-{'fast' if args.fast_eval else 'exact'}-eval"
    path = common.write_results(common.results_path(args.out, "quality", setup.device, tag), record)
    common.print_table([{**summary_row(record), "OOD draws": len(setup.ood_files)}])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
