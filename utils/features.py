"""The training-image statistics that `get_features` uses, fitted and stored inside the weights.

`models.FEATURE_DESIGN` says what `ImageEncoder.get_features` computes (chosen by benchmarks/features.py).
When the design centres or whitens the pooled parts, it needs their mean (and covariance) over the TRAINING
images, never over the data it is evaluated on. They live in buffers of the model, so they travel inside
final_model.safetensors and the grader's strict loading finds them. This module fits them:

- `fit_feature_statistics(model, train_images)`: the training engine calls it before every periodic probe and
  before exporting the weights, so a student's own run gets the same design with its own statistics.
- `python -m utils.features --weights FILE --data-dir DIR`, the command that the loading errors name: adds them
  to a weights file made before the design needed them, without changing the network weights and without the
  training engine.

Their keys in a weights file, and loading a network without them: utils/checkpoint.py.

    from utils.features import fit_feature_statistics
    fit_feature_statistics(model, splits["train"].images)      # uint8 (N, 64, 64, 3), as in the npz files
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from models import FeatureDesign, ImageEncoder, signed_power
from utils import probes
from utils.checkpoint import FITTED_FLAG, CheckpointError, export_encoder, load_network_weights, weights_arch, \
    weights_metadata
from utils.data import DataError, data_dir_help, load_splits, resolve_data_dir, spread_rows


class PartsView(torch.nn.Module):
    """An encoder seen through `probes.encode_images` (the grader's image conversion, eval mode, float32):
    get_features(x) -> the named pooled parts of x (or of its mirror image), concatenated: (B, sum of dims)."""

    def __init__(self, model: ImageEncoder, parts, mirrored: bool = False):
        super().__init__()
        self.model, self.parts, self.mirrored = model, tuple(parts), mirrored

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.model.feature_parts(x.flip(-1) if self.mirrored else x)
        return torch.cat([parts[name] for name in self.parts], dim=1)


class DesignPartsView(torch.nn.Module):
    """An encoder seen through `probes.encode_images`: get_features(x) -> the parts its design reads, exactly as
    get_features reads them (ImageEncoder.design_parts: mirror-averaged when the design says so), concatenated:
    (B, sum of dims)."""

    def __init__(self, model: ImageEncoder):
        super().__init__()
        self.model = model

    def get_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.model.design_parts(x), dim=1)


def shrunk_whitener(x: torch.Tensor, shrink: float) -> torch.Tensor:
    """(N, d) samples -> (d, d) symmetric W = C^(-1/2) for C = (1 - shrink) * Cov(x) + shrink * mean(diag) * I.

    Shrinkage towards a scaled identity keeps directions the training images barely vary along from being
    blown up (their variance estimate is mostly noise); shrink=1 is a plain rescaling. Computed in float64."""
    if not 0 < shrink <= 1:
        raise ValueError(f"whitening shrinkage must be in (0, 1], got {shrink}")
    x = x.double()
    centred = x - x.mean(dim=0)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    target = cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
    eigenvalues, eigenvectors = torch.linalg.eigh((1 - shrink) * cov + shrink * target)
    return eigenvectors @ torch.diag(eigenvalues.clamp_min(1e-12).rsqrt()) @ eigenvectors.T


def feature_statistics(parts: list[torch.Tensor], design: FeatureDesign) -> dict:
    """[(N, d_i)] training parts (already mirror-averaged when the design says so) -> {"means": [(d_i,)] or
    None, "whiteners": [(d_i, d_i)] or None}, float32, as `models.design_features` takes them: fitted on the
    parts raised to the design's signed power, which design_features applies before centring."""
    parts = [signed_power(p, design.power) for p in parts]
    means = [p.double().mean(dim=0).float() for p in parts] if design.centre else None
    whiteners = [shrunk_whitener(p, design.whiten).float() for p in parts] if design.whiten is not None else None
    return {"means": means, "whiteners": whiteners}


def training_parts(model: ImageEncoder, images, *, batch_size: int = 256, progress: bool = False,
                   device=None) -> list[torch.Tensor]:
    """The parts the model's design reads, for uint8 images (N, 64, 64, 3): [(N, d_i)] float32 on the CPU,
    averaged with the mirror images' parts when the design mirrors. Same image conversion as the grader's."""
    flat = probes.encode_images(DesignPartsView(model), images, batch_size=batch_size, device=device,
                                progress=progress)
    return list(torch.split(flat, [model.part_widths[name] for name in model.feature_design.parts], dim=1))


def fit_feature_statistics(model: ImageEncoder, images, *, batch_size: int = 256, progress: bool = False,
                           device=None) -> ImageEncoder:
    """Set the model's feature-statistics buffers from training images (uint8 (N, 64, 64, 3)); a no-op for a
    design that needs none. The model's train/eval mode is kept. Returns the model."""
    if not model.needs_feature_statistics:
        return model
    if len(images) < 2:
        raise ValueError(f"fit_feature_statistics: expected at least 2 training images, found {len(images)}")
    parts = training_parts(model, images, batch_size=batch_size, progress=progress, device=device)
    return set_feature_statistics(model, feature_statistics(parts, model.feature_design))


def set_feature_statistics(model: ImageEncoder, stats: dict) -> ImageEncoder:
    """Copy `feature_statistics`' output into the model's buffers and mark them fitted (a no-op for a design
    that needs none). Returns the model."""
    if not model.needs_feature_statistics:
        return model
    design = model.feature_design
    buffers = dict(model.named_buffers())
    for i, part in enumerate(design.parts):
        if stats["means"] is not None:
            buffers[f"feature_mean_{part}"].copy_(stats["means"][i])
        if stats["whiteners"] is not None:
            buffers[f"feature_whitener_{part}"].copy_(stats["whiteners"][i])
    buffers[FITTED_FLAG].fill_(1.0)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit the training-image statistics that get_features uses and "
                                     "store them in a weights file (the network weights are not changed).")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors file to complete")
    parser.add_argument("--data-dir", default=None, help=f"folder holding train.npz (default: {data_dir_help()})")
    parser.add_argument("--arch", default=None, help="architecture (default: the file's metadata, else models.ARCH)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: replace --weights, "
                        "atomically)")
    parser.add_argument("--max-images", type=int, default=0, help="fit on at most this many training images, "
                        "spread over the set (default 0: all of them, as training's export does)")
    args = parser.parse_args(argv)
    try:
        metadata = weights_metadata(args.weights)
        model = load_network_weights(ImageEncoder(weights_arch(args.weights, args.arch)), args.weights)
        train = load_splits(resolve_data_dir(args.data_dir), splits=("train",))["train"]
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = spread_rows(len(train), args.max_images)
    fit_feature_statistics(model, train.images[rows], progress=True)
    what = f"{len(rows)} of the {len(train)} training images of {train.path}"
    out = export_encoder(model, args.out or args.weights, fitted_on=what, metadata=metadata)
    print(f"wrote {out}: feature statistics from {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
