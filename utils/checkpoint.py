"""Every read and write of a training checkpoint or a weights file, and the keys of get_features' statistics
inside those files.

- Every file is written atomically (atomic_write): to a temporary file in the same folder, flushed to disk, then
  renamed over the target. A session cut in the middle of a save leaves the previous file intact.
- Checkpoints are read with `torch.load(weights_only=True)`: only tensors and plain containers, never arbitrary
  pickled objects. A corrupt or truncated file is a `CheckpointError` naming the file and the intact earlier one.
- Weights files (safetensors): `read_weights` is the one reader; `export_encoder` the one writer (always with the
  arch and the feature statistics' metadata); `load_weights_strict` is the grader's strict load with readable
  differences; `load_network_state` keeps the statistics only when they are this design's (utils/features.py
  fits them).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models import ARCH, ImageEncoder

CHECKPOINT_PATTERN = re.compile(r"^ckpt_step(\d+)\.pt$")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint or weights file cannot be used; the message says which and what to do."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename tmp_path over `path`, so `path` is either old or new, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"ckpt_step{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(state: dict, directory: Path, step: int, keep: int = 3) -> Path:
    """Write `state` (tensors and plain containers only) as ckpt_step<step>.pt, keep the newest `keep`."""
    path = checkpoint_path(directory, step)
    atomic_write(path, lambda tmp: torch.save({"format_version": FORMAT_VERSION, **state}, tmp))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read one checkpoint safely (weights_only=True). CheckpointError if it is corrupt or truncated."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        earlier = [p for p in list_checkpoints(path.parent) if p != path]
        hint = (f"The earlier checkpoint {earlier[-1]} is intact: delete or move {path.name} to resume from it."
                if earlier else "No earlier checkpoint exists: delete it to start the run afresh.")
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: "
                              f"{str(error)[:200]}). {hint}") from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this kit (format_version "
                              f"{state.get('format_version') if isinstance(state, dict) else '?'}, "
                              f"expected {FORMAT_VERSION}).")
    return state


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


# ---- safetensors: what the grader loads

# get_features' training statistics inside a weights file (buffers of models.ImageEncoder)
FITTED_FLAG = "feature_statistics_fitted"       # the buffer that says the statistics were fitted
STATISTICS_PREFIXES = ("feature_mean_", "feature_whitener_", FITTED_FLAG)
# The command that fits them into a weights file (utils/features.py): named by every error about them.
ADD_STATISTICS_COMMAND = "python -m utils.features --weights {weights} --data-dir <folder holding train.npz>"


def read_weights(path, *, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, tensors on the CPU ({} with tensors=False: the metadata only).
    CheckpointError naming the file when it is missing or unreadable. The kit's one safetensors reader."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            found = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}
    except FileNotFoundError as error:
        raise CheckpointError(f"weights file {path} not found.") from error
    except Exception as error:
        raise CheckpointError(f"weights file {path} is not a readable safetensors file ({type(error).__name__}: "
                              f"{str(error)[:200]}); it is probably truncated (an interrupted save or copy). "
                              f"Re-export it.") from error
    return found, metadata


def weights_metadata(path) -> dict[str, str]:
    """The metadata of a safetensors file ({} when it has none)."""
    return read_weights(path, tensors=False)[1]


def weights_arch(path, override: str | None = None) -> str:
    """The architecture to build for a weights file: `override` when given (a command's --arch), else the one the
    file's metadata records, else models.ARCH. Every command of the kit resolves it here."""
    return override or weights_metadata(path).get("arch", ARCH)


def export_encoder(model: torch.nn.Module, path, *, fitted_on: str | None = None,
                   metadata: dict[str, str] | None = None) -> Path:
    """Write an ImageEncoder's state dict to a safetensors file that `safetensors.torch.load_model(ImageEncoder(),
    path)` loads strictly, with its metadata: `metadata` (a run's loss and step, or an older file's metadata),
    then, always and over any key of the same name there, the arch, the feature design and what its statistics
    were fitted on (`fitted_on`; by default what the model's fitted flag says).
    Tensors are made contiguous (channels_last weights are not) and moved to the CPU. An un-wrapped model is
    expected (not a torch.compile wrapper: its keys carry an `_orig_mod.` prefix). Every exporter calls this."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    bad = [k for k in state if k.startswith("_orig_mod.")]
    if bad:
        raise CheckpointError(f"export_encoder got a torch.compile wrapper (keys like {bad[0]!r}); pass the "
                              f"original module (model._orig_mod) so the keys match ImageEncoder().")
    if fitted_on is None:
        fitted = FITTED_FLAG not in state or float(state[FITTED_FLAG]) == 1.0
        fitted_on = "fitted, images not recorded" if fitted else "not fitted (the identity statistics)"
    # The feature statistics' design (eval.py compares it with the submitted models.py's) and their images.
    info = {**(metadata or {}), "arch": model.arch, "feature_design": json.dumps(model.feature_design.as_dict()),
            "feature_statistics": fitted_on}
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=info))
    return Path(path)


def load_weights_strict(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a safetensors file into `model` the way the grader does (strict), with a readable error that
    lists missing keys, unexpected keys and shape mismatches (and, for a file made before get_features needed
    the training statistics, the command that adds them)."""
    path = Path(path)
    weights, _ = read_weights(path)
    missing = [k for k in model.state_dict() if k not in weights]
    problems = weight_mismatches(model, weights)
    if problems:
        hint = missing_statistics_message(path, missing) if len(problems) == 1 else None
        raise CheckpointError(hint or f"weights file {path} does not match {type(model).__name__}: "
                              + "; ".join(problems))
    model.load_state_dict(weights, strict=True)
    return model


def weight_mismatches(model, weights: dict[str, torch.Tensor], limit: int = 8) -> list[str]:
    """Human-readable differences between a model's state dict (or a dict of tensors) and a dict of tensors
    (empty if they match)."""
    expected = model if isinstance(model, dict) else model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return problems


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


def load_network_state(module: torch.nn.Module, state: dict, source: str, *,
                       keep_statistics: bool) -> torch.nn.Module:
    """Load `state` (a state dict read from `source`, which errors name) into `module` (an encoder, or a module
    that holds one, like the EMA's): every key but get_features' statistics strictly, with a CheckpointError for
    any difference. The statistics: with keep_statistics, the ones `state` holds when they are exactly the
    module's (same keys and shapes: an exported file of this design); otherwise they are reset to the unfitted
    identity, for utils.features.fit_feature_statistics, which training runs before every probe and at export (a
    training checkpoint, whose statistics are never needed and may belong to another design). Returns the module."""
    current = module.state_dict()
    network = {k: v for k, v in state.items() if not is_statistics_key(k)}
    problems = weight_mismatches({k: v for k, v in current.items() if not is_statistics_key(k)}, network)
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    ours = {k: v for k, v in current.items() if is_statistics_key(k)}
    theirs = {k: v for k, v in state.items() if is_statistics_key(k)}
    keep = keep_statistics and not weight_mismatches(ours, theirs)
    module.load_state_dict({**current, **network, **(theirs if keep else ours)}, strict=True)
    if not keep:
        for encoder in module.modules():
            if isinstance(encoder, ImageEncoder):
                encoder.reset_feature_statistics()
    return module


def load_network_weights(model, path):
    """A weights file whose network matches `model` exactly, with its feature statistics when they are this
    design's, else with none (a file made before the design needed them, or for another design)."""
    return load_network_state(model, read_weights(path)[0], f"weights file {path}", keep_statistics=True)
