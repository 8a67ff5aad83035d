"""A replica of the course grader's eval.py, written from what the course's eval.py and utils.py do, step by
step: the course's steps, in the course's order, with the course's output. The kit's code, not the course's.

It runs in a folder of its own beside the stand-in utils.py (utils/submission/grader.py lays that folder out and
starts it in a fresh `python -I`), against a submission folder and, for the probes, a data folder:

    python eval.py -i SUBMISSION -d DATA            every step, then the four probes (printed as the course does)
    python eval.py -i SUBMISSION --first-steps      import, build, strict load, eval(), the shape check; no data
    ... --result result.json                        also write which steps passed, the error, the accuracies

Steps (names used in result.json and in eval.py's FAIL lines):
  1 files        the folder holds models.py, final_model.safetensors, CS461_Assignment1.ipynb, report.md
                 (skipped with --first-steps: the kit's eval.py checks each file itself)
  2 import       spec_from_file_location("custom_model", <folder>/models.py), module_from_spec, exec_module;
                 the module is never put in sys.modules
  3 build        seed_all(42); ImageEncoder() with no arguments (not moved to another device)
  3 load         safetensors.torch.load_model(model, <folder>/final_model.safetensors) (strict), model.eval()
  4 shape check  under no_grad, get_features(torch.randn(1, 3, 64, 64)) has shape (1, 1000); any exception is
                 re-raised as RuntimeError("Error during model forward pass: ...")
  5 data         ImageDatasetNPZ of train/val/ood (ToTensor per item); OOD: RandomState(42), 80% fit, 20% scored;
                 DataLoader(batch_size=64, shuffle=False, num_workers=4)
  6 probes       features on the model's own device; k-NN and linear probes, ID (train -> val) then OOD;
                 printed as the course prints them: a fraction followed by "%"

An exception propagates with its traceback, as in the course's script (exit status 1); --result records the step
it happened in first.

Tests: tests/test_grader.py (with utils.py beside it).
"""
import argparse
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

# `python eval.py` puts this folder first on sys.path, so `utils` below is the stand-in beside this file; under
# `python -I` (how the kit starts it: no PYTHONPATH, no user site) Python 3.11+ does not, so it is done here.
HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path[:1] != [HERE]:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_model  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

import utils  # noqa: E402  (the stand-in beside this file; the course's `from utils import ...`)

SUBMISSION_FILES = ("models.py", "final_model.safetensors", "CS461_Assignment1.ipynb", "report.md")


class Steps:
    """Which step is running, and what --result records: the steps passed, the failing step and its error."""

    def __init__(self, result_path):
        self.path = result_path
        self.record = {"steps_passed": [], "failed_step": None, "error": None, "traceback": None,
                       "accuracies": {}, "versions": versions()}

    def run(self, name, function, *args):
        try:
            value = function(*args)
        except BaseException as error:
            self.record["failed_step"] = name
            self.record["error"] = f"{type(error).__name__}: {error}"
            self.record["traceback"] = traceback.format_exc()
            self.write()
            raise
        self.record["steps_passed"].append(name)
        self.write()
        return value

    def write(self):
        if self.path:
            Path(self.path).write_text(json.dumps(self.record, indent=1) + "\n")


def versions():
    import importlib.metadata
    import safetensors
    found = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
             "safetensors": getattr(safetensors, "__version__", "unknown")}
    try:                      # Intel's extension, which the course's utils.py patches in when it is installed
        found["scikit-learn-intelex"] = importlib.metadata.version("scikit-learn-intelex")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def check_files(folder):
    assert folder.exists() and folder.is_dir(), f"Submission folder {folder} does not exist or is not a directory."
    names = {path.name for path in folder.iterdir()}
    for name in SUBMISSION_FILES:
        assert name in names, f"`{name}` not found in the submission folder."


