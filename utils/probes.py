"""Probes: how good are an encoder's features? k-NN and linear classifiers on frozen features.

Two layers live here.

1. The course's functions, same names, signatures and results as the course's `utils.py`, so that students'
   notebooks run unchanged: `extract_features_and_labels`, `run_knn_probe`, `run_linear_probe`. The probes
   return a FRACTION in [0, 1] (0.3612), exactly like the course's; they run the exact path below. (The
   independent reference they are tested against is the grader replica, utils/submission/grader_replica/.)

2. The project's API, which says what it does in its name and returns PERCENT (36.12):
   - `encode_images(model, images)`: uint8 (N, 64, 64, 3) images -> (N, D) features, exactly the grader's
     input (ToTensor: x / 255, no mean/std), in eval mode, float32.
   - `knn_predict` / `fit_linear_probe`: torch versions of scikit-learn's 5-NN classifier
     and logistic regression (max_iter=1000) that run on the features' device (seconds on a GPU).
   - `knn_accuracy` / `linear_accuracy`: percent, with `fast=True` (torch) or `fast=False` (scikit-learn,
     exactly the course's probes).
   - `evaluate_protocol`: the grader's whole protocol (ID: fit on train, score on val; OOD: the course's 80/20
     split of the OOD set) on features, as one call returning a `ProtocolResult`.
   - `evaluate_encoder`: encode the three splits, then `evaluate_protocol`: the one "encode and probe" that the
     periodic evaluation, the notebook's Section 6, eval.py and the command line call.

3. A command line for a saved weights file (eval.py checks a whole submission folder; this scores one file):

       python -m utils.probes --weights runs/ntxent-1234abcd/final_model.safetensors --data-dir DIR [--fast]

Speed: scikit-learn's probes (fast=False) on course-sized data (100k x 1000 features, 200 classes) take many
minutes on a CPU, the logistic regression most of all. The fast torch paths are meant for a GPU (seconds); on
a CPU they do the same amount of work as scikit-learn (the k-NN in float64 there, for exact agreement), so
they are fine for small data and no faster than scikit-learn on 100k.

Labels are arbitrary integers (the course's are ImageNet ids such as 3, 17, 998): nothing here assumes
0..C-1. Classes are always the sorted unique training labels, as in scikit-learn.

Why one module of about 700 lines: it is the one definition of the grader's probes. The course's functions,
the torch probes that must agree with scikit-learn's (tie-breaking, the logistic loss's parametrisation, the
stopping rule) and the protocol that runs them are kept side by side so that a change to one is made, and
tested, against the others.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils.data import as_model_input, ood_split
from utils.device import pick_device
from utils.progress import progress_bar

# The grader's protocol, written once (the course's eval.py and utils.py): features in batches of 64, 5-NN (Euclidean, uniform
# vote), LogisticRegression with C=1 and max_iter=1000 (lbfgs, L2, no scaling). Everything else reads these.
GRADER_BATCH_SIZE = 64
KNN_K = 5
LINEAR_C = 1.0
LINEAR_MAX_ITER = 1000
# The course's baseline under this protocol (percent; the SimCLR of the week-3 notebook, measured by a student):
# the notebook's ID-vs-OOD figure and the report draft compare with it.
COURSE_BASELINES = {"id_knn": 18.0, "ood_knn": 12.0, "ood_linear": 19.0}

# Largest (queries x train points) distance block held at once by knn_predict: 2**26 entries is 256 MB in
# float32 (GPU) and 512 MB in float64 (CPU). With 100k training points this means ~670 queries per block.
MAX_DISTANCE_BLOCK = 2 ** 26

# scipy's L-BFGS-B ftol as scikit-learn sets it (64 float64 epsilons): stop when the loss no longer moves.
_FTOL = 64 * float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------------------
# 1. The course's functions (fractions; same behaviour as the course's utils.py)
# ----------------------------------------------------------------------------------------------------------

def extract_features_and_labels(model, dataloader, normalize=False):
    """The course's feature extraction: `model.get_features` over a DataLoader, under torch.no_grad().

    Each batch `(x, y)` from the loader: x (B, 3, H, W) float goes to the model's device, features come back
    to the CPU. Returns `(features (N, D) float CPU tensor, labels (N,) CPU tensor)`, labels concatenated as
    the loader gives them. With normalize=True the features are L2-normalised per row (the grader does NOT
    normalise: numbers computed on normalised features are not the grader's numbers).

    Pitfall, kept on purpose because the course's function behaves this way: it does NOT call model.eval().
    A model left in train mode extracts features with batch-norm batch statistics (and active dropout), which
    differ from the grader's. Call `model.eval()` first, or use `encode_images`, which does it for you.
    """
    device = next(model.parameters()).device
    features, labels = [], []
    with torch.no_grad():
        for x, y in dataloader:
            features.append(model.get_features(x.to(device)).cpu())
            labels.append(torch.as_tensor(y).cpu())
    features = torch.cat(features)
    labels = torch.cat(labels)
    if normalize:
        features = F.normalize(features, dim=1)
    return features, labels


def run_knn_probe(train_features, train_labels, test_features, test_labels):
    """The course's k-NN probe: scikit-learn's KNeighborsClassifier, 5 neighbours (Euclidean, uniform vote), through
    `knn_accuracy(fast=False)`. Returns the accuracy as a FRACTION in [0, 1], like the course's."""
    return knn_accuracy(train_features, train_labels, test_features, test_labels, fast=False) / 100


def run_linear_probe(train_features, train_labels, test_features, test_labels):
    """The course's linear probe: scikit-learn's LogisticRegression, max_iter=1000 (lbfgs, multinomial, L2, C=1, no feature
    scaling), through `linear_accuracy(fast=False)`. Returns the accuracy as a FRACTION in [0, 1]."""
    return linear_accuracy(train_features, train_labels, test_features, test_labels, fast=False) / 100


# ----------------------------------------------------------------------------------------------------------
# 2a. Encoding images exactly as the grader does
# ----------------------------------------------------------------------------------------------------------

def encode_images(model, images, *, batch_size: int = 256, device=None, progress: bool = False) -> torch.Tensor:
    """Features of uint8 images as the grader computes them: (N, H, W, 3) uint8 -> (N, D) float32 on the CPU.

    `images`: uint8, HWC, RGB, as numpy array or torch tensor (a tensor may already be on the device). Each
    batch is converted like torchvision's ToTensor: `x.float() / 255`, permuted to (B, 3, H, W); no mean/std
    normalisation. `model.get_features` runs under torch.inference_mode, in float32 (autocast off, full fp32
    matmuls), with the model in eval() mode; each submodule's train/eval mode is restored afterwards.
    `device` defaults to the model's device. `progress=True` shows a progress bar.
    """
    _check_images(images)
    device = torch.device(device) if device is not None else _model_device(model)
    saved_modes = {module: module.training for module in model.modules()}
    model.eval()
    chunks = []
    try:
        with torch.inference_mode(), _fp32_exact(), torch.autocast(device.type, enabled=False):
            starts = range(0, len(images), batch_size)
            for start in progress_bar(starts, desc="encode", disable=not progress, leave=False):
                batch = torch.as_tensor(images[start:start + batch_size]).to(device, non_blocking=True)
                x = as_model_input(batch).contiguous()
                chunks.append(model.get_features(x).float().cpu())
    finally:
        for module, was_training in saved_modes.items():
            module.train(was_training)
    if not chunks:
        raise ValueError("encode_images: expected at least one image, found an empty array")
    return torch.cat(chunks)  # outside inference_mode: an ordinary tensor


def _check_images(images) -> None:
    dtype_ok = images.dtype in (np.uint8, torch.uint8)
    if not dtype_ok or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"encode_images: expected uint8 images of shape (N, H, W, 3) (HWC, RGB, as in the "
                         f"course's npz files), found dtype {images.dtype} and shape {tuple(images.shape)}")


