"""2-D coordinates of features for the embedding figures: t-SNE (scikit-learn) or UMAP (umap-learn, optional).

Computation only; utils/plots.py draws the coordinates (plot_embedding, plot_embeddings_side_by_side).

Tests: tests/test_plots.py.
"""
from __future__ import annotations

import warnings

import numpy as np

from utils.environment import install_command, try_import


def to_numpy(x) -> np.ndarray:
    """numpy array from a numpy array, list or torch tensor (detached, on the CPU, from any device). The one
    conversion: the plots, the embeddings and the scikit-learn probes (utils.probes) use it."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


EMBED_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}


def embed_2d(features, method: str = "tsne", seed: int = 0, **options) -> np.ndarray:
    """2-D coordinates (N, 2) float32 of features (N, D) (numpy or torch) with t-SNE or UMAP.

    Features with D > 50 are first reduced to 50 dimensions with PCA (much faster, same picture).
    t-SNE: sklearn, perplexity min(30, (N - 1) / 3), PCA initialisation. UMAP: umap-learn, 15 neighbours
    (an ImportError naming the install command when umap-learn cannot be imported). Both seeded by `seed`;
    `options` go to sklearn's TSNE or umap's UMAP (e.g. max_iter=500 for a faster t-SNE) and override the
    settings above."""
    method = str(method).lower()
    if method not in EMBED_METHODS:
        raise ValueError(f"embed_2d: unknown method {method!r}; use one of {sorted(EMBED_METHODS)}.")
    x = to_numpy(features).astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"embed_2d: features must be (N, D); got shape {x.shape}.")
    if len(x) < 5:
        raise ValueError(f"embed_2d: {method} needs at least 5 points; got {len(x)}.")
    if not np.isfinite(x).all():
        raise ValueError("embed_2d: features contain NaN or inf (a diverged model?); nothing to embed.")

    if x.shape[1] > 50:
        from sklearn.decomposition import PCA
        x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x).astype(np.float32)

    if method == "tsne":
        from sklearn.manifold import TSNE
        settings = {"perplexity": min(30.0, (len(x) - 1) / 3), "init": "pca", "random_state": seed, **options}
        return TSNE(n_components=2, **settings).fit_transform(x).astype(np.float32)

    # Imported here: umap's first import compiles numba code (several seconds).
    umap, reason = try_import("umap")
    if umap is None:
        raise ImportError(f"embed_2d: method 'umap' needs umap-learn, which cannot be imported ({reason}); "
                          f"install it with `{install_command('umap-learn')}` and restart the kernel, "
                          f"or use method='tsne'.")
    # n_jobs=1: a seeded UMAP runs single-threaded anyway; saying so avoids umap's warning about it.
    settings = {"n_neighbors": min(15, len(x) - 1), "random_state": seed, "n_jobs": 1, **options}
    with warnings.catch_warnings():
        # umap-learn 0.5.7 (hub-2025's) passes scikit-learn's old keyword; scikit-learn 1.6 and 1.7 warn about it
        # on every figure, which students would read as a problem of theirs.
        warnings.filterwarnings("ignore", message="'force_all_finite' was renamed", category=FutureWarning)
        return umap.UMAP(n_components=2, **settings).fit_transform(x).astype(np.float32)
