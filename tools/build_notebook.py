"""Write CS461_Assignment1.ipynb from the cell list below (the notebook's diffable source).

    .venv/bin/python tools/build_notebook.py            # write the notebook, outputs empty
    .venv/bin/python tools/build_notebook.py --execute  # then run it in the short profile and keep the
                                                       # outputs of the cells nbval checks (NBVAL_CHECK_OUTPUT)

Edit the cells here, not in the .ipynb, so that changes are reviewable; tests/test_notebook.py checks that the
committed notebook's sources match this file. Students edit the .ipynb directly: that is their copy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"
CHECK = "# NBVAL_CHECK_OUTPUT"

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    ("md", """# CS-461 Graded Assignment 1: self-supervised learning and OOD generalisation

This notebook trains an image encoder **from scratch, without labels**, on 64x64 images, then measures how well
its features serve classes it never saw (out-of-distribution, OOD), exactly as the grader will.

**How to use it.** Fill in Section 0, then *Run All*. Everything heavy lives in `utils/` (tested code); the cells
here are short and say why each step is there.

- **Profiles.** On a GPU with the course data (`/shared/CS461/cs461_assignment1_data/` or `$CS461_DATA_DIR`), the
  *full* profile trains the submitted ResNet-18 for a fixed time budget. Anywhere else (a laptop, CI) the *short*
  profile trains a tiny network for a few CPU minutes on the embedded default data set, which the kit generates.
  Set the environment variable `CS461_PROFILE=short|full` to choose yourself.
- **Packages.** The first cell checks this kernel. If it reports a package missing, run the install command it
  prints (on the course hub: `%pip install --user -r requirements-hub.txt`), then restart the kernel.
- **Speed.** The images live on the GPU as one uint8 tensor; augmented views are made there, per sample, in one
  batched pass. No DataLoader workers, no PIL: an epoch of the course data costs seconds, not minutes.
- **Nothing lost.** Checkpoints are written every few epochs (and every 10 minutes). If the hub session dies, run
  the notebook again with the same settings: training resumes where it stopped.