def import_models(folder):
    spec = importlib.util.spec_from_file_location("custom_model", str(folder / "models.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)          # never registered in sys.modules, as on the grader's side
    return module


def build(module):
    utils.seed_all(42)
    return module.ImageEncoder()


def load(model, folder):
    load_model(model, str(folder / "final_model.safetensors"))   # strict, the safetensors default
    model.eval()


def shape_check(model):
    try:
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            out = model.get_features(x)
        assert out.shape == (1, 1000), f"Encoded features shape is {out.shape}, expected (1, 1000)."
    except Exception as error:
        raise RuntimeError(f"Error during model forward pass: {error}")


def loaders(data_dir, train_file, val_file, ood_file):
    """The four loaders of the course: train, val, OOD fit (80%), OOD scored (20%)."""
    train = utils.ImageDatasetNPZ(data_dir / train_file, transform=utils.default_transform)
    val = utils.ImageDatasetNPZ(data_dir / val_file, transform=utils.default_transform)
    ood = utils.ImageDatasetNPZ(data_dir / ood_file, transform=utils.default_transform)
    rng = np.random.RandomState(42)
    fit_mask = rng.permutation(len(ood)) >= int(len(ood) * 0.2)
    datasets = (train, val, Subset(ood, np.where(fit_mask)[0]), Subset(ood, np.where(~fit_mask)[0]))
    return [DataLoader(d, batch_size=64, shuffle=False, num_workers=4) for d in datasets]


def probe(model, fit_loader, score_loader):
    fit_features, fit_labels = utils.extract_features_and_labels(model, fit_loader)
    score_features, score_labels = utils.extract_features_and_labels(model, score_loader)
    return (utils.run_knn_probe(fit_features, fit_labels, score_features, score_labels),
            utils.run_linear_probe(fit_features, fit_labels, score_features, score_labels))


def main(argv=None):
    parser = argparse.ArgumentParser(description="The course grader's steps on a submission folder (a replica).")
    parser.add_argument("--submission-folder", "-i", default="$HOME/cs461_assignment1_submission")
    parser.add_argument("--data-dir", "-d", default="/shared/CS461/cs461_assignment1_data/")
    parser.add_argument("--train-file", default="train.npz")
    parser.add_argument("--val-file", default="val.npz")
    parser.add_argument("--ood-file", default="ood.npz")
    parser.add_argument("--first-steps", action="store_true",
                        help="stop after the shape check (import, build, strict load, eval, shape check)")
    parser.add_argument("--result", default=None, help="write the steps passed, the error and the accuracies here")
    args = parser.parse_args(argv)
    folder = Path(args.submission_folder.replace("$HOME", str(Path.home())))
    steps = Steps(args.result)

    if not args.first_steps:
        steps.run("files", check_files, folder)
    module = steps.run("import", import_models, folder)
    model = steps.run("build", build, module)
    steps.run("load", load, model, folder)
    steps.run("shape check", shape_check, model)
    if args.first_steps:
        return 0

    device = next(model.parameters()).device
    print(f"Using device: {device}")
    train, val, ood_fit, ood_scored = steps.run("data", loaders, Path(args.data_dir), args.train_file,
                                                args.val_file, args.ood_file)

    def all_probes():
        accuracies = steps.record["accuracies"]
        accuracies["id_knn"], accuracies["id_linear"] = probe(model, train, val)
        print(f"k-NN Accuracy: {accuracies['id_knn']:.2f}%")
        print(f"Linear Probe Accuracy: {accuracies['id_linear']:.2f}%")
        accuracies["ood_knn"], accuracies["ood_linear"] = probe(model, ood_fit, ood_scored)
        print(f"OOD k-NN Accuracy: {accuracies['ood_knn']:.2f}%")
        print(f"OOD Linear Probe Accuracy: {accuracies['ood_linear']:.2f}%")

    steps.run("probes", all_probes)
    import sklearn
    steps.record["versions"]["scikit-learn"] = sklearn.__version__
    steps.write()
    print("Evaluation completed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
