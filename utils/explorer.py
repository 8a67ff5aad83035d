"""The nearest-neighbour explorer: pick an image, see its k nearest neighbours in feature space and their
majority vote. A widget (ipywidgets) in a Jupyter front-end; a static figure of random queries elsewhere (nbval,
HTML exports, a kernel without ipywidgets, announced).

The state and callbacks (`NeighbourExplorer`) are kept apart from the widgets so that they can be tested; the
figure is utils.plots.plot_neighbours.

Tests: tests/test_plots.py (the explorer's state and figures), tests/test_headless.py (its widget, headless).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from utils.environment import in_jupyter_kernel, optional_import
from utils.embedding import to_numpy
from utils.plots import CORRECT_MARK, WRONG_MARK, _display_images, class_name, plot_neighbours


# Environment variable that forces static figures instead of widgets (nbval runs, exported HTML).
STATIC_WIDGETS_ENV = "CS461_STATIC_WIDGETS"


def widgets_available() -> bool:
    """True when widgets can be shown: inside a Jupyter (ZMQ) kernel with ipywidgets installed, unless the
    environment variable CS461_STATIC_WIDGETS is "1" (nbval runs and HTML exports, where a widget would
    show as nothing). In a kernel without ipywidgets, prints once that the explorer is static."""
    if os.environ.get(STATIC_WIDGETS_ENV) == "1" or not in_jupyter_kernel():
        return False
    return optional_import("ipywidgets") is not None


def nearest_neighbours(features, index: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (k,), distances (k,)) of the k points nearest to features[index] by Euclidean distance, nearest
    first, the query itself excluded (an exact duplicate of it is a neighbour). features: (N, D) numpy or torch.

    The kit's one k-NN, utils.probes.knn_predict, asked for the k + 1 neighbours of the query among all the
    points: the query is one of them (distance 0), and is dropped."""
    from utils.probes import knn_predict   # imports torch: done at the first query, not with the explorer

    features = to_numpy(features)
    k = min(k, len(features) - 1)
    no_labels = np.zeros(len(features), dtype=np.int64)    # knn_predict votes too; only its neighbours are used
    _, neighbours = knn_predict(features, no_labels, features[index:index + 1], k=k + 1)
    neighbours = to_numpy(neighbours[0])
    nearest = neighbours[neighbours != index][:k]
    distances = np.linalg.norm(features[nearest].astype(np.float64) - features[index], axis=1)
    return nearest, distances


def majority_vote(labels) -> int:
    """The most common label; ties go to the smallest label."""
    values, counts = np.unique(to_numpy(labels).reshape(-1), return_counts=True)
    return values[np.argmax(counts)].item()   # np.unique sorts, argmax takes the first maximum


