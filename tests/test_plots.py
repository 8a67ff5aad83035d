"""Figures: each returns a Figure, saves a PNG under a fixed name, handles arbitrary label ids and names=None,
and shows the right thing (colours of correct / wrong, values on bars, the most confused pair, neighbours)."""
import matplotlib

matplotlib.use("Agg")

import sys

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.text import Text

from utils import embedding, environment, plots
from utils import explorer as nx

IDS = np.array([7, 312, 998, 45])   # arbitrary, non-contiguous class ids
NAMES = {7: "goldfish, Carassius auratus", 312: "cricket", 998: "a very long class name that needs cutting",
         45: "Gila monster"}


# ----------------------------------------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture(scope="module")
def history():
    """A plausible engine history: 12 epochs of 10 steps, evaluations every 4 epochs."""
    train = [{"epoch": e, "step": 10 * e, "loss": 5.0 - 0.1 * e, "lr": 0.1 * min(1, e / 3), "elapsed_s": 2.0 * e}
             for e in range(1, 13)]
    evals = [{"epoch": e, "step": 10 * e, "elapsed_s": 2.0 * e, "val_loss": 5.1 - 0.1 * e, "id_knn": 10.0 + e,
              "id_linear": 12.0 + e, "ood_knn": 8.0 + e, "ood_linear": 9.0 + e} for e in (4, 8, 12)]
    log = [{"step": s, "loss": 5.0, "lr": 0.1 * min(1, s / 30), "img_per_s": 100.0, "std": 0.1,
            "std_ratio": 0.9, "eff_rank": 20.0} for s in range(5, 121, 5)]
    return {"train": train, "eval": evals, "log": log}


@pytest.fixture(scope="module")
def images_and_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(IDS, 10)
    images = rng.integers(0, 256, size=(len(labels), 64, 64, 3), dtype=np.uint8)
    return images, labels


@pytest.fixture
def without(monkeypatch):
    """without("umap"): `import umap` raises ImportError, as in a kernel that lacks the package; no absence
    announced yet (utils.environment announces each once per process)."""
    monkeypatch.setattr(environment, "_announced", set())

    def block(*modules):
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)
    return block


def assert_saved_png(folder, filename):
    path = folder / filename
    assert path.is_file(), f"{filename} not saved in {folder}"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def assert_readable(fig: Figure):
    """No visible text smaller than 9 pt once drawn (tick labels are created at draw time)."""
    fig.canvas.draw()
    small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plots.MIN_FONT]
    assert not small, f"text below {plots.MIN_FONT} pt: {small[:5]}"


def is_green(color) -> bool:
    r, g, b = to_rgb(color)
    return g > r + 0.2 and g > b


def is_red(color) -> bool:
    r, g, b = to_rgb(color)
    return r > g + 0.3 and r > b + 0.3


# ----------------------------------------------------------------------------------------------------------
# Helpers of the module

def test_save_figure_creates_folder_and_png(tmp_path):
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    path = plots.save_figure(fig, tmp_path / "figures" / "sub", "curve")
    assert path == tmp_path / "figures" / "sub" / "curve.png"
    assert_saved_png(path.parent, path.name)


def test_class_name_shortens_and_falls_back_to_the_id():
    assert plots.class_name(np.int64(998), NAMES, 12) == "a very long\u2026"
    assert len(plots.class_name(998, NAMES, 12)) == 12
    assert plots.class_name(7, NAMES) == "goldfish"            # first ImageNet synonym only
    assert plots.class_name(312, {"312": "cricket"}) == "cricket"  # names from JSON have str keys
    assert plots.class_name(5, NAMES) == "5" and plots.class_name(5, None) == "5"


# ----------------------------------------------------------------------------------------------------------
# 1-2. Training curves

def test_loss_curves(history, tmp_path):
    fig = plots.plot_loss_curves(history, save_to=tmp_path)
    assert isinstance(fig, Figure)
    assert_saved_png(tmp_path, "loss_curves.png")
    ax_loss, ax_lr = fig.axes
    train_line, val_line = ax_loss.get_lines()
    assert list(train_line.get_xdata()) == list(range(1, 13))
    assert list(val_line.get_xdata()) == [4, 8, 12]
    assert ax_loss.get_legend() is not None
    # The learning rate comes from the per-step log, in fractional epochs (10 steps per epoch).
    assert ax_lr.get_lines()[0].get_xdata()[0] == pytest.approx(0.5)
    assert ax_lr.get_xlabel() == "epoch" and "learning rate" in ax_lr.get_ylabel()
    assert_readable(fig)


