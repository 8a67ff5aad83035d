"""Write CS461_Assignment1.ipynb from the cell list below (the notebook's diffable source).

    .venv/bin/python tools/build_notebook.py            # write the notebook, without outputs

Edit the cells here, not in the .ipynb, so that changes are reviewable; tests/test_notebook.py checks that the
committed notebook's sources match this file. Students edit the .ipynb directly: that is their copy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "CS461_Assignment1.ipynb"

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    ("md", """# CS-461 Graded Assignment 1: self-supervised learning and OOD generalisation

This notebook trains an image encoder **from scratch, without labels**, on the course's 64x64 images, then
measures how well its features serve classes it never saw (out-of-distribution, OOD), exactly as the grader will.

**The approach, in plain words.**
- *Encoder* (`models.py`, Section 2): a ResNet-18 whose first layer has stride 2 and no max-pool (for 64-px
  images), a 512 -> 1000 feature layer, and a small projector that only the loss sees.
- *Objective* (Section 3): SimCLR's contrastive loss (NT-Xent) over multi-crop views. Each image gives two 64-px
  and four 32-px views; every view must pick out the other views of its own image among the views of the whole
  batch.
- *Augmentations* (Section 3): random crops resized back, flips, colour jitter, grayscale, blur and solarize,
  drawn independently for every image, on the GPU.
- *Training budget* (Sections 4 and 5): AdamW with a warm-up and a cosine schedule, for a fixed time on one GPU
  (20 minutes unless you change `TRAIN_MINUTES`); a run cut by the hub resumes from its last checkpoint. After a
  minute, Section 5 prints what the budget buys on this GPU.
- *Features for the grader* (`get_features`, Section 2): the pooled outputs of the last two stages, averaged
  over the image and its mirror, centred and whitened with statistics of the training images, normalised and
  padded to 1000 values.

**Where the code is.** The algorithm is written out in Sections 3 to 5: the views, the loss, the optimizer and
its schedule, the training step, the evaluation step and the loop over batches; these functions are the ones
that train. The machinery around them (checking the data, device memory, checkpoint files and resuming, the time
budget, progress bars, figures, the hand-in) comes from the kit's `utils/` package, which is not one of the
four handed-in files: it sits beside this notebook in the kit (its `README.md` says what each module does).

