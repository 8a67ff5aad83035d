"""Figures for the notebook: one call per figure, inputs in, matplotlib Figure out.

Every `plot_*` function is pure (no training, no file reading): it draws what it is given, returns the Figure
and, when `save_to` (a folder) is given, also writes it there as a PNG with a fixed, descriptive name.

Conventions shared by all figures:
- images are uint8 (N, 64, 64, 3) RGB HWC (float [0, 1] and CHW tensors are accepted and converted);
- labels are arbitrary integer ids (e.g. ImageNet ids 7, 312, 998), never assumed to be 0..C-1;
- `names` is {label: class name} or None (then the id is shown); long names are cut with an ellipsis;
- no text smaller than 9 pt at the saved size; colour-blind-safe colours (Okabe-Ito) where the number of
  colours allows, and correct/wrong is shown by a symbol (check / cross) as well as by green / red.

Figures are detached from pyplot before they are returned, so that a notebook shows each figure exactly once:
as the value of the cell (or with `display(fig)`), not a second time when pyplot flushes open figures.

The 2-D coordinates come from utils/embedding.py; the interactive explorer is utils/explorer.py.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from utils import probes
from utils.embedding import EMBED_METHODS, embed_2d, to_numpy
from utils.environment import install_command, optional_import

# ---- Style

SAVE_DPI = 120
MIN_FONT = 9       # smallest text anywhere (tick labels, annotations, legends)
FONT = 10          # axis labels
TITLE_FONT = 12    # figure and axes titles

# Okabe & Ito (2008), a palette that stays distinguishable with the common colour-vision deficiencies.
OKABE_ITO = {
    "blue": "#0072B2", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "vermillion": "#D55E00", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000",
}
# Correct / wrong: the course asks for green and red; the symbols below carry the same information for
# readers who cannot tell the two colours apart.
CORRECT_COLOR = "#1a9641"
WRONG_COLOR = "#d7191c"
CORRECT_MARK = "\u2713"   # check mark
WRONG_MARK = "\u2717"     # ballot cross
OTHER_CLASSES_COLOR = "#c8c8c8"

# Class colours for scatter plots: Okabe-Ito for up to 8 classes. Beyond that no palette stays colour-blind
# safe, so tab20's dark colours then its light ones are used, with a marker shape per block of 9 classes:
# two classes with the same hue always differ in shape too.
_CLASS_COLORS_FEW = [OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion", "sky", "purple",
                                            "black", "yellow")]
_CLASS_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

# The course's week-3 SimCLR baseline under the grading protocol, named, for plot_id_vs_ood(baselines=...).
COURSE_BASELINES = {"course SimCLR baseline": probes.COURSE_BASELINES}


# ---- Small shared helpers

def save_figure(fig: Figure, folder: str | os.PathLike, filename: str) -> Path:
    """Write `fig` as a PNG to folder/filename (folder created if needed); returns the path.

    bbox_inches="tight" keeps legends placed outside the axes inside the saved image."""
    path = Path(folder) / filename
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=SAVE_DPI, bbox_inches="tight", facecolor="white")
    return path


def shorten(text: str, max_len: int = 18) -> str:
    """`text` cut to at most max_len characters, ending with an ellipsis when it was cut."""
    text = str(text)
    return text if len(text) <= max_len else text[: max_len - 1].rstrip() + "\u2026"


def class_name(label, names: Mapping | None = None, max_len: int = 18) -> str:
    """Readable, shortened name of a class id.

    ImageNet names list synonyms ("goldfish, Carassius auratus"): only the first one is kept. Names loaded
    from JSON have string keys, so both int and str keys are looked up; unknown ids are shown as the id."""
    label_int = int(label)
    if names:
        for key in (label, label_int, str(label_int)):
            try:
                if key in names:
                    return shorten(str(names[key]).split(",")[0].strip(), max_len)
            except TypeError:   # an unhashable key type in the lookup: try the next form
                continue
    return str(label_int)


def _flat(labels) -> np.ndarray:
    """Labels (any array-like or tensor) as a 1-D numpy array."""
    return to_numpy(labels).reshape(-1)


def _display_images(images) -> np.ndarray:
    """Images ready for imshow: (..., H, W, 3) uint8 or float in [0, 1].

    Accepts the course's uint8 HWC arrays and also (..., 3, H, W) tensors as a data loader yields them."""
    images = to_numpy(images)
    if images.shape[-1] not in (1, 3) and images.shape[-3] in (1, 3):
        images = np.moveaxis(images, -3, -1)
    if images.dtype != np.uint8:
        images = np.clip(images.astype(np.float32), 0.0, 1.0)
    if images.shape[-1] == 1:
        images = images[..., 0]
    return images