def _model_device(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def _fp32_exact():
    """Full-precision float32 matmuls inside (no TF32), whatever training set globally: TF32 keeps ~10 bits
    of mantissa, enough to reorder near neighbours and to stall lbfgs. Restores the previous setting."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# ----------------------------------------------------------------------------------------------------------
# 2b. Checking and converting (features, labels)
# ----------------------------------------------------------------------------------------------------------

def _as_features(name: str, features) -> torch.Tensor:
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, D) feature array, found shape {tuple(features.shape)}")
    if not features.is_floating_point():
        features = features.float()
    return features


def _as_labels(name: str, labels, n: int) -> torch.Tensor:
    try:
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected integer class labels, could not convert them ({err})") from err
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name}: expected a 1-D array of integer labels, found dtype {labels.dtype} "
                         f"and shape {tuple(labels.shape)}")
    if len(labels) != n:
        raise ValueError(f"{name}: features/labels length mismatch: {n} feature rows but {len(labels)} labels")
    return labels


def _check_same_dim(train_f: torch.Tensor, test_f: torch.Tensor) -> None:
    if train_f.shape[1] != test_f.shape[1]:
        raise ValueError(f"train features have {train_f.shape[1]} dimensions but test features have "
                         f"{test_f.shape[1]}: both must come from the same encoder")


def _knn_dtype(device: torch.device, dtype) -> torch.dtype:
    """float64 on the CPU (scikit-learn's k-NN computes distances in float64 even for float32 features, and
    the CPU cost is small next to the matmul), float32 on a GPU (fast; centring keeps the ranking exact but
    for near-ties)."""
    if dtype is not None:
        return dtype
    return torch.float64 if device.type == "cpu" else torch.float32


# ----------------------------------------------------------------------------------------------------------
# 2c. k-NN on the device
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def knn_predict(train_f, train_y, test_f, *, k: int = KNN_K, chunk_size: int = 2048, dtype=None):
    """k-nearest-neighbour classification, the same predictions as scikit-learn's KNeighborsClassifier with n_neighbors=k.

    train_f (N, D), train_y (N,) integer labels (any values), test_f (M, D): tensors or numpy arrays.
    Computed on train_f's device (test_f is moved there chunk by chunk), in float64 on a CPU and float32 on
    a GPU unless `dtype` says otherwise. Returns (pred_labels (M,), neighbour_idx (M, k)), on that device;
    neighbour_idx holds row indices into train_f, nearest first.

    Distances: squared Euclidean via ||b||^2 - 2 a.b (the ||a||^2 term is the same for every candidate of a
    query, so it cannot change the ranking), after subtracting the training mean from both sides to limit
    cancellation. Vote: uniform over the k neighbours; among tied classes the smallest label wins, as in
    scikit-learn (it encodes labels as sorted classes_ and takes the first maximum).
    Exact distance ties between training points are broken arbitrarily here and in scikit-learn alike.
    """
    train_f = _as_features("train features", train_f)
    test_f = _as_features("test features", test_f)
    train_y = _as_labels("train labels", train_y, len(train_f))
    _check_same_dim(train_f, test_f)
    if not 1 <= k <= len(train_f):
        raise ValueError(f"knn_predict: expected 1 <= k <= number of training points ({len(train_f)}), "
                         f"found k={k}")

    device = train_f.device
    dtype = _knn_dtype(device, dtype)
    classes, train_class_idx = torch.unique(train_y.to(device), sorted=True, return_inverse=True)
    center = train_f.to(dtype).mean(dim=0)
    train = train_f.to(dtype) - center
    train_sq = (train * train).sum(dim=1)  # (N,)

    rows = max(1, min(chunk_size, MAX_DISTANCE_BLOCK // len(train)))
    preds, neighbours = [], []
    with _fp32_exact():
        for start in range(0, len(test_f), rows):
            query = test_f[start:start + rows].to(device=device, dtype=dtype) - center
            # (rows, N): squared distance minus the query's own ||a||^2
            scores = torch.addmm(train_sq, query, train.T, beta=1, alpha=-2)
            idx = scores.topk(k, dim=1, largest=False, sorted=True).indices
            votes = torch.zeros(len(query), len(classes), device=device)
            votes.scatter_add_(1, train_class_idx[idx], torch.ones(idx.shape, device=device))
            preds.append(classes[votes.argmax(dim=1)])  # argmax returns the first maximum: smallest label
            neighbours.append(idx)
    if not preds:
        return classes[:0], torch.empty(0, k, dtype=torch.long, device=device)
    return torch.cat(preds), torch.cat(neighbours)


# ----------------------------------------------------------------------------------------------------------
# 2d. The linear probe on the device: scikit-learn's LogisticRegression objective, minimised by torch LBFGS
# ----------------------------------------------------------------------------------------------------------

@dataclass
class LinearProbe:
    """A fitted multinomial logistic regression. W (K, D), b (K,), classes (K,) sorted labels.

    For two classes it holds scikit-learn's binary model as W = [0; w], b = [0; b0]: softmax of
    [0, w.x + b0] is exactly [1 - sigmoid, sigmoid].
    """
    W: torch.Tensor
    b: torch.Tensor
    classes: torch.Tensor
    objective: float = float("nan")   # final value of the minimised objective (see logistic_objective)
    n_iter: int = 0                   # LBFGS iterations used
    converged: bool = True            # stopped by tolerance before max_iter

    def decision_function(self, x) -> torch.Tensor:
        """(M, D) features -> (M, K) logits, on W's device."""
        x = _as_features("features", x).to(device=self.W.device, dtype=self.W.dtype)
        if x.shape[1] != self.W.shape[1]:
            raise ValueError(f"LinearProbe expects {self.W.shape[1]}-dimensional features, found {x.shape[1]}")
        with torch.no_grad(), _fp32_exact():
            return torch.addmm(self.b, x, self.W.T)

    def predict(self, x) -> torch.Tensor:
        """(M, D) features -> (M,) labels (values from `classes`)."""
        return self.classes[self.decision_function(x).argmax(dim=1)]

    def predict_proba(self, x) -> torch.Tensor:
        """(M, D) features -> (M, K) class probabilities, columns in the order of `classes`."""
        return torch.softmax(self.decision_function(x), dim=1)


def logistic_objective(W, b, features, class_idx, *, C: float = 1.0) -> float:
    """scikit-learn's lbfgs LogisticRegression objective, divided by N, in float64:

        mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C N)

    (sklearn minimises sum_i CE_i + ||W||^2 / (2C); its _logistic.py passes l2_reg_strength = 1 / (C * N)
    to a loss that averages over samples and adds l2_reg_strength / 2 * ||W||^2. The intercept is not
    penalised.) W (K, D), b (K,), features (N, D), class_idx (N,) in 0..K-1 (positions in sorted classes).
    For a binary scikit-learn model (coef_ (1, D)) pass W = [0; coef_], b = [0, intercept_].
    """
    W, b = torch.as_tensor(W, dtype=torch.float64).cpu(), torch.as_tensor(b, dtype=torch.float64).cpu()
    x = torch.as_tensor(features).to(device="cpu", dtype=torch.float64)
    y = torch.as_tensor(class_idx).to("cpu").long()
    with torch.no_grad():
        return float(_objective(x @ W.T + b, y, W, C, len(x)))


def _objective(logits: torch.Tensor, class_idx: torch.Tensor, W: torch.Tensor, C: float, n: int) -> torch.Tensor:
    return F.cross_entropy(logits, class_idx) + (W * W).sum() / (2.0 * C * n)


def fit_linear_probe(train_f, train_y, *, C: float = LINEAR_C, max_iter: int = LINEAR_MAX_ITER, tol: float = 1e-5,
                     history_size: int = 10, dtype=None, tolerance_change=None) -> LinearProbe:
    """Fit scikit-learn's LogisticRegression model (C, max_iter, tol as given) with torch LBFGS.

    train_f (N, D) features, train_y (N,) integer labels (any values). Minimises exactly scikit-learn's
    objective (see `logistic_objective`): mean cross-entropy + ||W||^2 / (2 C N), intercept unpenalised, no
    feature scaling, starting from zeros; two classes use scikit-learn's binary parametrisation (one weight
    vector). Full batch on train_f's device, in float32 (as scikit-learn does for float32 features) unless
    `dtype` says otherwise: float64 reached the same objective to 1e-6 relative in our checks, at twice the
    cost, and float32 everywhere means the CPU tests exercise the numerics the GPU runs.

    Stopping: max |gradient| <= tol (scipy's pgtol, the criterion scikit-learn uses), a loss change below
    `tolerance_change` (default 64 float64 epsilons, scipy's ftol; in float32 this means "no change at all":
    a float32 threshold of 64 float32 epsilons stopped ill-conditioned fits ~1% above sklearn's objective),
    or max_iter iterations (then a RuntimeWarning, like scikit-learn's ConvergenceWarning).
    tol defaults to 1e-5, ten times tighter than scikit-learn's 1e-4: at 1e-4 lbfgs stops anywhere in the
    flat bottom of the objective (sklearn's own answer moves by up to ~0.7 accuracy points between 1e-4 and
    the true minimum), so the tighter tolerance lands on the minimum itself, with an objective <= sklearn's.
    On a GPU course-sized data (100k x 1000, 200 classes) takes seconds; on a CPU it is as slow as sklearn.
    """
    train_f = _as_features("train features", train_f)
    train_y = _as_labels("train labels", train_y, len(train_f))
    device = train_f.device
    dtype = dtype or torch.float32
    classes, class_idx = torch.unique(train_y.to(device), sorted=True, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"fit_linear_probe: expected at least 2 classes in the labels, found {len(classes)}")
    x = train_f.to(dtype)
    n, d = x.shape
    binary = len(classes) == 2
    n_free = 1 if binary else len(classes)  # binary: one weight vector for class 1 vs class 0, as sklearn

    W = torch.zeros(n_free, d, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(n_free, device=device, dtype=dtype, requires_grad=True)

    def logits_of(W, b):
        z = torch.addmm(b, x, W.T)
        return torch.cat([torch.zeros_like(z), z], dim=1) if binary else z

    optimizer = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=15 * max_iter,
                                  tolerance_grad=tol,
                                  tolerance_change=_FTOL if tolerance_change is None else tolerance_change,
                                  history_size=history_size, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _objective(logits_of(W, b), class_idx, W, C, n)
        loss.backward()
        return loss

    with _fp32_exact():
        optimizer.step(closure)
        with torch.no_grad():
            final = float(_objective(logits_of(W, b), class_idx, W, C, n))
    n_iter = int(optimizer.state[W].get("n_iter", 0))
    converged = n_iter < max_iter
    if not converged:
        warnings.warn(f"fit_linear_probe: LBFGS reached max_iter={max_iter} before the gradient tolerance "
                      f"{tol} (as scikit-learn's ConvergenceWarning); raise max_iter for a tighter fit",
                      RuntimeWarning, stacklevel=2)

    W, b = W.detach(), b.detach()
    if binary:
        W = torch.cat([torch.zeros_like(W), W])
        b = torch.cat([torch.zeros_like(b), b])
    return LinearProbe(W=W, b=b, classes=classes, objective=final, n_iter=n_iter, converged=converged)


# ----------------------------------------------------------------------------------------------------------
# 2e. Accuracies in percent, fast (torch) or exact (scikit-learn, as the course)
# ----------------------------------------------------------------------------------------------------------

def knn_accuracy(train_f, train_y, test_f, test_y, *, k: int = KNN_K, fast: bool = True, device=None) -> float:
    """k-NN accuracy in PERCENT (36.12, not 0.3612).

    fast=True: `knn_predict` on `device` (None: the GPU when there is one, else the CPU).
    fast=False: scikit-learn's KNeighborsClassifier with n_neighbors=k, the course's probe (slow on a CPU for
    course-sized data: minutes).
    """
    train_f, train_y, test_f, test_y = _checked_pairs(train_f, train_y, test_f, test_y)
    if not fast:
        KNeighborsClassifier, _ = course_sklearn()
        knn = KNeighborsClassifier(n_neighbors=k, n_jobs=-1).fit(*_as_the_course_hands_them(train_f, train_y))
        return _percent(torch.as_tensor(knn.predict(_as_the_course_hands_them(test_f))), test_y)
    device = pick_device(device)   # None: the GPU when there is one (the fast path is meant for it)
    pred, _ = knn_predict(train_f.to(device), train_y.to(device), test_f, k=k)
    return _percent(pred, test_y)


def linear_accuracy(train_f, train_y, test_f, test_y, *, fast: bool = True, C: float = LINEAR_C,
                    max_iter: int = LINEAR_MAX_ITER, device=None) -> float:
    """Linear-probe accuracy in PERCENT.

    fast=True: `fit_linear_probe` on `device` (None: the GPU when there is one, else the features' device).
    fast=False: scikit-learn's LogisticRegression with C and max_iter, the course's probe (many minutes
    on a CPU for course-sized data). `linear_probe_run` also says how many lbfgs iterations it took.
    """
    return linear_probe_run(train_f, train_y, test_f, test_y, fast=fast, C=C, max_iter=max_iter,
                            device=device)["accuracy"]


def linear_probe_run(train_f, train_y, test_f, test_y, *, fast: bool = True, C: float = LINEAR_C,
                     max_iter: int = LINEAR_MAX_ITER, device=None) -> dict:
    """`linear_accuracy` with the optimiser's record: {"accuracy" (percent), "lbfgs_iter", "converged"}.
    converged is False when lbfgs stopped at max_iter (scikit-learn's ConvergenceWarning, silenced here because
    it is recorded instead)."""
    train_f, train_y, test_f, test_y = _checked_pairs(train_f, train_y, test_f, test_y)
    if not fast:
        from sklearn.exceptions import ConvergenceWarning
        _, LogisticRegression = course_sklearn()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=C, max_iter=max_iter).fit(*_as_the_course_hands_them(train_f, train_y))
        n_iter = int(np.max(clf.n_iter_))
        pred = torch.as_tensor(clf.predict(_as_the_course_hands_them(test_f)))
    else:
        device = pick_device(device)   # None: the GPU when there is one (the fast path is meant for it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            probe = fit_linear_probe(train_f.to(device), train_y.to(device), C=C, max_iter=max_iter)
        n_iter, pred = probe.n_iter, probe.predict(test_f)
    return {"accuracy": _percent(pred, test_y), "lbfgs_iter": n_iter, "converged": n_iter < max_iter}


def course_sklearn():
    """(KNeighborsClassifier, LogisticRegression) as the course's utils.py gets them: with Intel's extension for
    scikit-learn patched in first when it is installed (the course hub has it; its logistic regression ends a few
    tenths of a point away from scikit-learn's own, benchmarks/results/sklearnex-shipped-tiny64-2026-12-07.json).
    `sklearn_backend()` says which ran."""
    global _SKLEARNEX
    if _SKLEARNEX is None:
        try:
            from sklearnex import patch_sklearn
        except ImportError:
            _SKLEARNEX = ""
        else:
            from utils.environment import installed_version
            patch_sklearn()
            _SKLEARNEX = installed_version("scikit-learn-intelex") or "(version unknown)"
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier, LogisticRegression


_SKLEARNEX = None   # the extension's version once course_sklearn() has looked ("" when it is not installed)


def sklearn_backend() -> str:
    """Which scikit-learn the exact probes use: "scikit-learn X" or "scikit-learn X with Intel's extension Y"."""
    import sklearn
    course_sklearn()
    return f"scikit-learn {sklearn.__version__}" + (f" with Intel's extension {_SKLEARNEX}" if _SKLEARNEX else "")


def _as_the_course_hands_them(*arrays):
    """CPU torch tensors, as the course's extract_features_and_labels returns them to scikit-learn. Not numpy: for
    a float32 torch tensor scikit-learn's input check sees no numpy dtype and converts to float64, while float32
    numpy stays float32, and the logistic regression then ends elsewhere (a few tenths of a point apart on weakly
    trained features)."""
    tensors = tuple(torch.as_tensor(a).detach().cpu() for a in arrays)
    return tensors if len(tensors) > 1 else tensors[0]


def _checked_pairs(train_f, train_y, test_f, test_y):
    train_f = _as_features("train features", train_f)
    test_f = _as_features("test features", test_f)
    train_y = _as_labels("train labels", train_y, len(train_f))
    test_y = _as_labels("test labels", test_y, len(test_f))
    _check_same_dim(train_f, test_f)
    if len(test_f) == 0:
        raise ValueError("expected at least one test point to score, found none")
    return train_f, train_y, test_f, test_y


def _percent(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return 100.0 * float((pred.cpu() == truth.cpu()).double().mean())


# ----------------------------------------------------------------------------------------------------------
# 2f. The grader's protocol
# ----------------------------------------------------------------------------------------------------------

# The grader's four probes, in its order: (key, label, probe kind, which sets).
PROBE_STEPS = (("id_knn", "ID k-NN", "knn", "id"), ("id_linear", "ID linear", "linear", "id"),
               ("ood_knn", "OOD k-NN", "knn", "ood"), ("ood_linear", "OOD linear", "linear", "ood"))
PROBE_LABELS = {key: label for key, label, _, _ in PROBE_STEPS}     # {"id_knn": "ID k-NN", ...}


@dataclass
class ProtocolResult:
    """The grader's four numbers, in PERCENT, with timings, set sizes and the linear probes' lbfgs records.

    id_*: probes fit on train features, scored on val (None when no ID sets were given). ood_*: the course's OOD
    split (80% fit, 20% score); with several OOD draws, the mean over them (each one in `ood_draws`).
    seconds: wall time per step (encode_* when evaluate_encoder encoded the images, then the probes).
    lbfgs_iter / converged: per linear step (the largest iteration count over the draws; converged only when
    every draw converged).
    """
    id_knn: float | None
    id_linear: float | None
    ood_knn: float | None
    ood_linear: float | None
    fast: bool
    n_train: int
    n_val: int
    n_ood_fit: int
    n_ood_score: int
    seconds: dict = field(default_factory=dict)
    ood_draws: list = field(default_factory=list)
    lbfgs_iter: dict = field(default_factory=dict)
    converged: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def accuracies(self) -> dict[str, float]:
        """{"id_knn", "id_linear", "ood_knn", "ood_linear"}: the four numbers, in percent."""
        return {key: getattr(self, key) for key in ("id_knn", "id_linear", "ood_knn", "ood_linear")}

    def __str__(self) -> str:
        how = "fast torch probes" if self.fast else "scikit-learn probes (as the course)"
        total = sum(self.seconds.values())
        show = lambda v: f"{v:>11.2f}%" if v is not None else f"{'-':>12}"  # noqa: E731
        draws = f" (mean of {len(self.ood_draws)} draws)" if len(self.ood_draws) > 1 else ""
        return "\n".join([
            f"Probe protocol ({how}; {total:.1f} s)",
            f"{'':24}{'k-NN (k=5)':>12}{'linear':>10}",
            f"{'ID  (train -> val)':24}{show(self.id_knn)}{show(self.id_linear)[2:]}",
            f"{'OOD (80% -> 20%)':24}{show(self.ood_knn)}{show(self.ood_linear)[2:]}{draws}",
            f"n: train {self.n_train}, val {self.n_val}, OOD fit {self.n_ood_fit}, OOD score {self.n_ood_score}",
            "seconds: " + ", ".join(f"{step} {s:.2f}" for step, s in self.seconds.items()),
        ])


def evaluate_protocol(train, val, ood, *, fast: bool = True, progress: bool = True, device=None,
                      max_iter: int = LINEAR_MAX_ITER, kinds: tuple = ("knn", "linear"), on_step=None) -> ProtocolResult:
    """The grader's protocol on features already extracted (raw get_features outputs, (N, 1000)). The one
    implementation: eval.py, the training engine's periodic probes, the notebook and the benchmarks call it.

    train, val: (features (N, D), labels (N,)) pairs, or both None to skip the ID probes. ood: one pair, a
    list of pairs (several OOD draws: the OOD numbers are then their mean), or None to skip the OOD probes. ID: probes fit on train, scored on
    val. OOD: `ood_split(len(ood))` (the course's RandomState(42) permutation): fit on 80%, score on the 20%.
    fast=True runs the torch probes on `device` (None: the GPU when there is one); fast=False runs scikit-learn
    exactly like the course, which on course-sized data takes many minutes on a CPU. max_iter: the logistic
    regression's (the grader's is 1000; the periodic probes use fewer). kinds: which probes ("knn", "linear").
    on_step(event): called before ({"event": "start", ...}) and after ({"event": "done", "accuracy", "seconds",
    ...}) each probe, with "key", "label", "n_fit", "n_score", "draw": for progress lines (eval.py).
    """
    id_sets = None
    if train is not None or val is not None:
        train_f, train_y = _as_pair("train", train)
        val_f, val_y = _as_pair("val", val)
        id_sets = ((train_f, train_y), (val_f, val_y))
    if ood is None:
        draws = []
    elif isinstance(ood, tuple):
        draws = [_as_pair("ood", ood)]
    else:
        draws = [_as_pair(f"ood[{i}]", d) for i, d in enumerate(ood)]
    if not draws and not id_sets:
        raise ValueError("evaluate_protocol: expected ID (train, val) pairs or at least one OOD pair, found none")
    reference = id_sets[0][0] if id_sets else draws[0][0]
    for name, f in ([("val", id_sets[1][0])] if id_sets else []) + [("ood", d[0]) for d in draws]:
        if f.shape[1] != reference.shape[1]:
            raise ValueError(f"{name} features have {f.shape[1]} dimensions, train features {reference.shape[1]}: "
                             f"all sets must come from the same encoder")

    steps = []   # (key, label, kind, draw index or None, fit pair, score pair)
    for key, label, kind, which in PROBE_STEPS:
        if kind not in kinds:
            continue
        if which == "id" and id_sets:
            steps.append((key, label, kind, None, *id_sets))
        elif which == "ood":
            for i, (f, y) in enumerate(draws):
                fit_idx, score_idx = (torch.from_numpy(ix) for ix in ood_split(len(f)))
                steps.append((key, label, kind, i, (f[fit_idx], y[fit_idx]), (f[score_idx], y[score_idx])))

    scores, seconds, iters, converged = {}, {}, {}, {}
    per_draw = [{} for _ in draws]
    bar = progress_steps(steps, progress)
    for key, label, kind, draw, (fit_f, fit_y), (test_f, test_y) in bar:
        event = {"key": key, "label": label, "n_fit": len(fit_f), "n_score": len(test_f), "draw": draw}
        if on_step:
            on_step({"event": "start", **event})
        start = time.perf_counter()
        if kind == "knn":
            run = {"accuracy": knn_accuracy(fit_f, fit_y, test_f, test_y, fast=fast, device=device)}
        else:
            run = linear_probe_run(fit_f, fit_y, test_f, test_y, fast=fast, max_iter=max_iter, device=device)
            iters[key] = max(iters.get(key, 0), run["lbfgs_iter"])
            converged[key] = converged.get(key, True) and run["converged"]
        elapsed = time.perf_counter() - start
        seconds[key] = seconds.get(key, 0.0) + elapsed
        if draw is None:
            scores[key] = run["accuracy"]
        else:
            per_draw[draw][key] = run["accuracy"]
        if on_step:
            on_step({"event": "done", **event, "accuracy": run["accuracy"], "seconds": elapsed})
    for key in ("ood_knn", "ood_linear"):
        values = [d[key] for d in per_draw if key in d]
        scores[key] = float(np.mean(values)) if values else None
    fit_n, score_n = (len(ix) for ix in ood_split(len(draws[0][0]))) if draws else (0, 0)
    return ProtocolResult(id_knn=scores.get("id_knn"), id_linear=scores.get("id_linear"),
                          ood_knn=scores["ood_knn"], ood_linear=scores["ood_linear"], fast=fast,
                          n_train=len(id_sets[0][0]) if id_sets else 0, n_val=len(id_sets[1][0]) if id_sets else 0,
                          n_ood_fit=fit_n, n_ood_score=score_n, seconds=seconds,
                          ood_draws=[{"n": len(d[0]), **per_draw[i]} for i, d in enumerate(draws)],
                          lbfgs_iter=iters, converged=converged)


def progress_steps(steps: list, progress: bool):
    """The protocol's steps, under a progress bar when asked (each step's key shown as it runs)."""
    if not progress:
        return steps
    bar = progress_bar(steps, desc="probes", leave=False)
    return (bar.set_postfix_str(step[0]) or step for step in bar)


def _as_pair(name: str, pair):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name}: expected a (features, labels) pair, found {type(pair).__name__}")
    features = _as_features(f"{name} features", pair[0])
    return features, _as_labels(f"{name} labels", pair[1], len(features))


class EncodeError(ValueError):
    """get_features failed on a split, or gave NaN or infinite values there. split: "train", "val" or "ood"."""

    def __init__(self, split: str, message: str):
        super().__init__(message)
        self.split = split


def evaluate_encoder(model, train, val, ood, *, fit_rows=None, fast: bool = True, batch_size: int = 256,
                     device=None, progress: bool = False, max_iter: int = LINEAR_MAX_ITER, on_step=None,
                     on_encode=None) -> tuple[ProtocolResult, dict[str, torch.Tensor]]:
    """Encode the three splits as the grader does (`encode_images`), then run `evaluate_protocol`: the kit's one
    "encode and probe" (the periodic evaluation during training, the notebook's Section 6, eval.py, the command
    line). Returns (the ProtocolResult, {"train", "val", "ood": (N, D) CPU features}).

    train, val, ood: splits with `images` uint8 (N, 64, 64, 3) and `labels` (N,) (utils.data.Split); ood may be a
    list of such splits (several OOD draws: features "ood0", "ood1", ..., the OOD numbers their mean). fit_rows:
    the training rows the ID probes fit on (None: all; the periodic probes use at most eval_max_train of them).
    The probes run on `device` (None: the model's) when fast=True. on_step: evaluate_protocol's; on_encode(split,
    n_images) is called before each split is encoded. Raises EncodeError when get_features fails on a split or
    gives NaN or infinite values. The result's `seconds` holds encode_<split> and the probes.
    """
    draws = list(ood) if isinstance(ood, (list, tuple)) else [ood]
    splits = {"train": train, "val": val, **({"ood": draws[0]} if len(draws) == 1 else
                                             {f"ood{i}": draw for i, draw in enumerate(draws)})}
    features, seconds = {}, {}
    for name, split in splits.items():
        images = split.images if name != "train" or fit_rows is None else split.images[fit_rows]
        if on_encode:
            on_encode(name, len(images))
        start = time.perf_counter()
        try:
            features[name] = encode_images(model, images, batch_size=batch_size, progress=progress)
        except Exception as error:
            raise EncodeError(name, f"get_features on the {name} images raised {type(error).__name__}: "
                                    f"{str(error)[:300]}") from error
        seconds[f"encode_{name}"] = time.perf_counter() - start
        bad = int((~torch.isfinite(features[name])).sum())
        if bad:
            raise EncodeError(name, f"{bad} of the {name} feature values are NaN or infinite (expected finite "
                                    f"values)")
    train_labels = train.labels if fit_rows is None else train.labels[fit_rows]
    ood_pairs = [(features[name], split.labels) for name, split in splits.items() if name.startswith("ood")]
    result = evaluate_protocol((features["train"], train_labels), (features["val"], val.labels),
                               ood_pairs[0] if len(ood_pairs) == 1 else ood_pairs, fast=fast, progress=progress,
                               device=device if device is not None else _model_device(model), max_iter=max_iter,
                               on_step=on_step)
    result.seconds = {**seconds, **result.seconds}
    return result, features


# ----------------------------------------------------------------------------------------------------------
# 3. Command line: the grader's protocol on a saved weights file
# ----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Load a weights file strictly (as the grader), encode the three splits with get_features in batches of 64,
    run the four probes, print them, and optionally write them with their provenance to --json."""
    from models import ImageEncoder
    from utils.checkpoint import CheckpointError, load_weights_strict, weights_arch
    from utils.data import DataError, data_dir_help, load_splits, resolve_data_dir
    from utils.provenance import provenance

    parser = argparse.ArgumentParser(prog="python -m utils.probes", description="The grader's protocol (k-NN "
                                     "and logistic regression; ID train -> val, OOD 80/20) on a weights file.")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors file of a trained encoder")
    parser.add_argument("--data-dir", default=None, help="folder holding train.npz, val.npz and ood.npz "
                        f"(default: {data_dir_help()})")
    parser.add_argument("--arch", default=None, help="architecture (default: the file's metadata, else models.ARCH)")
    parser.add_argument("--fast", action="store_true", help="torch probes (seconds on a GPU) instead of "
                        "scikit-learn's, which the grader uses")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the GPU when there is one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result and its provenance here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        model = load_weights_strict(ImageEncoder(weights_arch(args.weights, args.arch)), args.weights)
        data_dir = resolve_data_dir(args.data_dir)
        splits = load_splits(data_dir)
    except (CheckpointError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    device = pick_device(args.device)
    result, _ = evaluate_encoder(model.to(device), splits["train"], splits["val"], splits["ood"], fast=args.fast,
                                 batch_size=GRADER_BATCH_SIZE, progress=not args.no_progress)
    print(f"{args.weights} ({model.arch}) on {data_dir}:")
    print(result)
    if args.json:
        record = {**provenance(device), "weights": str(args.weights), "arch": model.arch, "data_dir": str(data_dir),
                  **result.as_dict()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