def test_curves_before_any_data_do_not_fail():
    empty = {"train": [], "eval": [], "log": []}
    assert isinstance(plots.plot_loss_curves(empty), Figure)
    assert isinstance(plots.plot_probe_curves(empty), Figure)


def test_probe_curves(history, tmp_path):
    history = {**history, "eval": [dict(r) for r in history["eval"]]}
    history["eval"][0]["ood_linear"] = None   # a probe skipped at one evaluation leaves a gap
    fig = plots.plot_probe_curves(history, save_to=tmp_path)
    assert_saved_png(tmp_path, "probe_curves.png")
    ax = fig.axes[0]
    lines = {line.get_label().split(":")[0]: line for line in ax.get_lines()}
    assert len(lines) == 4
    id_knn, ood_knn = lines["ID k-NN (val, seen classes)"], lines["OOD k-NN (unseen classes)"]
    id_lin, ood_lin = lines["ID linear (val, seen classes)"], lines["OOD linear (unseen classes)"]
    assert id_knn.get_linestyle() == id_lin.get_linestyle() == "-"
    assert ood_knn.get_linestyle() == ood_lin.get_linestyle() == "--"
    assert id_knn.get_color() == ood_knn.get_color() != id_lin.get_color() == ood_lin.get_color()
    assert id_lin.get_label().endswith("last 24.0%")   # 12 + epoch 12
    assert ax.get_ylabel() == "accuracy (%)"
    assert_readable(fig)


# ----------------------------------------------------------------------------------------------------------
# 3. Prediction grid

@pytest.mark.parametrize("names", [NAMES, None])
def test_prediction_grid_colours_correct_green_and_wrong_red(images_and_labels, names, tmp_path):
    images, labels = images_and_labels
    preds = labels.copy()
    preds[::3] = np.where(labels[::3] == 998, 7, 998)   # every third prediction wrong
    wrong_count = int((preds != labels).sum())
    assert 0 < wrong_count < len(labels)

    fig = plots.plot_prediction_grid(images, labels, preds, names=names, title="val", n=len(labels), seed=1,
                                     save_to=tmp_path, filename="predictions.png")
    assert_saved_png(tmp_path, "predictions.png")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(labels)
    n_green = n_red = 0
    for ax in panels:
        title = ax.title
        spine_color = ax.spines["top"].get_edgecolor()
        if title.get_text().startswith(plots.CORRECT_MARK):
            assert is_green(title.get_color()) and is_green(spine_color)
            assert "true:" not in title.get_text()
            n_green += 1
        else:
            assert title.get_text().startswith(plots.WRONG_MARK)
            assert is_red(title.get_color()) and is_red(spine_color)
            assert "true:" in title.get_text()
            n_red += 1
    assert (n_green, n_red) == (len(labels) - wrong_count, wrong_count)
    correct = len(labels) - wrong_count
    assert f"{correct}/{len(labels)} correct ({100 * correct / len(labels):.1f}%)" in fig._suptitle.get_text()
    texts = " ".join(ax.title.get_text() for ax in panels)
    if names is None:
        assert "998" in texts or "7" in texts
    else:
        assert "\u2026" in texts   # the long name is cut with an ellipsis
    assert_readable(fig)


def test_prediction_grid_sample_is_seeded(images_and_labels):
    images, labels = images_and_labels
    titles = [[ax.title.get_text() for ax in plots.plot_prediction_grid(images, labels, labels, n=8, seed=s).axes]
              for s in (3, 3)]
    assert titles[0] == titles[1]


# ----------------------------------------------------------------------------------------------------------
# 4. ID vs OOD