- **Deliverables.** `models.py`, `final_model.safetensors`, this notebook (executed and saved) and `report.md` (at
  most 500 words). After *Run All*, save the notebook (Ctrl+S) and run Section 7 again: it hands in the notebook as
  saved on disk, writes a report draft from your run's numbers for you to complete, and runs `python eval.py`."""),
    ("code", """# This kernel's Python, torch, GPU (total and free memory) and packages. A missing required package
# stops here, with the command that installs it; without an optional one the notebook goes on and says what it
# does instead.
from utils.environment import check_environment
environment = check_environment()"""),
    ("code", """import os
from pathlib import Path

import numpy as np
import torch
from IPython.display import display

from models import ImageEncoder
from utils import augment, explorer, plots, probes
from utils.data import (LOCAL_DATA_DIR, as_model_input, data_origin, load_splits, ood_split, resolve_data_dir,
                        spread_rows)
from utils.device import pick_device
from utils.features import fit_feature_statistics
from utils.recipes import recipe_config
from utils.submission.course import COURSE_BASELINES
from utils.submission.handin import demo_run, hand_in
from utils.synthetic import ensure_default_data
from utils.train import (TrainConfig, autocast_context, fit_batch_to_gpu, make_objective, prepare_data, probe_metrics,
                         project_views, seed_all, start_run)

%matplotlib inline
device = pick_device("auto")                  # the GPU when there is one (utils/device.py)
print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'the CPU'}")"""),
    ("md", """# 0. SCIPER Number and Name

⚠️ **Required for grading**: a missing SCIPER or name means a grade of 0. Section 7 refuses to hand in the
notebook while these are placeholders. Save the notebook (Ctrl+S) after filling them in."""),
    ("code", """SCIPER = None               # your 6-digit SCIPER number, e.g. 123456
LAST_NAME = "<LAST_NAME>"   # your last name
FIRST_NAME = "<FIRST_NAME>" # your first name""", ["identity"]),
    ("md", """## Settings

One cell holds every choice. The data directory is resolved in this order: an explicit path, `$CS461_DATA_DIR`,
the hub's `/shared/CS461/cs461_assignment1_data/`, then `./cs461_assignment1_data/` (the embedded default data,
generated on first use). Each profile names a recipe of `utils/recipes.py` (the one table of the kit's settings:
`"shipped"` is what the submitted weights were trained with, `"short"` the CPU profile); keywords change any
setting of it. `TrainConfig` lists every setting with its default (`help(TrainConfig)`); the same settings work on
the command line: `python -m utils.train loss=vicreg time_budget_min=30`."""),
    ("code", """DATA_DIR = resolve_data_dir()              # prints which folder is used and why
embedded = DATA_DIR == LOCAL_DATA_DIR
PROFILE = os.environ.get("CS461_PROFILE") or ("full" if device.type == "cuda" and not embedded else "short")
# Where weights, metrics and figures go. A short CPU run writes into short_run/ so that it never replaces the
# GPU-trained final_model.safetensors next to this notebook; the full run writes here, as the course expects.
OUTPUT_DIR = Path(os.environ.get("CS461_OUTPUT_DIR") or ("." if PROFILE == "full" else "short_run"))
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
FIGURES = OUTPUT_DIR / "figures"

BUDGET_MIN = os.environ.get("CS461_TIME_BUDGET_MIN")   # minutes of training instead of the profile's own
if PROFILE == "full":   # the submitted recipe (ResNet-18, multi-crop SimCLR) on a GPU: 20 min
    cfg = recipe_config("shipped", time_budget_min=float(BUDGET_MIN or 20), eval_every=10, checkpoint_every=5)
else:                   # a tiny network for a few CPU minutes on the embedded default data
    cfg = recipe_config("short", **({"time_budget_min": float(BUDGET_MIN)} if BUDGET_MIN else {}))
cfg.data_dir = str(DATA_DIR)
cfg.out_dir = str(OUTPUT_DIR / "runs")                           # checkpoints: runs/<loss>-<fingerprint>/
cfg.export_path = str(OUTPUT_DIR / "final_model.safetensors")
seed_all(cfg.seed)
print(f"Profile {PROFILE!r}: arch={cfg.arch}, loss={cfg.loss}, batch={cfg.batch_size}, "
      + (f"budget {cfg.time_budget_min} min" if cfg.time_budget_min else f"{cfg.epochs} epochs"))"""),
    ("md", """# 1. Datasets & Utilities

Three files in the course format: `images` uint8 (N, 64, 64, 3) RGB and `labels` (class ids, not 0..C-1).
`train` and `val` share the in-distribution (ID) classes; `ood` holds other classes, **for evaluation only**.
Loading validates each file (layout, dtype, size, NaN...) and says exactly what is wrong if anything is."""),
    ("code", """if embedded:
    ensure_default_data(DATA_DIR)           # generates the embedded default data set once (deterministic)
splits = load_splits(DATA_DIR)"""),
    ("code", f"""{CHECK}
for name, split in splits.items():
    kind = data_origin(split.path)            # "generated", "course" or "npz": recorded in the weights too
    print(f"{{name:5s}} {{len(split):7,d}} images, {{len(split.classes):3d}} classes ({{kind}} data), "
          f"label ids e.g. {{split.classes[:3].tolist()}}")
ood_fit, ood_score = ood_split(len(splits["ood"]))
print(f"OOD split (RandomState(42), 80/20): {{len(ood_fit)}} images fit the probes, {{len(ood_score)}} score them")"""),
    ("md", """What the images look like, and what the self-supervised objective sees: each image becomes several
*views* (random crop and flip, colour jitter, grayscale, blur, solarize), drawn independently for every image.
The encoder learns to give views of the same image similar embeddings and views of different images different
ones, so what survives the augmentations (shape, texture, parts) is what it keeps."""),
    ("code", """train_split = splits["train"]
plots.plot_image_grid(train_split.images, train_split.labels, train_split.class_names,
                      title="Training images (one row per class)", save_to=FIGURES)"""),
    ("code", """view_configs = augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                     cfg.crop_min_scale)
examples = torch.from_numpy(train_split.images[np.random.default_rng(0).choice(len(train_split), 6, replace=False)])
views = augment.make_views(examples, view_configs, generator=torch.Generator().manual_seed(0))
plots.plot_views(examples.numpy(), [v.numpy() for v in views], save_to=FIGURES)"""),
    ("md", """The training images go to the device once, as uint8 (the course's 100,000 images take 1.2 GB);
batches are indexed there."""),
    ("code", """data = prepare_data(splits, device, cfg.max_train_images)
print(f"train images on {device}: {tuple(data.train_on_device.shape)} uint8, "
      f"{data.train_on_device.numel() / 2**20:.0f} MiB")"""),
    ("md", """# 2. Load Your Model

`models.py` holds `ImageEncoder`, self-contained (torch only) because the grader imports it alone and builds it
with **no arguments**. The class variables `input_dim`, `input_channels` and `feature_dim` are fixed by the
course. `get_features` is designed for the grader's two probes on unseen classes, not left to the training loss
(`models.FEATURE_DESIGN`, chosen by `benchmarks/features.py`): the pooled outputs of the last two stages,
averaged over the image and its mirror, square-rooted, centred and whitened with statistics of the training
images (buffers that training fits before export and saves in the weights), each L2-normalised, concatenated
and zero-padded to 1000, every row of norm sqrt(1000)/4 (for the unscaled C=1 logistic regression, the scale
acts as C)."""),
    ("code", f"""{CHECK}
model = ImageEncoder(cfg.arch).to(device)
n_params = sum(p.numel() for p in model.parameters())
# Untrained, get_features uses the identity statistics (no centring, no whitening) and is still (B, 1000), as the
# course's template promises; training fits the training images' statistics before every probe and at export.
with torch.no_grad():
    shape = tuple(model.eval().get_features(torch.rand(2, 3, 64, 64, device=device)).shape)
print(f"ImageEncoder({{cfg.arch!r}}): {{n_params / 1e6:.2f}} M parameters, get_features -> {{shape}}")"""),
    ("md", """# 3. Helpers for Training & Evaluation

The pieces of one training step, spelled out so you can see and change them. Section 5 trains with **these
two functions**: `start_run(cfg, data, objective=custom_loss_function, step=training_step)` builds the run, and its
`train_epoch` calls `training_step` for every batch.
- `custom_loss_function`: the objective named in the settings: NT-Xent (SimCLR, or DCL with `decoupled=True`),
  VICReg, or LeJEPA (invariance + SIGReg), all in `utils/losses.py`. Edit it to try your own loss.
- `training_step`: views on the device, one forward for all views of the same size, the loss, backward, optimizer
  step. It returns the loss and view 0's projections without waiting for the GPU (`.item()` at every step would);
  the engine logs them every few steps.
- Editing either function starts a **new run folder** instead of resuming a run trained with the old code: their
  source is part of the run's fingerprint.
- `evaluation_step`: fast k-NN and linear probes on the device, ID (fit on train, score on val) and OOD (the
  course's 80/20 split).

(`loss="dino"`, self-distillation with a teacher, is trained by the engine's own step, since it needs a head and a
teacher network: call `start_run(cfg, data)` without them for it.)"""),
    ("code", """objective = make_objective(cfg)

def custom_loss_function(z, generator=None):
    \"\"\"z: (V, B, 128) projections of V views of B images -> scalar loss.\"\"\"
    return objective(z, generator)

def training_step(model, batch_uint8, view_configs, loss_function, optimizer, generator, autocast):
    \"\"\"One update on a batch of uint8 images (B, 64, 64, 3) already on the device.
    Returns (loss, z0): the loss (0-d tensor) and view 0's projections (B, 128), detached.\"\"\"
    views = augment.make_views(batch_uint8, view_configs, generator=generator)
    with autocast:                                             # bf16 on the GPU, float32 on the CPU
        z = project_views(model, views)                        # (V, B, 128); same-size views in one forward
        loss = loss_function(z.float(), generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), z[0].detach()

def evaluation_step(model):
    \"\"\"Fast probes of the current model, in percent: id_knn, id_linear, ood_knn, ood_linear. First
    get_features' training statistics for the model as it is now (on the rows the ID probe fits on).\"\"\"
    fit_feature_statistics(model, data.train.images[spread_rows(len(data.train), cfg.eval_max_train)],
                           device=device)
    return probe_metrics(model, data, cfg, device)"""),
    ("md", """Two reference points before any training: a **randomly initialised** network and **raw pixels**. A
useful encoder must beat both, on ID and above all on OOD classes."""),
    ("code", """random_init = evaluation_step(model)
flat = lambda split: (as_model_input(torch.from_numpy(split.images)).reshape(len(split), -1), split.labels)  # pixels in [0, 1]
pixels = probes.evaluate_protocol(flat(data.train), flat(data.val), flat(data.ood), kinds=("knn",), progress=False)
raw_pixels = {"id_knn": pixels.id_knn, "ood_knn": pixels.ood_knn}
print("random init :", {k: f"{v:.1f}%" for k, v in random_init.items()})
print("raw pixels  :", {k: f"{v:.1f}%" for k, v in raw_pixels.items()})"""),
    ("md", """# 4. Optimizer Configuration

AdamW (or LARS: `optimizer="lars"`), with weight decay on weights only (not biases or normalisation
parameters). The learning rate warms up linearly over the first `warmup` fraction of the run, then follows a
cosine to zero, stepped every iteration. With a time budget, *progress* is elapsed training time over the
budget, so the schedule ends exactly when the budget does. A quick one-step check that the pieces fit together:"""),
    ("code", """display(plots.plot_lr_schedule(cfg.lr, cfg.warmup, cfg.final_lr_ratio, save_to=FIGURES))
trial_model = ImageEncoder(cfg.arch).to(device).train()
trial_optimizer = torch.optim.AdamW(trial_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
trial_batch = data.train_on_device[:min(32, len(data.train))]
trial_loss, _ = training_step(trial_model, trial_batch, view_configs, custom_loss_function, trial_optimizer,
                              torch.Generator(device=device).manual_seed(0), autocast_context(device, cfg.precision))
print(f"one training step on {len(trial_batch)} images: loss {trial_loss.item():.3f}")
del trial_model, trial_optimizer"""),
    ("md", """# 5. Training Loop

The loop below is the whole schedule, and the very lines `python -m utils.train` runs (`utils/train.py`,
`train()`): `start_run` builds the run, or **resumes** it from its newest checkpoint when one exists (and says
so); `train_epoch` trains one epoch (or until the time budget ends) under a progress bar with loss, images per
second, the effective rank of the embeddings (a collapse alarm: it falls towards 1 when the representation
collapses) and the ETA, and also writes a checkpoint every 10 minutes; `evaluate` runs the probes every
`eval_every` epochs; `save` writes an atomic checkpoint every `checkpoint_every` epochs. Interrupting the kernel
saves a checkpoint first. `finish` evaluates and saves once more, fits `get_features`' statistics and writes
`final_model.safetensors` (loaded strictly by `ImageEncoder()`) and `training_metrics.json`, with the run's
fingerprint, which the weights record too.

The hub's GPUs are shared, so in the full profile the batch size is first fitted to the memory free now: two trial
steps of your `training_step` measure the memory per image, and the largest batch that fits with a 20% margin
(the recipe's, or a power of two below it) is used, with the learning rate scaled linearly. One line says what was
chosen. A batch size that already has a checkpoint is preferred, so that a restarted session resumes."""),
    ("code", """if PROFILE == "full" and device.type == "cuda":
    cfg = fit_batch_to_gpu(cfg, data, device, objective=custom_loss_function, step=training_step)
run = start_run(cfg, data, objective=custom_loss_function, step=training_step)   # new, or resumed
while not run.finished:
    run.train_epoch()                   # one epoch, or until the time budget ends
    if run.due(cfg.eval_every):
        run.evaluate()                  # the probes, one line
    if run.due(cfg.checkpoint_every):
        run.save()                      # an atomic checkpoint
result = run.finish()                   # last probes and checkpoint, statistics, the export
model = result.model.eval()
history = result.history"""),
    ("code", """import shutil
shutil.copy(result.metrics_path, OUTPUT_DIR / "training_metrics.json")
print(f"weights: {result.weights_path}\\nmetrics: {OUTPUT_DIR / 'training_metrics.json'}")"""),
    ("md", """# 6. Visualize Results

Training and validation loss, and the probes over training (ID solid, OOD dashed)."""),
    ("code", """plots.plot_loss_curves(history, save_to=FIGURES)"""),
    ("code", """plots.plot_probe_curves(history, save_to=FIGURES)"""),
    ("md", """## The grader's protocol on the final model

Raw `get_features` of `ToTensor()` images; 5-NN and `LogisticRegression(max_iter=1000)`; ID = fit on train,
score on val; OOD = the 80/20 split above. On a GPU the fast path computes the same probes in seconds (it agrees
with scikit-learn within a point, see `tests/test_probes.py`); on small data the exact scikit-learn path is
used."""),
    ("code", """features = {name: probes.encode_images(model, split.images, progress=True) for name, split in splits.items()}
labels = {name: split.labels for name, split in splits.items()}
exact = len(splits["train"]) <= 20_000 or device.type == "cpu"
final = probes.evaluate_protocol((features["train"], labels["train"]), (features["val"], labels["val"]),
                                 (features["ood"], labels["ood"]), fast=not exact)
print(final)"""),
    ("code", """references = {"random init": random_init, "raw pixels": raw_pixels}
if not embedded:
    references["course SimCLR baseline"] = COURSE_BASELINES
plots.plot_id_vs_ood(final.as_dict(), baselines=references, save_to=FIGURES)"""),
    ("md", """## Predictions

Validation images with the label predicted by the 5-NN probe fitted on the training features (green: correct,
red: wrong, with the true class), and the same for OOD images, predicted from the OOD fitting split."""),
    ("code", """val_pred, val_neighbours = probes.knn_predict(features["train"], labels["train"], features["val"])
val_split = splits["val"]
plots.plot_prediction_grid(val_split.images, val_split.labels, val_pred.numpy(), val_split.class_names,
                           title="Validation (ID) predictions", save_to=FIGURES, filename="predictions_val.png")"""),
    ("code", """ood_split_data = splits["ood"]
ood_pred, _ = probes.knn_predict(features["ood"][ood_fit], labels["ood"][ood_fit], features["ood"][ood_score])
plots.plot_prediction_grid(ood_split_data.images[ood_score], ood_split_data.labels[ood_score], ood_pred.numpy(),
                           ood_split_data.class_names, title="OOD predictions (unseen classes)",
                           save_to=FIGURES, filename="predictions_ood.png")"""),
    ("code", """plots.plot_confusion_top(val_split.labels, val_pred.numpy(), val_split.class_names, k=10, save_to=FIGURES)"""),
    ("md", """## Nearest neighbours

What the encoder considers similar: validation queries and their 5 nearest training images."""),
    ("code", """queries = np.random.default_rng(0).choice(len(val_split), 6, replace=False)
neighbour_idx = val_neighbours[queries].numpy()
plots.plot_neighbours(val_split.images[queries], val_split.labels[queries], train_split.images[neighbour_idx],
                      train_split.labels[neighbour_idx], train_split.class_names, save_to=FIGURES)"""),
    ("code", """# Interactive: pick an image, see its neighbours and predicted label (a static figure where widgets cannot run).
explorer.neighbour_explorer(val_split.images, features["val"].numpy(), val_split.labels, val_split.class_names)"""),
    ("md", """## Embeddings

t-SNE and UMAP of validation (seen classes) and OOD (unseen classes) features, coloured by class. Tight,
separated clusters for OOD classes are what the OOD probes reward."""),
    ("code", """plots.plot_embeddings_side_by_side(
    {"validation (seen classes)": (features["val"], val_split.labels, val_split.class_names),
     "OOD (unseen classes)": (features["ood"], ood_split_data.labels, ood_split_data.class_names)},
    max_points=1000 if PROFILE == "short" else 1500, seed=0, save_to=FIGURES)"""),
    ("md", """## Optional: fine-tuning evaluation (not graded)

How far are the frozen features from what labels could make of this network? `utils/finetune.py` fine-tunes a
**copy** of the trained encoder, with a linear head, on the ID training labels for a few epochs, and reports its
ID validation accuracy beside the linear probe on the frozen features, with the fine-tuned copy's confusion figure.

This is an **evaluation only**, not part of the grade: the course forbids labels in training the submitted
encoder. The copy is thrown away; `model` and `final_model.safetensors` are not changed. It says nothing about the
OOD classes, which the grade is about. It trains again, so it is off by default: set `CS461_FINETUNE=1` before
starting the notebook (or `RUN_FINETUNE = True` below). From a terminal:
`python -m utils.finetune --weights final_model.safetensors --data-dir DIR`."""),
    ("code", """RUN_FINETUNE = os.environ.get("CS461_FINETUNE") == "1"   # optional and not graded: off by default
if RUN_FINETUNE:
    from utils.finetune import finetune_evaluation
    tuned = finetune_evaluation(model, splits["train"], splits["val"], device=device, figure_dir=FIGURES,
                                progress=True)
    print(f"ID val accuracy: linear probe on the frozen features {tuned.linear_probe:.1f}%, "
          f"fine-tuned copy {tuned.finetuned:.1f}% (evaluation only, not graded)")
    display(tuned.confusion)
else:
    print("Fine-tuning evaluation skipped (optional, not graded): set CS461_FINETUNE=1 to run it.")"""),
    ("md", """# 7. Submission Instructions

Hand in four files in one folder (default `~/cs461_assignment1_submission`): `models.py`,
`final_model.safetensors`, this notebook **executed and saved**, and `report.md` (at most 500 words, with a
discussion of the OOD results).

1. **Save the notebook now** (Ctrl+S), then run the next cell. It hands in the notebook *as saved on disk*, so it
   refuses (copying nothing) while Section 0 is a placeholder or while the saved file holds no outputs of this run.
2. It copies the four files, runs `python eval.py` (the grader's checks and its exact protocol; the whole log in
   `eval_log.txt`, the result in `eval_result.json`) and prints a short verdict: the checks that failed or warned,
   and the four accuracies.
3. The first time, it writes `my_report.md` in the output folder: a draft from **your** run's numbers, with places
   marked `<<FILL IN: ...>>` for your discussion. Write it, save it, and run the cell again: `my_report.md` is
   handed in as `report.md` and never overwritten (`report_draft.md` is refreshed from the latest run).

Fix anything marked FAIL before the deadline; then run `python eval.py` once more from a terminal."""),
    ("code", """SUBMISSION_DIR = Path(os.environ.get("CS461_SUBMISSION_DIR", Path.home() / "cs461_assignment1_submission"))
NOTEBOOK_PATH = Path(os.environ.get("CS461_NOTEBOOK_PATH", "CS461_Assignment1.ipynb"))
handed_in = hand_in(SUBMISSION_DIR, weights=result.weights_path, metrics=OUTPUT_DIR / "training_metrics.json",
                    notebook=NOTEBOOK_PATH, output_dir=OUTPUT_DIR, data_dir=DATA_DIR,
                    identity={"SCIPER": SCIPER, "LAST_NAME": LAST_NAME, "FIRST_NAME": FIRST_NAME},
                    fast=device.type == "cuda", demo=demo_run())"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}})
    for entry in CELLS:
        kind, source, tags = (*entry, []) if len(entry) == 2 else entry
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):       # stable ids keep diffs small
        cell.id = f"cell-{i:02d}"
    return nb


def keep_checked_outputs(executed: nbformat.NotebookNode, clean: nbformat.NotebookNode) -> None:
    """Copy into `clean` the outputs of the cells marked NBVAL_CHECK_OUTPUT (nbval compares those)."""
    for run, cell in zip(executed.cells, clean.cells):
        if cell.cell_type == "code" and cell.source.startswith(CHECK):
            cell.outputs = [o for o in run.outputs if o.get("output_type") == "stream"]
            cell.execution_count = run.execution_count   # nbval skips comparing cells that look unrun


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    from nbclient import NotebookClient
    executed = nbformat.from_dict(nb)
    with tempfile.TemporaryDirectory() as out:
        os.environ.update({"CS461_PROFILE": "short", "CS461_STATIC_WIDGETS": "1", "CS461_OUTPUT_DIR": out})
        NotebookClient(executed, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    return executed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execute", action="store_true", help="run it and keep the checked cells' outputs")
    args = parser.parse_args(argv)
    nb = build()
    if args.execute:
        keep_checked_outputs(execute(nb), nb)
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
