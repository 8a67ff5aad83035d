"""Shared fixtures: small embedded data sets generated once per test session."""
import numpy as np
import pytest
import torch

from utils.synthetic import DataSpec, write_dataset

# Small enough for a few seconds of CPU training, big enough that self-supervision visibly helps.
TINY = DataSpec(id_classes=8, train_per_class=40, val_per_class=10, ood_classes=8, ood_per_class=20)
# 100 validation images per class: a k-NN accuracy on 1000 images has a standard error near 1 point.
LEARN = DataSpec(id_classes=10, train_per_class=100, val_per_class=100, ood_classes=10, ood_per_class=30)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A tiny course-format data set (8 ID classes x 40 train), for tests that only need real shapes."""
    out = tmp_path_factory.mktemp("tiny_data")
    write_dataset(out, TINY, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def learn_data_dir(tmp_path_factory):
    """A data set large enough to show learning (10 ID classes x 100 train)."""
    out = tmp_path_factory.mktemp("learn_data")
    write_dataset(out, LEARN, seed=1, progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    """Small tensors: with several intra-op threads on a loaded 2-core CI machine, OpenMP barriers dominate (a
    30 ms view took 1.4 s). One thread keeps a test file fast; the setting is restored afterwards. A file
    opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fit_statistics():
    """fit_statistics(model, images=None) -> model with get_features' training statistics fitted (what training
    does before every probe and at export), on `images` or on 64 random uint8 images: a network that was never
    trained cannot compute the shipped design's features without them."""
    from utils.features import fit_feature_statistics

    def fit(model, images=None):
        if images is None:
            images = np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
        return fit_feature_statistics(model, images)
    return fit