def test_id_vs_ood_writes_percentages_on_bars(tmp_path):
    results = {"id_knn": 38.1, "id_linear": 36.1, "ood_knn": 24.4, "ood_linear": 30.2}
    fig = plots.plot_id_vs_ood(results, baselines=plots.COURSE_BASELINES, chance=0.5, save_to=tmp_path)
    assert_saved_png(tmp_path, "id_vs_ood.png")
    ax = fig.axes[0]
    bar_texts = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert bar_texts == ["24.4%", "30.2%", "36.1%", "38.1%"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "course SimCLR baseline" in legend and "chance (0.5%)" in legend
    assert ax.get_ylabel() == "accuracy (%)"
    assert_readable(fig)


def test_id_vs_ood_missing_value_leaves_no_label():
    fig = plots.plot_id_vs_ood({"id_knn": 20.0, "ood_knn": 10.0})
    assert sorted(t.get_text() for t in fig.axes[0].texts if t.get_text()) == ["10.0%", "20.0%"]


# ----------------------------------------------------------------------------------------------------------
# 5-6. Embeddings

def test_embed_2d_tsne_shape_from_torch_features():
    features = torch.randn(120, 64)   # D > 50: reduced with PCA first
    coords = embedding.embed_2d(features, "tsne", seed=0, max_iter=250)   # sklearn's minimum: a faster test
    assert coords.shape == (120, 2) and np.isfinite(coords).all()


def test_embed_2d_umap_shape():
    features = np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    # The only UMAP call of the suite: its first use compiles numba code (about 20 s of CPU).
    coords = embedding.embed_2d(features, method="UMAP", seed=0, n_epochs=50)   # method is case-insensitive
    assert coords.shape == (120, 2) and np.isfinite(coords).all()


def test_embed_2d_unknown_method_is_named():
    with pytest.raises(ValueError, match="'pca'"):
        embedding.embed_2d(np.zeros((10, 4)), method="pca")


def test_plot_embedding_colours_only_the_most_frequent_classes(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(30 - i, 100 + 7 * i) for i in range(12)])   # 12 classes, sizes 30..19
    coords = rng.normal(size=(len(labels), 2))
    fig = plots.plot_embedding(coords, labels, names=None, title="val", max_classes=5, save_to=tmp_path,
                               filename="embedding_val.png")
    assert_saved_png(tmp_path, "embedding_val.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["7 other classes", "100", "107", "114", "121", "128"]
    assert_readable(fig)


def test_embedding_sample_keeps_all_points_of_the_coloured_classes():
    labels = np.repeat(np.arange(50) * 3, 20)   # 50 classes x 20
    keep = plots.embedding_sample(labels, max_points=300, max_classes=10, seed=0)
    assert len(keep) == 300 and len(np.unique(keep)) == 300
    coloured = plots.most_frequent_classes(labels[keep], 10)
    assert all((labels[keep] == c).sum() == 20 for c in coloured)


def test_embeddings_side_by_side(monkeypatch, tmp_path):
    calls = []

    def fast_embed(features, method="tsne", seed=0):   # the real embed_2d is tested above
        calls.append((len(features), method))
        return np.asarray(features)[:, :2]

    monkeypatch.setattr(plots, "embed_2d", fast_embed)
    rng = np.random.default_rng(0)
    val_y, ood_y = np.repeat(IDS, 30), np.repeat([3, 501, 77], 30)
    sets = {"validation (seen classes)": (rng.normal(size=(120, 8)), val_y),
            "OOD (unseen classes)": (torch.randn(90, 8), ood_y)}
    fig = plots.plot_embeddings_side_by_side(sets, names=NAMES, max_points=100, save_to=tmp_path)
    assert_saved_png(tmp_path, "embeddings_tsne_umap.png")
    assert calls == [(100, "tsne"), (100, "umap"), (90, "tsne"), (90, "umap")]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("validation (seen classes): t-SNE")
    assert titles[3].startswith("OOD (unseen classes): UMAP")
    assert [ax.get_legend() is not None for ax in fig.axes] == [False, True, False, True]
    assert "cricket" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert_readable(fig)


def test_embeddings_without_umap_show_tsne_only_and_say_why(monkeypatch, without, capsys, tmp_path):
    without("umap")
    calls = []

    def fast_embed(features, method="tsne", seed=0):
        calls.append(method)
        return np.asarray(features)[:, :2]

    monkeypatch.setattr(plots, "embed_2d", fast_embed)
    rng = np.random.default_rng(0)
    sets = {"validation (seen classes)": (rng.normal(size=(40, 8)), np.repeat(IDS, 10)),
            "OOD (unseen classes)": (rng.normal(size=(40, 8)), np.repeat([3, 501, 77, 8], 10))}
    fig = plots.plot_embeddings_side_by_side(sets, names=NAMES, save_to=tmp_path)
    assert calls == ["tsne", "tsne"]
    assert len(fig.axes) == 2 and all("t-SNE" in ax.get_title() for ax in fig.axes)
    install = environment.install_command("umap-learn")
    assert f"UMAP not shown: umap-learn cannot be imported (`{install}`)" in fig._suptitle.get_text()
    printed = capsys.readouterr().out
    assert "note: umap-learn cannot be imported" in printed and "t-SNE only" in printed and install in printed
    assert_saved_png(tmp_path, "embeddings_tsne_umap.png")
    assert_readable(fig)


def test_embed_2d_umap_without_umap_names_the_install_command(without):
    without("umap")
    with pytest.raises(ImportError, match=r"%pip install --user umap-learn==.*method='tsne'"):
        embedding.embed_2d(np.random.default_rng(0).normal(size=(20, 4)), method="umap")


# ----------------------------------------------------------------------------------------------------------
# 7. Confusion

def confused_predictions():
    """312 is mostly predicted as 998; a few scattered errors elsewhere."""
    true = np.repeat(IDS, 20)
    pred = true.copy()
    pred[true == 312] = np.where(np.arange(20) < 12, 998, 312)
    pred[np.flatnonzero(true == 7)[:3]] = 45
    pred[np.flatnonzero(true == 45)[:2]] = 7
    return true, pred


def test_most_confused_classes_start_with_the_most_confused_pair():
    true, pred = confused_predictions()
    assert list(plots.most_confused_classes(true, pred, k=2)) == [312, 998]
    assert set(plots.most_confused_classes(true, pred, k=4)) == set(IDS)
    assert len(plots.most_confused_classes(true, true, k=3)) == 3   # no errors: most frequent classes


@pytest.mark.parametrize("seaborn", ["installed", "missing"])
@pytest.mark.parametrize("names", [NAMES, None])
def test_confusion_top(names, seaborn, without, capsys, tmp_path):
    if seaborn == "missing":   # drawn with plain matplotlib: the same labels, cells and colorbar
        without("seaborn")
    true, pred = confused_predictions()
    fig = plots.plot_confusion_top(true, pred, names=names, k=3, save_to=tmp_path)
    assert_saved_png(tmp_path, "confusion_top.png")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    expected = ["cricket", "a very long cla\u2026"] if names else ["312", "998"]
    assert rows[:2] == expected and cols[:2] == expected and cols[-1] == "other classes"
    annotations = [t.get_text() for t in ax.texts]
    assert "60" in annotations and "40" in annotations   # 312 row: 12/20 -> 998, 8/20 correct
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "% of the true class's images"   # the colorbar
    announced = "note: seaborn cannot be imported" in capsys.readouterr().out
    assert announced == (seaborn == "missing")
    assert_readable(fig)


# ----------------------------------------------------------------------------------------------------------
# 8. Neighbours

@pytest.mark.parametrize("names", [NAMES, None])
def test_plot_neighbours_frames(images_and_labels, names, tmp_path):
    images, labels = images_and_labels
    query_labels = np.array([7, 312])
    neighbour_labels = np.array([[7, 7, 998, 7, 45], [312, 998, 312, 312, 312]])
    neighbour_images = images[:10].reshape(2, 5, 64, 64, 3)
    fig = plots.plot_neighbours(images[:2], query_labels, neighbour_images, neighbour_labels, names=names,
                                save_to=tmp_path)
    assert_saved_png(tmp_path, "neighbours.png")
    panels = fig.axes
    assert len(panels) == 2 * 6
    neighbour_panels = [ax for ax in panels if ax.get_title() != "query" and not
                        ax.get_xlabel().startswith("query")]
    same = (neighbour_labels == query_labels[:, None]).reshape(-1)
    for ax, is_same in zip(neighbour_panels, same):
        check = is_green if is_same else is_red
        assert check(ax.spines["left"].get_edgecolor()) and check(ax.xaxis.label.get_color())
    assert_readable(fig)


def test_plot_neighbours_rejects_mismatched_shapes(images_and_labels):
    images, _ = images_and_labels
    with pytest.raises(ValueError, match="neighbour"):
        plots.plot_neighbours(images[:2], [7, 7], images[:6].reshape(2, 3, 64, 64, 3), np.zeros((2, 5), int))


# ----------------------------------------------------------------------------------------------------------
# 9. Neighbour explorer

def brute_force_neighbours(features, index, k):
    distances = np.linalg.norm(features - features[index], axis=1)
    order = [i for i in np.argsort(distances, kind="stable") if i != index]
    return np.array(order[:k])


def test_nearest_neighbours_excludes_the_query_and_matches_brute_force():
    features = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    features[50] = features[10]   # an exact duplicate of query 10 is a neighbour, the query itself is not
    for index in (0, 10, 199):
        nearest, distances = nx.nearest_neighbours(features, index, 5)
        assert index not in nearest
        assert list(nearest) == list(brute_force_neighbours(features, index, 5))
        assert np.all(np.diff(distances) >= 0)
    assert nx.nearest_neighbours(features, 10, 5)[0][0] == 50


def test_majority_vote_breaks_ties_with_the_smallest_label():
    assert nx.majority_vote([998, 7, 998, 7, 312]) == 7
    assert nx.majority_vote(np.array([312, 312, 5])) == 312


def test_widgets_available(monkeypatch):
    import IPython

    class ZMQInteractiveShell:   # stands in for ipykernel's shell
        pass

    monkeypatch.delenv(nx.STATIC_WIDGETS_ENV, raising=False)
    assert not nx.widgets_available()   # pytest is not an IPython kernel
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert nx.widgets_available()
    monkeypatch.setenv(nx.STATIC_WIDGETS_ENV, "1")
    assert not nx.widgets_available()


def test_widgets_unavailable_in_a_kernel_without_ipywidgets_is_announced(monkeypatch, without, capsys):
    import IPython

    class ZMQInteractiveShell:
        pass

    monkeypatch.delenv(nx.STATIC_WIDGETS_ENV, raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    without("ipywidgets")
    assert not nx.widgets_available()
    assert "note: ipywidgets cannot be imported" in capsys.readouterr().out
    fig = nx.neighbour_explorer(np.zeros((10, 64, 64, 3), np.uint8), np.random.default_rng(0).normal(size=(10, 4)),
                                   np.repeat([1, 2], 5), k=3)
    assert isinstance(fig, Figure)   # the static explorer


def test_explorer_is_a_static_figure_without_widget_front_end(images_and_labels, monkeypatch, tmp_path):
    images, labels = images_and_labels
    monkeypatch.setenv(nx.STATIC_WIDGETS_ENV, "1")
    features = torch.randn(len(labels), 32)
    fig = nx.neighbour_explorer(images, features, labels, names=None, k=5, save_to=tmp_path)
    assert isinstance(fig, Figure)
    assert_saved_png(tmp_path, "neighbour_explorer.png")
    assert len(fig.axes) == 4 * 6   # 4 random queries, each with 5 neighbours
    assert_readable(fig)


def test_explorer_rejects_features_of_other_images(images_and_labels):
    images, labels = images_and_labels
    with pytest.raises(ValueError, match="features"):
        nx.neighbour_explorer(images, np.zeros((2 * len(labels), 4)), labels, interactive=False)


def test_explorer_widget_updates_on_slider_change(images_and_labels):
    import ipywidgets

    images, labels = images_and_labels
    features = np.random.default_rng(1).normal(size=(len(labels), 32)).astype(np.float32)
    widget = nx.neighbour_explorer(images, torch.from_numpy(features), labels, names=NAMES, k=5,
                                      interactive=True)
    assert isinstance(widget, ipywidgets.Widget)
    explorer = widget.explorer
    assert explorer.current["index"] == 0

    explorer.slider.value = 17   # what a user's slider move does: the observer redraws
    assert explorer.current["index"] == 17
    assert list(explorer.current["neighbours"]) == list(brute_force_neighbours(features, 17, 5))
    assert explorer.current["prediction"] == nx.majority_vote(labels[explorer.current["neighbours"]])
    assert isinstance(explorer.current["figure"], Figure)

    explorer.on_index_change({"new": 3, "old": 17})   # the callback itself
    assert explorer.current["index"] == 3 and 3 not in explorer.current["neighbours"]

    explorer.on_random()
    assert explorer.current["index"] == explorer.slider.value
