"""A stand-in for the course's utils.py, written from what the course's file provides.

Not part of the kit's `utils` package: utils/submission/grader.py copies this file, as `utils.py`, beside the
grader replica's eval.py into a folder of its own, so that a models.py that imports `utils` gets this module
there, as it would get the course's on the grader's side. The names, signatures and behaviour are the course's:

    default_transform                                    ToTensor() only (no mean/std normalisation)
    ImageDatasetNPZ(data_path, transform)                np.load, keys images/labels, (transform(image), label)
    extract_features_and_labels(model, loader, normalize=False) -> (features, labels), CPU tensors
    run_knn_probe(train_f, train_y, test_f, test_y)      KNeighborsClassifier(n_neighbors=5, n_jobs=-1)
    run_linear_probe(train_f, train_y, test_f, test_y)   LogisticRegression(max_iter=1000, n_jobs=-1)
    seed_all(seed)                                       python, numpy, torch (+cuda) seeds

Accuracies are fractions (accuracy_score of the predictions).

torchvision and scikit-learn are imported at first use (`default_transform` through the module's __getattr__),
not when this module is imported as the course's file does: eval.py runs the grader's first steps on every check,
and those two imports would double its time. Nothing a models.py can see changes: `import utils` there still
finds this module, with these names.

Tests: tests/test_grader.py, which runs it under the replica's eval.py against the kit's eval.py.
"""
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# The course's file imports tqdm.auto; the grader's machine has it. Where this stand-in runs in a kernel without
# tqdm (eval.py on the hub), a missing progress bar must not read as a failure of the submission.
try:
    from tqdm.auto import tqdm
except ImportError:
    def tqdm(iterable, **_):
        return iterable



def __getattr__(name):
    """default_transform, made at first use (PEP 562): ToTensor() only."""
    if name == "default_transform":
        from torchvision import transforms
        globals()["default_transform"] = transforms.ToTensor()
        return globals()["default_transform"]
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def sklearn_probes():
    """(KNeighborsClassifier, LogisticRegression, accuracy_score), with Intel's accelerated scikit-learn patched
    in first when it is installed, as the course's file does."""
    try:
        from sklearnex import patch_sklearn
        patch_sklearn()
    except ImportError:
        pass
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier, LogisticRegression, accuracy_score


_DEFAULT_TRANSFORM = object()     # the course's default argument, default_transform, made at first use


class ImageDatasetNPZ(Dataset):
    """Images and labels of one course npz file; items are (transform(image), label)."""

    def __init__(self, data_path, transform=_DEFAULT_TRANSFORM):
        transform = __getattr__("default_transform") if transform is _DEFAULT_TRANSFORM else transform
        data = np.load(data_path)
        self.images = data["images"]
        self.labels = data["labels"]
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def extract_features_and_labels(model, dataloader, normalize=False):
    """model.get_features of every batch under no_grad, on the device of the model's first parameter:
    (features (N, D), labels (N,)) as CPU tensors."""
    device = next(model.parameters()).device
    features, labels = [], []
    with torch.no_grad():
        for images, batch_labels in tqdm(dataloader, desc="Extracting features"):
            batch = model.get_features(images.to(device))
            if normalize:
                batch = F.normalize(batch, dim=1)
            features.append(batch.cpu())
            labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


def run_knn_probe(train_features, train_labels, test_features, test_labels):
    """5-NN, Euclidean, uniform vote: the accuracy as a fraction."""
    KNeighborsClassifier, _, accuracy_score = sklearn_probes()
    knn = KNeighborsClassifier(n_neighbors=5, n_jobs=-1)
    knn.fit(train_features, train_labels)
    return accuracy_score(test_labels, knn.predict(test_features))


def run_linear_probe(train_features, train_labels, test_features, test_labels):
    """Logistic regression (lbfgs, L2, C=1, no feature scaling): the accuracy as a fraction."""
    _, LogisticRegression, accuracy_score = sklearn_probes()
    probe = LogisticRegression(max_iter=1000, n_jobs=-1)
    probe.fit(train_features, train_labels)
    return accuracy_score(test_labels, probe.predict(test_features))


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
