"""The kit's package. Where each step lives:

    data.py       npz loading + validation, data-directory resolution, the OOD split, device batches
    synthetic.py  the embedded default data set (course format, generated, deterministic)
    shapes.py     its world: shapes, textures and parts as signed distances in object-local coordinates
    augment.py    batched views with per-sample random parameters, on the data's device
    losses.py     NT-Xent (and DCL), VICReg, SIGReg / LeJEPA, DINO's cross-entropy as small pure functions
    train.py      the loop, top to bottom in train() (also `python -m utils.train key=value ...`)
    config.py     TrainConfig (every setting), key=value parsing, the run's folder
    steps.py      one training step, DINO's step, the validation loss, code_signature
    run_state.py  what a checkpoint holds to resume exactly;  memory.py: batch fitting, out-of-memory advice
    device.py     the one device chooser; a step's measured memory and the batch that fits it
    recipes.py    named recipes (the shipped one, the CPU profile, benchmark variants) and benchmark suites
    ema.py        an exponential moving average of the weights;  dino.py: DINO's head, teacher and centre
    optim.py      warmup + cosine schedule, AdamW / LARS;  monitor.py: collapse statistics
    checkpoint.py atomic checkpoints, safetensors export and strict loading
    probes.py     k-NN / linear probes: course-exact (scikit-learn) and fast (torch), the grader's protocol
    plots.py      curves, prediction grids, ID-vs-OOD, embedding figures, confusion, neighbours
    submission/   assemble and check the submission folder (eval.py is its command line), one module per concern
    provenance.py device, commit and date recorded with every measured figure
    headless.py   the notebook executed headless in a fresh kernel (make demo's tools/demo.py, tests)
    embedding.py  t-SNE / UMAP coordinates;  explorer.py: the nearest-neighbour explorer (widget or static)
    environment.py  the kernel's Python, torch, GPU and packages (the notebook's first cell); optional imports
    progress.py   progress bars: tqdm, quiet in logs, or a plain printed line without tqdm

The course's names are importable from here, with the course's signatures and behaviour, so a notebook
written for the course runs unchanged:

    from utils import ImageDatasetNPZ, default_transform, extract_features_and_labels, run_knn_probe, \
        run_linear_probe, seed_all

They are imported on first use: `import utils` itself imports nothing heavy, so that the notebook's first
cell (utils.environment.check_environment) runs even in a kernel that lacks torch, and says so.
"""
import importlib

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
