"""Checkpoints that survive a lost session, and the safetensors export the grader loads.

- Every file is written atomically: to a temporary file in the same folder, flushed to disk, then renamed
  over the target. A session cut in the middle of a save leaves the previous checkpoint intact.
- Checkpoints are read with `torch.load(weights_only=True)`: only tensors and plain containers, never
  arbitrary pickled objects.
- A corrupt or truncated file is a `CheckpointError` naming the file and the intact earlier one.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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


# ----------------------------------------------------------------------------------------------------------
# safetensors: what the grader loads
# ----------------------------------------------------------------------------------------------------------

def export_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict to a safetensors file that `safetensors.torch.load_model(ImageEncoder(),
    path)` loads strictly. Tensors are made contiguous (channels_last weights are not) and moved to the CPU.
    An un-wrapped model is expected (not a torch.compile wrapper: its keys carry an `_orig_mod.` prefix)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    bad = [k for k in state if k.startswith("_orig_mod.")]
    if bad:
        raise CheckpointError(f"export_weights got a torch.compile wrapper (keys like {bad[0]!r}); pass the "
                              f"original module (model._orig_mod) so the keys match ImageEncoder().")
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=metadata))
    return Path(path)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, with a CheckpointError naming the file when it is missing or unreadable."""
    path = Path(path)
    try:
        return load_file(path)
    except FileNotFoundError as error:
        raise CheckpointError(f"weights file {path} not found.") from error
    except Exception as error:
        raise CheckpointError(f"weights file {path} is not a readable safetensors file ({type(error).__name__}: "
                              f"{error}). Is it truncated? Re-export it.") from error


def load_weights_strict(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a safetensors file into `model` the way the grader does (strict), with a readable error that
    lists missing keys, unexpected keys and shape mismatches (and, for a file made before get_features needed
    the training statistics, the command that adds them)."""
    from utils.features import missing_statistics_message

    path = Path(path)
    weights = read_weights_file(path)
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
