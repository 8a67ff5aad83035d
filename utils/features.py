"""The training-image statistics that `get_features` uses, fitted and stored inside the weights.

`models.FEATURE_DESIGN` says what `ImageEncoder.get_features` computes (chosen by benchmarks/features.py).
When the design centres or whitens the pooled parts, it needs their mean (and covariance) over the TRAINING
images, never over the data it is evaluated on. They live in buffers of the model, so they travel inside
final_model.safetensors and the grader's strict loading finds them. This module fits them:

- `fit_feature_statistics(model, train_images)`: the training engine calls it before every periodic probe and
  before exporting the weights, so a student's own run gets the same design with its own statistics.
- `python -m utils.features --weights FILE --data-dir DIR`: adds them to a weights file made before the design
  needed them (the network weights are not changed), the command that the loading errors name.
- `load_network_state(model, state, source, keep_statistics=...)`: loads a weights file (keep_statistics=True:
  its statistics when they are this design's) or resumes a training checkpoint (False: its statistics are never
  needed, being refitted before every probe and at export, and may belong to another design).

    from utils.features import fit_feature_statistics
    fit_feature_statistics(model, splits["train"].images)      # uint8 (N, 64, 64, 3), as in the npz files
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from models import FeatureDesign, ImageEncoder, signed_power

# A command that adds the statistics to a weights file: named by every error about missing statistics.
ADD_STATISTICS_COMMAND = "python -m utils.features --weights {weights} --data-dir <folder holding train.npz>"
FITTED_FLAG = "feature_statistics_fitted"       # the buffer that says the statistics were fitted
STATISTICS_PREFIXES = ("feature_mean_", "feature_whitener_", FITTED_FLAG)


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
    from utils import probes   # here: utils.probes is the heavier module, and it never needs this one

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


def statistics_metadata(model: ImageEncoder, fitted_on: str) -> dict[str, str]:
    """What a weights file records about its feature statistics: the design they were fitted for (eval.py
    compares it with the submitted models.py's) and on which images. Every exporter adds it."""
    return {"feature_design": json.dumps(model.feature_design.as_dict()), "feature_statistics": fitted_on}


def is_statistics_key(key: str) -> bool:
    """True for a state-dict key of get_features' statistics, also inside a module that holds an encoder
    ("encoder.feature_mean_stage4")."""
    return key.rsplit(".", 1)[-1].startswith(STATISTICS_PREFIXES)


def missing_statistics_message(path, missing: list[str]) -> str | None:
    """The error for a weights file whose only missing keys are feature statistics (a file made before the
    design needed them), naming the command that adds them; None when other keys are missing too."""
    if not missing or not all(is_statistics_key(k) for k in missing):
        return None
    return (f"weights file {path} has no feature statistics ({', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}): it was made before get_features needed the training "
            f"images' statistics (models.FEATURE_DESIGN). Add them, without changing the network weights: "
            f"{ADD_STATISTICS_COMMAND.format(weights=path)}")


def unfitted_statistic(key: str, value: torch.Tensor) -> torch.Tensor:
    """What an ImageEncoder that was never fitted holds under `key`: the identity statistics (mean 0, whitener I,
    fitted flag 0), with which get_features computes its design without centring or whitening."""
    name = key.rsplit(".", 1)[-1]
    if name.startswith("feature_whitener_"):
        return torch.eye(value.shape[0], dtype=value.dtype, device=value.device)
    return torch.zeros_like(value)


def load_network_state(module: torch.nn.Module, state: dict, source: str, *,
                       keep_statistics: bool) -> torch.nn.Module:
    """Load `state` (a state dict read from `source`, which errors name) into `module` (an encoder, or a module
    that holds one, like the EMA's): every key but get_features' statistics strictly, with a CheckpointError for
    any difference. The statistics: with keep_statistics, the ones `state` holds when they are exactly the
    module's (same keys and shapes: an exported file of this design); otherwise they are reset to the unfitted
    identity, for
    fit_feature_statistics, which training runs before every probe and at export (a training checkpoint, whose
    statistics are never needed and may belong to another design). Returns the module."""
    from utils.checkpoint import CheckpointError, weight_mismatches

    current = module.state_dict()
    network = {k: v for k, v in state.items() if not is_statistics_key(k)}
    problems = weight_mismatches({k: v for k, v in current.items() if not is_statistics_key(k)}, network)
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    ours = {k: v for k, v in current.items() if is_statistics_key(k)}
    theirs = {k: v for k, v in state.items() if is_statistics_key(k)}
    if keep_statistics and not weight_mismatches(ours, theirs):
        statistics = theirs
    else:
        statistics = {k: unfitted_statistic(k, v) for k, v in ours.items()}
    module.load_state_dict({**current, **network, **statistics}, strict=True)
    return module


def load_network_weights(model: ImageEncoder, path) -> ImageEncoder:
    """A weights file whose network matches `model` exactly, with its feature statistics when they are this
    design's, else with none (a file made before the design needed them, or for another design)."""
    from utils.checkpoint import read_weights_file
    return load_network_state(model, read_weights_file(Path(path)), f"weights file {path}", keep_statistics=True)


def main(argv: list[str] | None = None) -> int:
    from utils.checkpoint import CheckpointError, export_weights
    from utils.data import load_splits, resolve_data_dir

    parser = argparse.ArgumentParser(description="Fit the training-image statistics that get_features uses and "
                                     "store them in a weights file (the network weights are not changed).")
    parser.add_argument("--weights", type=Path, required=True, help="safetensors file to complete")
    parser.add_argument("--data-dir", default=None, help="folder holding train.npz (default: the kit's resolution)")
    parser.add_argument("--arch", default=None, help="architecture (default: the file's metadata, else models.ARCH)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: replace --weights, "
                        "atomically)")
    parser.add_argument("--max-images", type=int, default=0, help="fit on at most this many training images, "
                        "spread over the set (default 0: all of them, as training's export does)")
    args = parser.parse_args(argv)
    from utils.submission import weights_arch, weights_metadata   # the file's recorded arch and metadata

    try:
        metadata = weights_metadata(args.weights)
        model = load_network_weights(ImageEncoder(weights_arch(args.weights, args.arch)), args.weights)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from utils.train import probe_fit_rows      # the periodic probes' choice of rows spread over the set

    train = load_splits(resolve_data_dir(args.data_dir))["train"]
    rows = probe_fit_rows(len(train), args.max_images)
    fit_feature_statistics(model, train.images[rows], progress=True)
    what = f"{len(rows)} of the {len(train)} training images of {train.path}"
    out = export_weights(model, args.out or args.weights, metadata={**metadata, **statistics_metadata(model, what)})
    print(f"wrote {out}: feature statistics from {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