def _new_figure(width: float, height: float) -> Figure:
    """A white figure with constrained layout (keeps titles, labels and legends from overlapping)."""
    return plt.figure(figsize=(width, height), layout="constrained", facecolor="white")


def _finish(fig: Figure, save_to, filename: str) -> Figure:
    """Detach the figure from pyplot (shown once, by the caller) and save it when a folder is given."""
    plt.close(fig)
    if save_to is not None:
        save_figure(fig, save_to, filename)
    return fig


def _image_panel(ax, image, frame_color: str | None = None, frame_width: float = 3.0) -> None:
    """Show one image without ticks; a coloured frame (the axes spines) when frame_color is given."""
    ax.imshow(image)
    ax.set(xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set_visible(frame_color is not None)
        if frame_color is not None:
            spine.set_edgecolor(frame_color)
            spine.set_linewidth(frame_width)


def _value_or_nan(values: Mapping, key: str) -> float:
    """values[key] as a float, NaN when missing or None (matplotlib leaves a gap, bar labels stay empty)."""
    v = values.get(key)
    return np.nan if v is None else float(v)


def _records_values(records: Sequence[Mapping], key: str) -> np.ndarray:
    """Float array of records[i][key], NaN where missing or None."""
    return np.array([_value_or_nan(r, key) for r in records], dtype=float)


def _placeholder(ax, message: str) -> None:
    """An empty panel that says why it is empty (e.g. a plot drawn before the first evaluation)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=FONT, color="0.4", transform=ax.transAxes)
    ax.set(xticks=[], yticks=[])


def _label_axes(ax, xlabel: str | None, ylabel: str) -> None:
    """The line plots' common style: axis labels, small tick labels, a light grid."""
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=MIN_FONT)
    ax.grid(alpha=0.3)


# ---- Training curves

