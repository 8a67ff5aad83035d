"""The kit's package, in layers: a module imports modules of its own layer or lower, never one above, and the
imports form no circle (at module level or inside functions; tests/test_layers.py reads every import). LAYERS
below is the order, written once; models.py is under everything, and eval.py, tools/ and benchmarks/ are entry
points above it all.

layer 1: what reads, writes and transforms, knowing nothing of training or grading
    data.py        npz loading + validation, data-directory resolution, the OOD split, the one row sampler
                   (spread_rows) and the one uint8 -> float conversion (as_model_input)
    synthetic.py   the embedded default data set (course format, generated, deterministic);  shapes.py: its world
    augment.py     batched views with per-sample random parameters, on the data's device
    losses.py      NT-Xent (and DCL), VICReg, SIGReg / LeJEPA, DINO's cross-entropy as small pure functions
    optim.py       warmup + cosine schedule, AdamW / LARS;  monitor.py: collapse statistics
    ema.py         an exponential moving average of the weights;  dino.py: DINO's head, teacher and centre
    device.py      the one device chooser; a step's measured memory and the batch that fits it
    distributed.py data-parallel training under torchrun: the ranks, DDP, the global batch split and gathered
    checkpoint.py  every read and write of a checkpoint or weights file: atomic checkpoints, the one safetensors
                   reader, the one encoder export with its metadata, get_features' statistics keys
    progress.py    progress bars;  provenance.py: device, commit and date recorded with every measured figure
    environment.py the kernel's Python, torch, GPU and packages (the notebook's first cell); optional imports
    notebook_file.py  the notebook's file read as JSON: cells, numbered sections, the identity cell
    headless.py    the notebook executed headless in a fresh kernel (make demo's tools/demo.py, tests)
layer 2: the grader's protocol, get_features' statistics, and the parts of a run
    probes.py      k-NN / linear probes: course-exact (scikit-learn) and fast (torch); the grader's protocol and
                   its constants (batch 64, k, C, max_iter)
    features.py    fitting get_features' training statistics (and `python -m utils.features`, which adds them)
    embedding.py   t-SNE / UMAP coordinates
    config.py      TrainConfig (every setting; the shipped recipe SHIPPED), the named recipes, key=value parsing,
                   the run's folder
    steps.py       the engine's own step, loss and networks (the notebook writes its own), DINO's step, the
                   validation loss, code_signature
    run_state.py   a run's state: how a step and an epoch change it, what a checkpoint holds to resume exactly
    memory.py      batch fitting to the free GPU memory, out-of-memory advice
    budget.py      the speed and budget plan printed early in a run
layer 3: the engine and the pictures
    train.py       the run (start_run) and the loop over it: the notebook's Section 5 writes it out, train()
                   runs the same statements (`python -m utils.train key=value ...`, and under torchrun)
    finetune.py    the optional fine-tuning evaluation (not graded)
    plots.py       curves, prediction grids, ID-vs-OOD, embedding figures, confusion, neighbours
    explorer.py    the nearest-neighbour explorer (widget or static)
layer 4: the hand-in
    submission/    assemble and check the submission folder (eval.py is its command line), one module per
                   concern; grader.py runs the course grader's own sequence (grader_replica/, not a module of
                   this package: the course's eval.py and utils.py as a replica, run in a folder of their own)

The course's names are importable from here, with the course's signatures and behaviour, so a notebook
written for the course runs unchanged:

    from utils import ImageDatasetNPZ, default_transform, extract_features_and_labels, run_knn_probe, \
        run_linear_probe, seed_all

They are imported on first use: `import utils` itself imports nothing heavy, so that the notebook's first
cell (utils.environment.check_environment) runs even in a kernel that lacks torch, and says so.
"""
import importlib

# The layer of each module of the package (tests/test_layers.py checks every import against it). "models" is
# models.py at the top of the checkout; the submission package is one layer, all its modules.
LAYERS = {
    "models": 0,
    **dict.fromkeys(("data", "synthetic", "shapes", "augment", "losses", "optim", "monitor", "ema", "dino",
                     "device", "distributed", "checkpoint", "progress", "provenance", "environment", "notebook_file",
                     "headless"), 1),
    **dict.fromkeys(("probes", "features", "embedding", "config", "steps", "run_state", "memory", "budget"), 2),
    **dict.fromkeys(("train", "finetune", "plots", "explorer"), 3),
    "submission": 4,
}

# name -> the module that defines it
_LAZY = {"ImageDatasetNPZ": "utils.data", "default_transform": "utils.data", "load_splits": "utils.data",
         "ood_split": "utils.data", "resolve_data_dir": "utils.data", "extract_features_and_labels": "utils.probes",
         "run_knn_probe": "utils.probes", "run_linear_probe": "utils.probes", "seed_all": "utils.train"}

__all__ = ["ImageDatasetNPZ", "default_transform", "extract_features_and_labels", "run_knn_probe",
           "run_linear_probe", "seed_all", "load_splits", "ood_split", "resolve_data_dir"]


def __getattr__(name: str):
    """The course's names, imported from their module on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value   # later lookups skip this function
    return value
