"""The kit's package. Where each step lives:

    data.py       npz loading + validation, data-directory resolution, the OOD split, device batches
    synthetic.py  the embedded default data set (course format, generated, deterministic)
    augment.py    batched views with per-sample random parameters, on the data's device
    losses.py     NT-Xent, VICReg, SIGReg / LeJEPA as small pure functions
    train.py      config, step, loop, checkpoints, resume, time budget (also `python -m utils.train`)
    optim.py      warmup + cosine schedule, AdamW / LARS;  monitor.py: collapse statistics
    checkpoint.py atomic checkpoints, safetensors export and strict loading
    probes.py     k-NN / linear probes: course-exact (scikit-learn) and fast (torch), the grader's protocol
    plots.py      curves, prediction grids, ID-vs-OOD, t-SNE/UMAP, confusion, neighbours, explorer
    submit.py     assemble and check the submission folder (eval.py is its command line)
    provenance.py device, commit and date recorded with every measured figure
    demo.py       `make demo`: the notebook executed headless, then eval.py, then a results record

The course's names are importable from here, with the course's signatures and behaviour, so a notebook
written for the course runs unchanged:

    from utils import ImageDatasetNPZ, default_transform, extract_features_and_labels, run_knn_probe, \
        run_linear_probe, seed_all
"""
from utils.data import ImageDatasetNPZ, default_transform, load_splits, ood_split, resolve_data_dir
from utils.probes import extract_features_and_labels, run_knn_probe, run_linear_probe
from utils.train import seed_all

__all__ = ["ImageDatasetNPZ", "default_transform", "extract_features_and_labels", "run_knn_probe",
           "run_linear_probe", "seed_all", "load_splits", "ood_split", "resolve_data_dir"]