def plot_loss_curves(history: Mapping, save_to=None, filename: str = "loss_curves.png") -> Figure:
    """Training loss per epoch and validation loss at each evaluation (x = epoch), with the learning rate
    in a small panel below.

    history: the training engine's dict: "train" (one record per epoch: epoch, step, loss, lr), "eval"
    (epoch, val_loss, ...) and optionally "log" (step, lr, ...: a finer learning-rate curve)."""
    train, evals, log = (list(history.get(key, [])) for key in ("train", "eval", "log"))
    fig = _new_figure(8.0, 5.6)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax_loss.set_title("Self-supervised loss: training (mean per epoch) and validation", fontsize=TITLE_FONT)

    val_loss = _records_values(evals, "val_loss")
    if not train and not np.isfinite(val_loss).any():
        _placeholder(ax_loss, "no epoch recorded yet")
        _placeholder(ax_lr, "")
        return _finish(fig, save_to, filename)

    if train:
        ax_loss.plot(_records_values(train, "epoch"), _records_values(train, "loss"), marker="o", markersize=3,
                     color=OKABE_ITO["blue"], label="training loss (mean over the epoch)")
    if np.isfinite(val_loss).any():
        ax_loss.plot(_records_values(evals, "epoch"), val_loss, marker="s", markersize=5, linestyle="--",
                     color=OKABE_ITO["vermillion"], label="validation loss (held-out images)")
    _label_axes(ax_loss, None, "loss")
    ax_loss.tick_params(labelbottom=True)
    ax_loss.legend(fontsize=MIN_FONT, loc="best")

    lr_epochs, lr_values = _learning_rate_curve(train, log)
    ax_lr.plot(lr_epochs, lr_values, color=OKABE_ITO["green"])
    _label_axes(ax_lr, "epoch", "learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_lr.yaxis.get_offset_text().set_fontsize(MIN_FONT)
    return _finish(fig, save_to, filename)


def _learning_rate_curve(train: list, log: list) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, lr) for the learning-rate panel: from the per-step log when there is one (it shows the
    warm-up inside the first epochs), converted to fractional epochs; otherwise one point per epoch."""
    if log and train and train[0].get("step") and train[0].get("epoch"):
        steps_per_epoch = train[0]["step"] / train[0]["epoch"]
        steps = _records_values(log, "step")
        return steps / steps_per_epoch, _records_values(log, "lr")
    return _records_values(train, "epoch"), _records_values(train, "lr")


# (key in the eval records, legend text, colour, line style): k-NN / linear by colour, ID / OOD by style.
_PROBE_LINES = [
    ("id_knn", "ID k-NN (val, seen classes)", OKABE_ITO["blue"], "-"),
    ("id_linear", "ID linear (val, seen classes)", OKABE_ITO["orange"], "-"),
    ("ood_knn", "OOD k-NN (unseen classes)", OKABE_ITO["blue"], "--"),
    ("ood_linear", "OOD linear (unseen classes)", OKABE_ITO["orange"], "--"),
]


def plot_probe_curves(history: Mapping, save_to=None, filename: str = "probe_curves.png") -> Figure:
    """k-NN and linear probe accuracy (%) at each evaluation during training, in-distribution (solid) and
    out-of-distribution (dashed). The legend gives each line's last value.

    history["eval"]: records with epoch and id_knn, id_linear, ood_knn, ood_linear in percent (a missing or
    None value leaves a gap)."""
    evals = list(history.get("eval", []))
    fig = _new_figure(8.0, 4.8)
    ax = fig.subplots()
    ax.set_title("Probe accuracy during training: seen (ID) vs unseen (OOD) classes", fontsize=TITLE_FONT)
    if not evals:
        _placeholder(ax, "no evaluation recorded yet")
        return _finish(fig, save_to, filename)

    epochs = _records_values(evals, "epoch")
    for key, label, color, style in _PROBE_LINES:
        values = _records_values(evals, key)
        finite = np.isfinite(values)
        if not finite.any():
            continue
        last = values[finite][-1]
        ax.plot(epochs, values, color=color, linestyle=style, marker="o", markersize=4,
                label=f"{label}: last {last:.1f}%")
    _label_axes(ax, "epoch", "accuracy (%)")
    ax.set_ylim(bottom=0)
    # Outside the axes: the curves rise towards the upper right, where a legend would usually sit.
    ax.legend(fontsize=MIN_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="probe",
              title_fontsize=MIN_FONT)
    return _finish(fig, save_to, filename)


# ---- Predictions on images

def plot_prediction_grid(images, true_labels, pred_labels, names: Mapping | None = None, title: str = "",
                         n: int = 24, seed: int = 0, columns: int = 8, save_to=None,
                         filename: str = "predictions.png") -> Figure:
    """A grid of n images (a seeded random sample), each titled with its predicted class, and the true class
    when the prediction is wrong; green title and frame (with a check mark) when correct, red (cross) when
    wrong. The figure title gives the accuracy on the shown sample.

    images: (N, 64, 64, 3) uint8; true_labels, pred_labels: (N,) class ids."""
    images, true_labels, pred_labels = _display_images(images), _flat(true_labels), _flat(pred_labels)
    if not len(images) == len(true_labels) == len(pred_labels):
        raise ValueError(f"plot_prediction_grid: {len(images)} images, {len(true_labels)} true labels and "
                         f"{len(pred_labels)} predictions; expected one of each per image.")
    shown = np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False)

    # As many rows as needed, then the columns spread evenly over them (10 images: 2 x 5, not 8 + 2).
    rows = int(np.ceil(len(shown) / max(1, columns)))
    columns = int(np.ceil(len(shown) / rows))
    fig = _new_figure(1.65 * columns, 2.0 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, columns)).reshape(-1)
    n_correct = 0
    for ax, i in zip(axes, shown):
        correct = true_labels[i] == pred_labels[i]
        n_correct += int(correct)
        color = CORRECT_COLOR if correct else WRONG_COLOR
        _image_panel(ax, images[i], frame_color=color)
        text = f"{CORRECT_MARK if correct else WRONG_MARK} {class_name(pred_labels[i], names, 16)}"
        if not correct:
            text += f"\ntrue: {class_name(true_labels[i], names, 14)}"
        ax.set_title(text, color=color, fontsize=MIN_FONT)
    for ax in axes[len(shown):]:
        ax.set_visible(False)

    accuracy = 100.0 * n_correct / max(len(shown), 1)
    heading = f"{title}: " if title else ""
    fig.suptitle(f"{heading}predicted class per image, {n_correct}/{len(shown)} correct ({accuracy:.1f}%) on this "
                 f"random sample\n{CORRECT_MARK} green = correct, {WRONG_MARK} red = wrong (true class below the "
                 f"prediction)", fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


# ---- ID vs OOD summary

_PROBES = [("knn", "k-NN probe"), ("linear", "linear probe")]
_SETS = [("id", "ID (val, seen classes)", OKABE_ITO["blue"], ""),
         ("ood", "OOD (unseen classes)", OKABE_ITO["orange"], "//")]
_BASELINE_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1))]   # line style of each baseline, in turn


def plot_id_vs_ood(results: Mapping, baselines: Mapping[str, Mapping] | None = None, chance: float | None = None,
                   title: str = "", save_to=None, filename: str = "id_vs_ood.png") -> Figure:
    """Grouped bars: k-NN and linear probe accuracy (%), ID vs OOD, each value written on its bar ("36.1%").

    results: {"id_knn", "id_linear", "ood_knn", "ood_linear"} in percent (a missing one leaves no bar).
    baselines: {name: results-like dict (any subset of the keys)}, drawn as a black mark across the matching
    bar, e.g. COURSE_BASELINES. chance: chance level in percent (a dotted line), e.g. 100 / n_classes."""
    fig = _new_figure(7.5, 4.8)
    ax = fig.subplots()
    width = 0.38
    group_x = np.arange(len(_PROBES), dtype=float)
    top = 0.0
    for s, (set_key, set_label, color, hatch) in enumerate(_SETS):
        xs = group_x + (s - 0.5) * width
        values = np.array([_value_or_nan(results, f"{set_key}_{probe}") for probe, _ in _PROBES])
        bars = ax.bar(xs, np.nan_to_num(values), width=width * 0.95, color=color, hatch=hatch,
                      edgecolor="white", linewidth=0.5, label=set_label)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}%" for v in values], padding=2,
                     fontsize=FONT)
        top = max(top, np.nanmax(values, initial=0.0))

        for b, base in enumerate((baselines or {}).values()):
            style = _BASELINE_STYLES[b % len(_BASELINE_STYLES)]
            base_values = np.array([_value_or_nan(base, f"{set_key}_{probe}") for probe, _ in _PROBES])
            for x, v in zip(xs, base_values):
                if not np.isnan(v):
                    ax.hlines(v, x - width * 0.47, x + width * 0.47, colors="black", linestyles=style, linewidth=2)
                    top = max(top, v)

    handles, labels = ax.get_legend_handles_labels()
    for b, name in enumerate(baselines or {}):
        handles.append(Line2D([], [], color="black", linestyle=_BASELINE_STYLES[b % len(_BASELINE_STYLES)],
                              linewidth=2))
        labels.append(name)
    if chance is not None:
        handles.append(ax.axhline(chance, color="0.35", linestyle=":", linewidth=1.5))
        labels.append(f"chance ({chance:.1f}%)")

    ax.set_xticks(group_x, [label for _, label in _PROBES], fontsize=FONT)
    ax.set_ylabel("accuracy (%)", fontsize=FONT)
    ax.set_ylim(0, max(top * 1.18, 5.0))   # headroom for the value labels
    ax.tick_params(axis="y", labelsize=MIN_FONT)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(title or "Probe accuracy on seen (ID) vs unseen (OOD) classes", fontsize=TITLE_FONT)
    ax.legend(handles, labels, fontsize=MIN_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, save_to, filename)


# ---- 2-D embeddings (t-SNE, UMAP; the coordinates come from utils/embedding.py)

def most_frequent_classes(labels, max_classes: int) -> np.ndarray:
    """The max_classes most frequent labels, most frequent first; ties go to the smaller label."""
    classes, counts = np.unique(_flat(labels), return_counts=True)
    order = np.lexsort((classes, -counts))
    return classes[order[:max_classes]]


def class_style(rank: int, n_classes: int) -> tuple[str, str]:
    """(colour, marker) of the rank-th of n_classes coloured classes: Okabe-Ito circles for up to 8 classes;
    beyond that tab20 without its greys (9 dark colours, then 9 light) with a new marker shape every 9
    classes, so every class up to 72 has its own (colour, marker) pair."""
    if n_classes <= len(_CLASS_COLORS_FEW):
        return _CLASS_COLORS_FEW[rank], "o"
    tab20 = [c for c in plt.get_cmap("tab20").colors if len(set(c)) > 1]   # without its greys (= "other")
    dark_then_light = tab20[0::2] + tab20[1::2]
    return dark_then_light[rank % 18], _CLASS_MARKERS[(rank // 9) % len(_CLASS_MARKERS)]


def _draw_embedding(ax, coords, labels, names, max_classes: int, legend: bool = True) -> None:
    """Scatter of coords (N, 2) on ax: the max_classes most frequent classes coloured, the others light
    grey underneath; legend (class names) outside the axes, on the right."""
    coords, labels = to_numpy(coords), _flat(labels)
    if coords.shape != (len(labels), 2):
        raise ValueError(f"coords must be (N, 2) with one label per point; got {coords.shape} and "
                         f"{len(labels)} labels.")
    coloured = most_frequent_classes(labels, max_classes)
    others = ~np.isin(labels, coloured)
    n_other_classes = len(np.unique(labels[others]))
    if others.any():
        ax.scatter(coords[others, 0], coords[others, 1], s=6, color=OTHER_CLASSES_COLOR, linewidths=0,
                   label=f"{n_other_classes} other classes", zorder=1)
    for rank, label in enumerate(coloured):
        color, marker = class_style(rank, len(coloured))
        mask = labels == label
        ax.scatter(coords[mask, 0], coords[mask, 1], s=16, color=color, marker=marker, linewidths=0.3,
                   edgecolors="white", label=class_name(label, names, 20), zorder=2)
    ax.set(xticks=[], yticks=[])
    ax.set_xlabel("component 1 (no unit)", fontsize=MIN_FONT)
    ax.set_ylabel("component 2 (no unit)", fontsize=MIN_FONT)
    if legend:
        ax.legend(fontsize=MIN_FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5,
                  frameon=False, handletextpad=0.3, borderaxespad=0.0)


def plot_embedding(coords, labels, names: Mapping | None = None, title: str = "", max_classes: int = 20,
                   save_to=None, filename: str = "embedding.png") -> Figure:
    """Scatter of 2-D coordinates (N, 2) (from embed_2d) coloured by class (N,): the max_classes most frequent
    classes in colour with their names in a legend outside the axes, the others light grey."""
    fig = _new_figure(8.0, 6.0)
    ax = fig.subplots()
    _draw_embedding(ax, coords, labels, names, max_classes)
    ax.set_title(title or "2-D embedding of the features, coloured by class", fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


def embedding_sample(labels, max_points: int, max_classes: int, seed: int = 0) -> np.ndarray:
    """Indices of at most max_points points for a readable, fast embedding: all points of the max_classes
    most frequent classes (the ones that get colours), then random others as grey context. Seeded."""
    labels = _flat(labels)
    rng = np.random.default_rng(seed)
    in_coloured = np.isin(labels, most_frequent_classes(labels, max_classes))
    coloured = rng.permutation(np.flatnonzero(in_coloured))[:max_points]
    others = rng.permutation(np.flatnonzero(~in_coloured))[: max_points - len(coloured)]
    return np.sort(np.concatenate([coloured, others]))


def plot_embeddings_side_by_side(sets: Mapping[str, tuple], names: Mapping | None = None,
                                 methods: Sequence[str] = ("tsne", "umap"), max_points: int = 1500,
                                 max_classes: int = 20, seed: int = 0, save_to=None,
                                 filename: str = "embeddings_tsne_umap.png") -> Figure:
    """One figure, one row per feature set and one column per method: e.g. validation (seen classes) and OOD
    (unseen classes), each with t-SNE and UMAP. Computes the embeddings (embed_2d) on a seeded sample of at
    most max_points points per set (embedding_sample): all points of the max_classes most frequent classes,
    coloured, and grey context points.

    sets: {row title: (features (N, D), labels (N,)) or (features, labels, names of that set)}, e.g.
          {"validation (seen classes)": (val_f, val_y), "OOD (unseen classes)": (ood_f, ood_y)}.
          Per-set names matter when two sets reuse the same ids for different classes.

    Without umap-learn the UMAP column is left out, with a printed note and a line in the figure's title
    that say why (unless UMAP was the only method asked for: then embed_2d's ImportError)."""
    methods = [str(m).lower() for m in methods]
    for method in methods:
        if method not in EMBED_METHODS:
            raise ValueError(f"plot_embeddings_side_by_side: unknown method {method!r}; use one of "
                             f"{sorted(EMBED_METHODS)}.")
    left_out = ""
    if "umap" in methods and len(methods) > 1 and optional_import("umap") is None:
        methods = [m for m in methods if m != "umap"]
        left_out = f"\nUMAP not shown: umap-learn cannot be imported (`{install_command('umap-learn')}`)"
    fig = _new_figure(6.2 * len(methods) + 1.6, 5.2 * len(sets))
    axes = np.array(fig.subplots(len(sets), len(methods), squeeze=False))
    for row, (set_title, entry) in enumerate(sets.items()):
        features, labels = entry[0], _flat(entry[1])
        set_names = entry[2] if len(entry) > 2 else names
        keep = embedding_sample(labels, max_points, max_classes, seed)
        features = to_numpy(features)[keep]
        for col, method in enumerate(methods):
            coords = embed_2d(features, method=method, seed=seed)
            ax = axes[row, col]
            _draw_embedding(ax, coords, labels[keep], set_names, max_classes, legend=col == len(methods) - 1)
            ax.set_title(f"{set_title}: {EMBED_METHODS[method]} ({len(keep)} points)", fontsize=TITLE_FONT - 1)
    fig.suptitle("Feature space in 2-D: do classes form clusters, for seen and for unseen classes?" + left_out,
                 fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


# ---- Confusion among the most confused classes

def most_confused_classes(true_labels, pred_labels, k: int = 10) -> np.ndarray:
    """Up to k class ids taken from the most frequent errors first: off-diagonal (true, predicted) pairs
    sorted by count (ties: smaller ids), both classes of each pair added in turn. The most confused pair
    is therefore always included. Without errors: the k most frequent true classes."""
    true_labels, pred_labels = _flat(true_labels), _flat(pred_labels)
    wrong = true_labels != pred_labels
    pairs, counts = np.unique(np.stack([true_labels[wrong], pred_labels[wrong]], axis=1), axis=0,
                              return_counts=True)
    by_count = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))
    # The classes of the pairs in turn, then (few errors) the most frequent classes.
    candidates = [*pairs[by_count].reshape(-1), *most_frequent_classes(true_labels, len(np.unique(true_labels)))]
    chosen: list = []
    for label in candidates:
        if label not in chosen and len(chosen) < k:
            chosen.append(label)
    return np.array(chosen)