class NeighbourExplorer:
    """State and callbacks of the interactive explorer (kept apart from the widgets so they can be tested).

    images: (N, 64, 64, 3) uint8; features: (N, D) numpy or torch; labels: (N,)."""

    def __init__(self, images, features, labels, names: Mapping | None = None, k: int = 5, seed: int = 0):
        self.images = _display_images(images)
        self.features = to_numpy(features).astype(np.float32, copy=False)
        self.labels = to_numpy(labels).reshape(-1)
        if self.features.ndim != 2 or not len(self.images) == len(self.features) == len(self.labels):
            raise ValueError(f"neighbour_explorer: {len(self.images)} images, features {self.features.shape} and "
                             f"{len(self.labels)} labels; expected features (N, D) and one label per image.")
        if len(self.images) < 2:
            raise ValueError("neighbour_explorer: needs at least 2 images.")
        self.names = names
        self.k = min(k, len(self.images) - 1)
        self.rng = np.random.default_rng(seed)
        self.current: dict = {}
        self.output = None   # the ipywidgets.Output the figure is drawn into, set by build_widget
        self.slider = None

    def query(self, index: int) -> dict:
        """Neighbours and vote for image `index`: {index, label, neighbours, distances, neighbour_labels,
        prediction}."""
        index = int(index)
        neighbours, distances = nearest_neighbours(self.features, index, self.k)
        neighbour_labels = self.labels[neighbours]
        return {"index": index, "label": self.labels[index].item(), "neighbours": neighbours,
                "distances": distances, "neighbour_labels": neighbour_labels,
                "prediction": majority_vote(neighbour_labels)}

    def figure(self, indices: Sequence[int], title: str = "", save_to=None,
               filename: str = "neighbour_explorer.png") -> Figure:
        """plot_neighbours for the given query indices, with distances and the neighbours' vote."""
        results = [self.query(i) for i in indices]
        return plot_neighbours(self.images[[r["index"] for r in results]], [r["label"] for r in results],
                               self.images[np.stack([r["neighbours"] for r in results])],
                               np.stack([r["neighbour_labels"] for r in results]), names=self.names,
                               distances=np.stack([r["distances"] for r in results]),
                               predictions=[r["prediction"] for r in results], title=title,
                               save_to=save_to, filename=filename)

    def static_figure(self, n_queries: int = 4, save_to=None) -> Figure:
        """A few random queries in one figure: what the notebook shows without a widget front-end."""
        indices = self.rng.choice(len(self.images), size=min(n_queries, len(self.images)), replace=False)
        return self.figure(indices, title=f"Nearest neighbours ({self.k}) of {len(indices)} random images, by "
                                          f"Euclidean distance of the features (green = same class)",
                           save_to=save_to)

    def show(self, index: int) -> Figure:
        """Compute and draw image `index` in the output area; returns the figure."""
        self.current = self.query(index)
        c = self.current
        verdict = CORRECT_MARK if c["prediction"] == c["label"] else WRONG_MARK
        fig = self.figure([index], title=f"image {index}: true {class_name(c['label'], self.names, 24)}, "
                                         f"{self.k}-NN vote {class_name(c['prediction'], self.names, 24)} {verdict}")
        self.current["figure"] = fig
        if self.output is not None:
            from IPython.display import display
            with self.output:
                self.output.clear_output(wait=True)
                display(fig)
        return fig

    def on_index_change(self, change: Mapping) -> None:
        """Slider callback (ipywidgets' change dict: the new index is change["new"])."""
        self.show(change["new"])

    def on_random(self, _button=None) -> None:
        """'random image' button callback: move the slider to a random index (which redraws)."""
        index = int(self.rng.integers(len(self.images)))
        if index == self.slider.value:
            self.show(index)
        self.slider.value = index

    def build_widget(self):
        """The widget: an index slider, a 'random image' button and the output area, shown at index 0."""
        import ipywidgets as widgets

        self.slider = widgets.IntSlider(value=0, min=0, max=len(self.images) - 1, description="image",
                                        continuous_update=False, layout=widgets.Layout(width="60%"))
        button = widgets.Button(description="random image", icon="random")
        self.output = widgets.Output()
        self.slider.observe(self.on_index_change, names="value")
        button.on_click(self.on_random)
        box = widgets.VBox([widgets.HBox([self.slider, button]), self.output])
        box.explorer = self   # reachable from the returned widget (tests, curious students)
        self.show(self.slider.value)
        return box


def neighbour_explorer(images, features, labels, names: Mapping | None = None, k: int = 5,
                       interactive: bool | None = None, n_static: int = 4, seed: int = 0, save_to=None):
    """Browse images and their k nearest neighbours in feature space (Euclidean), with the neighbours'
    majority vote as the predicted class (ties: smallest label).

    images: (N, 64, 64, 3) uint8; features: (N, D) numpy or torch; labels: (N,) class ids.
    interactive: None = widgets when a front-end can show them (widgets_available()), True = widgets,
    False = a static figure of n_static random queries (saved as neighbour_explorer.png when save_to is set).
    Returns the ipywidgets widget (its `.explorer` holds the state and callbacks) or the Figure."""
    explorer = NeighbourExplorer(images, features, labels, names=names, k=k, seed=seed)
    if interactive is None:
        interactive = widgets_available()
    if not interactive:
        return explorer.static_figure(n_static, save_to=save_to)
    return explorer.build_widget()