**How to use it.** Fill in Section 0 and check the settings cell, then *Run All*. When it has finished, save
the notebook (Ctrl+S) and run Section 7's cell: it hands in the four files and checks them as the grader will."""),
    ("code", """# This kernel's Python, torch, GPU (total and free memory) and packages. A missing or broken required package
# stops here, with what to do; without an optional one the notebook goes on and says what it does instead.
from utils.environment import check_environment
environment = check_environment()"""),
    ("code", """import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from models import ImageEncoder
from utils import augment, explorer, optim, plots, probes
from utils.config import recipe_config
from utils.data import (DATA_ORIGINS, LOCAL_DATA_DIR, as_model_input, load_splits, ood_split, resolve_data_dir,
                        spread_rows, training_data_record)
from utils.device import pick_device
from utils.features import fit_feature_statistics
from utils.memory import fit_batch_to_gpu
from utils.steps import autocast_context, make_objective, project_views, validation_loss
from utils.submission.handin import demo_run, hand_in
from utils.synthetic import ensure_default_data
from utils.train import prepare_data, seed_all, start_run

%matplotlib inline
device = pick_device("auto")                  # the GPU when there is one
print(f"torch {torch.__version__} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'the CPU'}")"""),
    ("md", """# 0. SCIPER Number and Name

⚠️ **Required for grading**: a missing SCIPER or name means a grade of 0. Section 7 refuses to hand in the
notebook while these are placeholders. Save the notebook (Ctrl+S) after filling them in."""),
    ("code", """SCIPER = None               # your 6-digit SCIPER number, e.g. 123456
LAST_NAME = "<LAST_NAME>"   # your last name
FIRST_NAME = "<FIRST_NAME>" # your first name""", ["identity"]),
    ("md", """## Settings

The choices you may want to change are the first two lines. `DATA_DIR = None` finds the course's data in the
hub's `/shared/CS461/cs461_assignment1_data/`; if your copy is elsewhere, write its folder instead, e.g.
`DATA_DIR = "~/cs461_assignment1_data"`, and run the notebook again. Without the course's data and a GPU the
notebook runs its *short* profile: a tiny network for a few CPU minutes on data the kit generates, to show every
step (a submission trained on that data fails `eval.py`).

Each profile names a recipe of `utils/config.py` (`"shipped"` is what the submitted weights were trained with);
keywords change any setting (`help(TrainConfig)` lists them all)."""),
    ("code", """DATA_DIR = None        # None: the course hub's folder; else the folder of your copy of the course's data
TRAIN_MINUTES = 20     # training time on the GPU; a longer run resumes across cut sessions

DATA_DIR = resolve_data_dir(DATA_DIR)          # prints which folder is used, and why
embedded = DATA_DIR == LOCAL_DATA_DIR          # the kit's generated demo data
# CS461_PROFILE, CS461_OUTPUT_DIR and CS461_TIME_BUDGET_MIN override these for runs without a browser.
PROFILE = os.environ.get("CS461_PROFILE") or ("full" if device.type == "cuda" and not embedded else "short")
OUTPUT_DIR = Path(os.environ.get("CS461_OUTPUT_DIR") or ("." if PROFILE == "full" else "short_run"))
minutes = float(os.environ.get("CS461_TIME_BUDGET_MIN") or (TRAIN_MINUTES if PROFILE == "full" else 0))
if PROFILE == "full":   # the submitted recipe (ResNet-18, multi-crop SimCLR), for TRAIN_MINUTES on the GPU
    cfg = recipe_config("shipped", time_budget_min=minutes, eval_every=10, checkpoint_every=5)
else:                   # a tiny network for 16 short epochs on the CPU (or for CS461_TIME_BUDGET_MIN minutes)
    cfg = recipe_config("short", time_budget_min=minutes)
# A short run writes into short_run/, so that it never replaces the GPU-trained final_model.safetensors here.
OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
FIGURES = OUTPUT_DIR / "figures"
cfg.out_dir = str(OUTPUT_DIR / "runs")                           # checkpoints: runs/<loss>-<run id>/
cfg.export_path = str(OUTPUT_DIR / "final_model.safetensors")
seed_all(cfg.seed)
print(f"Profile {PROFILE!r}: arch={cfg.arch}, loss={cfg.loss}, batch={cfg.batch_size}, "
      + (f"budget {cfg.time_budget_min:g} min" if cfg.time_budget_min else f"{cfg.epochs} epochs"))"""),
    ("md", """# 1. Datasets & Utilities

Three files in the course format: `images` uint8 (N, 64, 64, 3) RGB and `labels` (class ids, not 0..C-1).
`train` and `val` share the in-distribution (ID) classes; `ood` holds other classes, **for evaluation only**.
Loading checks each file (layout, dtype, size, NaN...) and says exactly what is wrong if anything is."""),
    ("code", """if embedded:
    ensure_default_data(DATA_DIR)           # generates the demo data set once (deterministic)
splits = load_splits(DATA_DIR)
for name, split in splits.items():
    print(f"{name:5s} {len(split):7,d} images, {len(split.classes):3d} classes, "
          f"label ids e.g. {split.classes[:3].tolist()}")
trained_on = training_data_record(splits["train"], splits["val"])["trained_on"]   # the weights record it too
print(f"Training set: {DATA_ORIGINS[trained_on]}" + ("" if trained_on == "course" else
      ": eval.py fails weights trained on it. Set DATA_DIR to the course's data for the submission."))
ood_fit, ood_score = ood_split(len(splits["ood"]))
print(f"OOD split (RandomState(42), 80/20): {len(ood_fit)} images fit the probes, {len(ood_score)} score them")"""),
    ("code", """train_split = splits["train"]
plots.plot_image_grid(train_split.images, train_split.labels, train_split.class_names,
                      title="Training images (one row per class)", save_to=FIGURES)"""),
    ("md", """The training images go to the device once, as uint8 (the course's 100,000 images take 1.2 GB); batches
are indexed there and augmented there, so an epoch costs seconds, not minutes."""),
    ("code", """data = prepare_data(splits, device, cfg.max_train_images)
print(f"train images on {device}: {tuple(data.train_on_device.shape)} uint8, "
      f"{data.train_on_device.numel() / 2**20:.0f} MiB")"""),
    ("md", """# 2. Load Your Model

`models.py` holds `ImageEncoder`, self-contained (torch only) because the grader imports it alone and builds it
with **no arguments**. The class variables `input_dim`, `input_channels` and `feature_dim` are fixed by the
course. `get_features` is designed for the grader's two probes on unseen classes rather than left to the training
loss (`models.FEATURE_DESIGN`, chosen by `benchmarks/features.py`): the pooled outputs of the last two stages,
averaged over the image and its mirror, square-rooted, centred and whitened with statistics of the training
images (buffers that training fits before export and saves in the weights), each L2-normalised, concatenated and
zero-padded to 1000 values, every row of the same norm."""),
    ("code", """model = ImageEncoder(cfg.arch).to(device)
n_params = sum(p.numel() for p in model.parameters())
# Untrained, get_features uses the identity statistics (no centring, no whitening) and is still (B, 1000), as the
# course's template promises; training fits the training images' statistics before every probe and at export.
with torch.no_grad():
    shape = tuple(model.eval().get_features(torch.rand(2, 3, 64, 64, device=device)).shape)
print(f"ImageEncoder({cfg.arch!r}): {n_params / 1e6:.2f} M parameters, get_features -> {shape}")"""),
    ("md", """# 3. Helpers for Training & Evaluation

The algorithm, written out; Section 5's loop calls these very functions.

**The views.** Each image gives `cfg.global_views` views of 64 px and `cfg.local_views` small views of
`cfg.local_size` px (multi-crop), each with its own random crop, flip, colour jitter, grayscale, blur and
solarize, drawn independently for every image. The two 64-px views differ on purpose (one always blurred, the
other sometimes solarized, as in BYOL). They are made on the device, one batched pass per view
(`utils/augment.py`)."""),
    ("code", """view_configs = augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                     cfg.crop_min_scale)
for i, view in enumerate(view_configs):
    print(f"view {i}: {view.describe()}")
examples = torch.from_numpy(splits["train"].images[np.random.default_rng(0).choice(len(splits["train"]), 6,
                                                                                  replace=False)])
views = augment.make_views(examples, view_configs, generator=torch.Generator().manual_seed(0))
plots.plot_views(examples.numpy(), [v.numpy() for v in views], save_to=FIGURES)"""),
    ("md", """**The loss.** `custom_loss_function` is multi-crop NT-Xent (SimCLR, Chen et al. 2020): all V x B projections
are L2-normalised; for each one (the anchor), the other V - 1 views of its image are the positives and every
other projection a candidate; the loss is the cross-entropy of a softmax over the candidates' cosine similarities
(divided by the temperature), averaged over the positives and the anchors. It is computed in float32: a bf16
similarity keeps about three digits, which the temperature would amplify.

The kit's other objectives (VICReg, LeJEPA, DCL) are in `utils/losses.py`; choose one with `loss=...` in the
settings cell (the cell below then uses it instead, and says so), or edit this function to try your own. Editing
it, `training_step` or the schedule starts a **new run folder** instead of resuming a run trained with the old
code."""),
    ("code", """def custom_loss_function(z, generator=None):
    \"\"\"Multi-crop NT-Xent. z: (V, B, D) projections of V views of B images -> scalar loss.
    (generator: for objectives that draw random numbers; NT-Xent draws none.)\"\"\"
    V, B, D = z.shape
    with torch.autocast(z.device.type, enabled=False):
        unit = F.normalize(z.float().reshape(V * B, D), dim=1)          # row v * B + i: view v of image i
        logits = unit @ unit.T / cfg.temperature                         # (VB, VB) cosine similarity / t
        image = torch.arange(V * B, device=z.device) % B
        is_self = torch.eye(V * B, dtype=torch.bool, device=z.device)
        is_positive = (image[:, None] == image[None, :]) & ~is_self      # the other views of the same image
        log_denominator = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - log_denominator                              # log softmax over the candidates
        return -(log_prob.masked_fill(~is_positive, 0.0).sum(dim=1) / (V - 1)).mean()

if cfg.loss != "ntxent" or cfg.decoupled:     # another objective of utils/losses.py, chosen in the settings
    custom_loss_function = make_objective(cfg)
    print(f"custom_loss_function: the kit's {cfg.loss!r}" + (" (decoupled)" if cfg.decoupled else ""))"""),
    ("md", """**One training step.** Views of a batch, their projections (views of the same size go through the network
together), the loss, the update. It returns the loss and view 0's projections without waiting for the GPU: the
run logs them every few steps (a `.item()` at every step would stall the GPU)."""),
    ("code", """autocast = autocast_context(device, cfg.precision)      # bf16 on a GPU, float32 on the CPU

def training_step(model, batch, optimizer, generator):
    \"\"\"One update on uint8 images (B, 64, 64, 3) on the device. Returns (loss, z0): the loss (0-d tensor) and
    view 0's projections (B, 128), both detached.\"\"\"
    views = augment.make_views(batch, view_configs, generator=generator)   # V tensors (B, 3, size, size)
    with autocast:
        z = project_views(model, views)                                     # (V, B, 128)
        loss = custom_loss_function(z.float(), generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), z[0].detach()"""),
    ("md", """**One evaluation step**, which the run calls every `cfg.eval_every` epochs: the loss on validation images
(fixed views, so that values compare across evaluations); then `get_features`' statistics fitted for the model as
it is now; then fast k-NN and linear probes (torch, on the device) under the grader's protocol: ID fitted on
training images and scored on validation, OOD on the course's 80/20 split."""),
    ("code", """probe_rows = spread_rows(len(data.train), cfg.eval_max_train)   # at most eval_max_train, spread over every class

def evaluation_step(model):
    \"\"\"{val_loss, id_knn, id_linear, ood_knn, ood_linear} of the model as it is now (accuracies in percent).\"\"\"
    val_loss = validation_loss(model, data.val.images, view_configs, custom_loss_function,
                               batch_size=cfg.batch_size, seed=cfg.seed + 2, autocast=autocast)
    fit_feature_statistics(model, data.train.images[probe_rows], device=device)
    result, _ = probes.evaluate_encoder(model, data.train, data.val, data.ood, fit_rows=probe_rows,
                                        max_iter=cfg.eval_linear_iters)
    return {"val_loss": val_loss, **result.accuracies()}"""),
    ("md", """Two reference points before any training: a **randomly initialised** network and **raw pixels**. A
useful encoder must beat both, on ID and above all on OOD classes."""),
    ("code", """random_init = evaluation_step(model)
pixels = lambda split: (as_model_input(torch.from_numpy(split.images)).reshape(len(split), -1), split.labels)
raw = probes.evaluate_protocol(pixels(data.train), pixels(data.val), pixels(data.ood), kinds=("knn",),
                               progress=False)
raw_pixels = {"id_knn": raw.id_knn, "ood_knn": raw.ood_knn}
print("random init :", {k: f"{v:.1f}%" for k, v in random_init.items() if k != "val_loss"})
print("raw pixels  :", {k: f"{v:.1f}%" for k, v in raw_pixels.items()})"""),
    ("md", """# 4. Optimizer Configuration

**The batch for this GPU.** The hub's GPUs are shared, so in the full profile the batch size is fitted to the
memory free now: two trial steps of `training_step` measure the memory per image, and the largest batch that
fits with a 20% margin (the recipe's, or a power of two below it) is used, with the learning rate scaled in
proportion to the batch (the linear scaling rule). One line says what was chosen. A batch size that already has
a checkpoint is preferred, so that a restarted session resumes.

**The optimizer**: AdamW (`optimizer="lars"` for LARS), with weight decay on the weights of convolutions and
linear layers only, not on biases or normalisation parameters (`optim.param_groups`).

**The schedule**: the learning rate warms up linearly over the first `cfg.warmup` of the run, then follows a
half cosine down to `cfg.final_lr_ratio` of its peak, set before every step. With a time budget, the run's
*progress* is training time over the budget, so the schedule ends exactly when the budget does."""),
    ("code", """optimizer = optim.build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, device)

def learning_rate(progress):
    \"\"\"The learning rate at `progress` (0 to 1) of the run: warm-up, then cosine (utils/optim.py).\"\"\"
    return cfg.lr * optim.lr_factor(progress, cfg.warmup, cfg.final_lr_ratio)

# What this notebook wrote and the recipe does not say: part of the run's id, so that an edit starts a new run.
code = (custom_loss_function, training_step, learning_rate, optimizer)
if PROFILE == "full" and device.type == "cuda":
    cfg = fit_batch_to_gpu(cfg, data, device, step=training_step, code=code)   # batch_size and lr for this GPU
for group in optimizer.param_groups:
    print(f"{type(optimizer).__name__}: {len(group['params'])} tensors, weight decay {group['weight_decay']:g}")
plots.plot_lr_schedule(learning_rate, title=f"Warm-up over {cfg.warmup:.0%} of the run, then cosine from "
                       f"{cfg.lr:g} to {cfg.final_lr_ratio * cfg.lr:g}", save_to=FIGURES)"""),
    ("md", """# 5. Training Loop

`start_run` builds the run, or **resumes** it from its newest checkpoint (model, optimizer, data order, step and
training time; a time budget counts only what is left) and says which. Then, epoch after epoch:
`run.epoch_batches()` hands out the epoch's shuffled batches (until the budget ends); each batch gets the
learning rate of the schedule and one `training_step`; `run.record_step` counts it, logs the loss every few
steps with the images per second and the effective rank of the embeddings (a collapse alarm: it falls towards 1
when the representation collapses), and writes a checkpoint every 10 minutes. Every few epochs the run calls
`evaluation_step` and saves an atomic checkpoint. About a minute in, it prints the measured speed and what the
budget buys. Interrupting the kernel saves a checkpoint first. `run.finish` evaluates and saves once more,
fits `get_features`' statistics on every training image, and writes `final_model.safetensors` (loaded strictly by
`ImageEncoder()`) and `training_metrics.json`, with the run's id, which the weights record too.

The source of `custom_loss_function`, `training_step` and `learning_rate`, and the optimizer's settings (`code`,
Section 4), are part of the run's id: editing them starts a new run folder (the old one stays)."""),
    ("code", """with start_run(cfg, data, model, optimizer, code=code) as run:   # new, or resumed from its newest checkpoint
    while not run.finished:
        for batch in run.epoch_batches():
            optim.set_lr(optimizer, learning_rate(run.progress))
            loss, z0 = training_step(run.model, batch, optimizer, run.generator)
            run.record_step(loss, z0)
        if run.due(cfg.eval_every):
            run.evaluate(evaluation_step)
        if run.due(cfg.checkpoint_every):
            run.save()
    result = run.finish(evaluation_step)
model, history = result.model.eval(), result.history"""),
    ("code", """import shutil
shutil.copy(result.metrics_path, OUTPUT_DIR / "training_metrics.json")
print(f"weights: {result.weights_path}\\nmetrics: {OUTPUT_DIR / 'training_metrics.json'}")"""),
    ("md", """# 6. Visualize Results

Training and validation loss, and the probes over training (ID solid, OOD dashed)."""),
    ("code", """plots.plot_loss_curves(history, save_to=FIGURES)"""),
    ("code", """plots.plot_probe_curves(history, save_to=FIGURES)"""),
    ("md", """## The grader's protocol on the final model

Raw `get_features` of `ToTensor()` images; 5-NN and a logistic regression (C=1, at most 1000 iterations); ID =
fit on train, score on val; OOD = the 80/20 split above. On a GPU the fast torch probes compute the same in
seconds (they agree with scikit-learn's within a point); on small data or the CPU scikit-learn's own are used."""),
    ("code", """exact = len(splits["train"]) <= 20_000 or device.type == "cpu"
final, features = probes.evaluate_encoder(model, splits["train"], splits["val"], splits["ood"], fast=not exact,
                                          progress=True)
print(final)"""),
    ("code", """references = {"random init": random_init, "raw pixels": raw_pixels}
if not embedded:
    references["course SimCLR baseline"] = probes.COURSE_BASELINES
plots.plot_id_vs_ood(final.as_dict(), baselines=references, save_to=FIGURES)"""),
    ("md", """## Predictions

Validation images with the label predicted by the 5-NN probe fitted on the training features (green: correct,
red: wrong, with the true class), and the same for OOD images, predicted from the OOD fitting split."""),
    ("code", """val_split, ood_set = splits["val"], splits["ood"]
val_pred, val_neighbours = probes.knn_predict(features["train"], train_split.labels, features["val"])
plots.plot_prediction_grid(val_split.images, val_split.labels, val_pred.numpy(), val_split.class_names,
                           title="Validation (ID) predictions", save_to=FIGURES, filename="predictions_val.png")"""),
    ("code", """ood_pred, _ = probes.knn_predict(features["ood"][ood_fit], ood_set.labels[ood_fit], features["ood"][ood_score])
plots.plot_prediction_grid(ood_set.images[ood_score], ood_set.labels[ood_score], ood_pred.numpy(),
                           ood_set.class_names, title="OOD predictions (unseen classes)",
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
     "OOD (unseen classes)": (features["ood"], ood_set.labels, ood_set.class_names)},
    max_points=1000 if PROFILE == "short" else 1500, seed=0, save_to=FIGURES)"""),
    ("md", """## Optional: fine-tuning evaluation (not graded)

How far are the frozen features from what labels could make of this network? `utils/finetune.py` fine-tunes a
**copy** of the trained encoder, with a linear head, on the ID training labels for a few epochs, and reports its
ID validation accuracy beside the linear probe on the frozen features, with the fine-tuned copy's confusion figure.

This is an **evaluation only**, not part of the grade: the course forbids labels in training the submitted
encoder. The copy is thrown away; `model` and `final_model.safetensors` are not changed. It says nothing about the
OOD classes, which the grade is about. It trains again, so it is off by default: set `RUN_FINETUNE = True` below.
From a terminal: `python -m utils.finetune --weights final_model.safetensors --data-dir DIR`."""),
    ("code", """RUN_FINETUNE = os.environ.get("CS461_FINETUNE") == "1"   # optional and not graded: off by default
if RUN_FINETUNE:
    from utils.finetune import finetune_evaluation
    tuned = finetune_evaluation(model, splits["train"], splits["val"], device=device, figure_dir=FIGURES,
                                progress=True)
    print(f"ID val accuracy: linear probe on the frozen features {tuned.linear_probe:.1f}%, "
          f"fine-tuned copy {tuned.finetuned:.1f}% (evaluation only, not graded)")
    display(tuned.confusion)
else:
    print("Fine-tuning evaluation skipped (optional, not graded): set RUN_FINETUNE = True to run it.")"""),
    ("md", """# 7. Submission Instructions

Hand in four files in one folder (default `~/cs461_assignment1_submission`): `models.py`,
`final_model.safetensors`, this notebook **executed and saved**, and `report.md` (at most 500 words, with a
discussion of the OOD results). The cell below does it:

1. When *Run All* has finished, **save the notebook** (Ctrl+S), then **run the cell below**. During *Run All* it
   may have refused ("NOT COPIED"): the file on disk was older than this run. That is expected; save and run it.
2. It copies the notebook *as saved on disk*, `models.py`, the weights and the report, then runs `python eval.py`
   on the folder (the grader's checks and its exact protocol; the whole log in `eval_log.txt`) and prints a short
   verdict: the checks that failed or warned, and the four accuracies. The handed-in copy of this notebook ends
   on that verdict: this cell's output is written into it.
3. The first time, it writes `my_report.md` in the output folder: a draft from **your** run's numbers, with places
   marked `<<FILL IN: ...>>` for your discussion. Write it, save it, and run the cell again: `my_report.md` is
   handed in as `report.md` and never overwritten.

Fix anything marked FAIL. Before the deadline, run `python eval.py` once more from a hub terminal, in the kit's
folder (about a minute on the CPU: most of it is the exact linear probe)."""),
    ("code", """SUBMISSION_DIR = Path(os.environ.get("CS461_SUBMISSION_DIR", Path.home() / "cs461_assignment1_submission"))
NOTEBOOK_PATH = Path(os.environ.get("CS461_NOTEBOOK_PATH", "CS461_Assignment1.ipynb"))
handed_in = hand_in(SUBMISSION_DIR, weights=result.weights_path, metrics=OUTPUT_DIR / "training_metrics.json",
                    notebook=NOTEBOOK_PATH, output_dir=OUTPUT_DIR, data_dir=DATA_DIR,
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


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