def plot_confusion_top(true_labels, pred_labels, names: Mapping | None = None, k: int = 10, save_to=None,
                       filename: str = "confusion_top.png") -> Figure:
    """Confusion matrix restricted to the k most confused classes (most_confused_classes), as % of each true
    class's images (rows), annotated; a last column "other classes" holds the predictions outside the k, so
    that each row sums to 100%. Drawn with seaborn's heatmap, or with plain matplotlib (announced) without it.

    true_labels, pred_labels: (N,) class ids."""
    sns = optional_import("seaborn")   # imported here: only this figure needs it
    true_labels, pred_labels = _flat(true_labels), _flat(pred_labels)
    classes = most_confused_classes(true_labels, pred_labels, k)
    percent = np.full((len(classes), len(classes) + 1), np.nan)
    for r, true_class in enumerate(classes):
        preds = pred_labels[true_labels == true_class]
        if len(preds) == 0:
            continue   # a class that is only ever predicted: an empty row
        for c, pred_class in enumerate(classes):
            percent[r, c] = 100.0 * np.mean(preds == pred_class)
        percent[r, -1] = 100.0 * np.mean(~np.isin(preds, classes))
    # Zero cells stay blank: the eye goes to the confusions that exist.
    annotations = np.where(np.nan_to_num(percent) >= 0.5, np.vectorize(lambda v: f"{v:.0f}")(percent), "")

    size = 3.5 + 0.6 * len(classes)
    fig = _new_figure(size + 1.5, size)
    ax = fig.subplots()
    tick_names = [class_name(c, names, 16) for c in classes]
    x_names, bar_label = tick_names + ["other classes"], "% of the true class's images"
    if sns is not None:
        sns.heatmap(percent, ax=ax, annot=annotations, fmt="", cmap="Blues", vmin=0, vmax=100,
                    annot_kws={"fontsize": MIN_FONT}, linewidths=0.5, linecolor="white",
                    xticklabels=x_names, yticklabels=tick_names, cbar_kws={"label": bar_label})
    else:
        _heatmap(ax, percent, annotations, x_names, tick_names, colorbar_label=bar_label)
    ax.figure.axes[-1].yaxis.label.set_fontsize(FONT)
    ax.figure.axes[-1].tick_params(labelsize=MIN_FONT)
    ax.set_xlabel("predicted class", fontsize=FONT)
    ax.set_ylabel("true class", fontsize=FONT)
    ax.tick_params(labelsize=MIN_FONT)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    ax.set_title(f"Confusions among the {len(classes)} most confused classes (row = true class, % of its images)",
                 fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


def _heatmap(ax, values, annotations, xticklabels, yticklabels, colorbar_label: str) -> None:
    """seaborn's heatmap as the confusion figure uses it, in plain matplotlib: values (R, C) in 0..100 (NaN
    blank) coloured with Blues, annotations (R, C) strings in each cell, white lines between cells, a
    colorbar with colorbar_label."""
    image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for (row, col), text in np.ndenumerate(annotations):
        if text:   # dark cells get white text, as seaborn does
            color = "white" if values[row, col] > 60 else "black"
            ax.text(col, row, text, ha="center", va="center", fontsize=MIN_FONT, color=color)
    ax.set_xticks(np.arange(values.shape[1]), labels=xticklabels)
    ax.set_yticks(np.arange(values.shape[0]), labels=yticklabels)
    ax.set_xticks(np.arange(values.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(values.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.figure.colorbar(image, ax=ax, label=colorbar_label)


# ---- Retrieval: nearest neighbours

def plot_neighbours(query_images, query_labels, neighbour_images, neighbour_labels, names: Mapping | None = None,
                    distances=None, predictions=None, title: str = "", save_to=None,
                    filename: str = "neighbours.png") -> Figure:
    """Retrieval grid: each row a query image then its nearest neighbours; a neighbour's frame and label are
    green (check mark) when it has the query's class, red (cross) otherwise.

    query_images: (Q, 64, 64, 3); query_labels: (Q,); neighbour_images: (Q, k, 64, 64, 3);
    neighbour_labels: (Q, k); optional distances (Q, k) shown under the neighbours and predictions (Q,)
    (e.g. the neighbours' majority vote) shown under the query."""
    query_images, neighbour_images = _display_images(query_images), _display_images(neighbour_images)
    query_labels = _flat(query_labels)
    neighbour_labels = to_numpy(neighbour_labels).reshape(len(query_labels), -1)
    n_queries, k = neighbour_labels.shape
    if len(query_images) != n_queries or neighbour_images.shape[:2] != (n_queries, k):
        raise ValueError(f"plot_neighbours: {len(query_images)} queries with {n_queries} labels, neighbour "
                         f"images {neighbour_images.shape[:2]} vs labels {neighbour_labels.shape}; expected "
                         f"(Q, k) for both.")
    distances = None if distances is None else to_numpy(distances).reshape(n_queries, k)

    fig = _new_figure(1.7 * (k + 1) + 0.4, 2.05 * n_queries + 0.5)
    # A narrow empty column separates the query from its neighbours.
    grid = fig.add_gridspec(n_queries, k + 2, width_ratios=[1, 0.12] + [1] * k)
    for q in range(n_queries):
        ax = fig.add_subplot(grid[q, 0])
        _image_panel(ax, query_images[q], frame_color="black")
        text = f"query: {class_name(query_labels[q], names, 16)}"
        if predictions is not None:
            prediction = _flat(predictions)[q]
            mark = CORRECT_MARK if prediction == query_labels[q] else WRONG_MARK
            text += f"\nvote: {class_name(prediction, names, 14)} {mark}"
        ax.set_xlabel(text, fontsize=MIN_FONT)
        if q == 0:
            ax.set_title("query", fontsize=FONT)
        for j in range(k):
            same = neighbour_labels[q, j] == query_labels[q]
            color = CORRECT_COLOR if same else WRONG_COLOR
            ax = fig.add_subplot(grid[q, j + 2])
            _image_panel(ax, neighbour_images[q, j], frame_color=color)
            text = f"{CORRECT_MARK if same else WRONG_MARK} {class_name(neighbour_labels[q, j], names, 16)}"
            if distances is not None:
                text += f"\ndistance {distances[q, j]:.2f}"
            ax.set_xlabel(text, fontsize=MIN_FONT, color=color)
            if q == 0:
                ax.set_title(f"neighbour {j + 1}", fontsize=FONT)
    fig.suptitle(title or "Nearest neighbours in feature space (green = same class as the query, red = other)",
                 fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


# ---- The data, the views the objective sees, and the learning-rate schedule

def plot_image_grid(images, labels, names: Mapping | None = None, title: str = "", classes: int = 8,
                    per_class: int = 8, save_to=None, filename: str = "training_images.png") -> Figure:
    """One row per class (the first `classes` class ids), `per_class` images each, class name on the left.

    images: (N, 64, 64, 3) uint8; labels: (N,) class ids."""
    images, labels = _display_images(images), _flat(labels)
    shown = np.unique(labels)[:classes]
    fig = _new_figure(1.3 * per_class + 1.6, 1.35 * len(shown) + 0.6)
    axes = np.array(fig.subplots(len(shown), per_class, squeeze=False))
    for row, label in enumerate(shown):
        idx = np.flatnonzero(labels == label)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            if col < len(idx):
                _image_panel(ax, images[idx[col]])
            else:
                ax.set_visible(False)
        axes[row, 0].set_ylabel(class_name(label, names, 22), rotation=0, ha="right", va="center",
                                fontsize=MIN_FONT)
        axes[row, 0].yaxis.set_visible(True)
    fig.suptitle(title or "Training images, one row per class", fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


def plot_views(images, views: Sequence, save_to=None, filename: str = "augmented_views.png") -> Figure:
    """Each row: an original image, then its augmented views (as the objective sees them).

    images: (B, 64, 64, 3) uint8; views: list of V arrays (B, 3, S, S) float in [0, 1]."""
    images = _display_images(images)
    views = [np.clip(to_numpy(v).transpose(0, 2, 3, 1), 0, 1) for v in views]
    fig = _new_figure(1.5 * (len(views) + 1), 1.5 * len(images) + 0.7)
    axes = np.array(fig.subplots(len(images), len(views) + 1, squeeze=False))
    for row in range(len(images)):
        _image_panel(axes[row, 0], images[row])
        for col, view in enumerate(views, start=1):
            _image_panel(axes[row, col], view[row])
    axes[0, 0].set_title("original", fontsize=MIN_FONT)
    for col in range(1, len(views) + 1):
        axes[0, col].set_title(f"view {col} ({views[col - 1].shape[1]} px)", fontsize=MIN_FONT)
    fig.suptitle("Augmented views: independent random crop, flip, colour, blur per image", fontsize=TITLE_FONT)
    return _finish(fig, save_to, filename)


def plot_lr_schedule(learning_rate, title: str = "", save_to=None, filename: str = "lr_schedule.png") -> Figure:
    """learning_rate(progress) over training progress (0 = start, 1 = end of the epochs or the time budget)."""
    progress = np.linspace(0, 1, 401)
    fig = _new_figure(6.0, 3.0)
    ax = fig.subplots()
    ax.plot(progress * 100, [learning_rate(p) for p in progress], color=OKABE_ITO["blue"])
    _label_axes(ax, "training progress (%)", "learning rate")
    ax.set_title(title or "Learning rate over the run", fontsize=TITLE_FONT - 1)
    return _finish(fig, save_to, filename)
