"""Where computation runs: the one device chooser, the CUDA backend switches, and a batch size that fits the
memory a shared GPU has free.

Every part of the kit chooses its device with `pick_device`, so "auto" means the same thing everywhere: the GPU
when CUDA has one, else the CPU.

The course hub's GPUs are shared between students: the memory free when a run starts can be far less than the
card's size. `fit_batch_to_memory` picks the largest batch whose measured memory cost fits what is free, with
a safety margin, and scales the learning rate linearly with it. `measure_step_memory` measures that cost: one
training step at two small batch sizes, read from the CUDA allocator's peak (utils/memory.py runs both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# Fraction of the free memory a run plans to use (a policy). The rest absorbs what the linear extrapolation from
# two trial batches does not see: allocator fragmentation, cuDNN's larger workspaces for larger batches, the
# periodic probes' features, and other users' processes growing while the run goes on.
SAFETY_FRACTION = 0.8

# Smallest batch the chooser proposes: below it contrastive losses have too few negatives to be worth running.
SMALLEST_BATCH = 8

# Batch sizes of the two trial steps whose peak memories give the cost per image (slope) and the fixed cost
# (intercept: weights, gradients, optimizer state, workspaces). Far apart, so that cuDNN workspaces, which
# differ from one batch size to the next, weigh little in the slope; small enough to fit a crowded GPU.
TRIAL_BATCHES = (32, 128)


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" or None -> the GPU when CUDA has one (under torchrun: this rank's, cuda:$LOCAL_RANK), else the CPU;
    any other name ("cpu", "cuda", "cuda:1") is used as given, after checking that it exists here."""
    if name is None or str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(name)!r} asked for, but no CUDA GPU is available here; use device=cpu "
                         f"(or device=auto, which chooses the GPU only when there is one).")
    if device.type == "cuda" and device.index is None:
        from utils.distributed import launched_by_torchrun, local_rank
        if launched_by_torchrun():                  # "cuda" under torchrun: this rank's GPU
            return torch.device("cuda", local_rank())
    return device


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls/convolutions and cuDNN autotuning on CUDA: free speed at no accuracy cost that matters."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


# ---- A batch size that fits a shared GPU

@dataclass(frozen=True)
class StepMemory:
    """Peak memory of one training step as a line in the batch size: fixed_bytes + per_image_bytes * batch."""
    fixed_bytes: float
    per_image_bytes: float
    source: str                     # how the figures were obtained, e.g. "measured by trial steps at 16 and 32"

    def bytes_for(self, batch_size: int) -> float:
        return self.fixed_bytes + self.per_image_bytes * batch_size


@dataclass(frozen=True)
class BatchChoice:
    """What fit_batch_to_memory chose, and the one line that says so."""
    batch_size: int
    lr: float
    requested_batch_size: int
    requested_lr: float
    free_bytes: int
    needed_bytes: float             # planned peak at the chosen batch size
    message: str

    @property
    def reduced(self) -> bool:
        return self.batch_size != self.requested_batch_size


def candidate_batch_sizes(batch_size: int, smallest: int = SMALLEST_BATCH) -> list[int]:
    """The recipe's batch size, then the powers of two below it, down to `smallest`: 512 -> [512, 256, ..., 8];
    300 -> [300, 256, 128, ..., 8]."""
    sizes = [batch_size]
    power = 1 << (batch_size.bit_length() - 1)
    if power == batch_size:
        power //= 2
    while power >= smallest:
        sizes.append(power)
        power //= 2
    return sizes


def fit_batch_to_memory(batch_size: int, lr: float, free_bytes: int, memory: StepMemory, *,
                        reserve_bytes: int = 0, safety_fraction: float = SAFETY_FRACTION,
                        smallest: int = SMALLEST_BATCH, prefer: Callable[[int], bool] | None = None,
                        echo: bool = True) -> BatchChoice:
    """The largest batch in candidate_batch_sizes(batch_size) whose step fits the free memory, and lr scaled
    linearly with it (lr * chosen / batch_size, the usual rule for SimCLR-style training with Adam/LARS).

    free_bytes: what the device reports free (torch.cuda.mem_get_info()[0]); memory: the step's cost
    (measure_step_memory, or figures given by a test); reserve_bytes: memory the run will take besides the step
    (e.g. the training images, when they are not on the device yet). A batch fits when
    reserve_bytes + memory.bytes_for(batch) <= safety_fraction * free_bytes.
    prefer(batch) -> True marks fitting sizes to take first (e.g. one whose run has a checkpoint to resume).
    Prints one line saying what was chosen and why (echo). Raises MemoryError naming batch_size when not even
    `smallest` fits.
    """
    if free_bytes <= 0:
        raise ValueError(f"free_bytes must be > 0, got {free_bytes}")
    budget = safety_fraction * free_bytes - reserve_bytes
    fitting = [b for b in candidate_batch_sizes(batch_size, smallest) if memory.bytes_for(b) <= budget]
    if not fitting:
        raise MemoryError(
            f"batch_size={smallest} does not fit: the GPU has {_gib(free_bytes)} free, a step needs "
            f"{_gib(memory.bytes_for(smallest))} at that batch ({memory.source})"
            + (f" plus {_gib(reserve_bytes)} for the data" if reserve_bytes else "") +
            ". Other processes hold the rest of the GPU: wait for memory to free up (nvidia-smi lists them), "
            "or use a smaller arch.")
    preferred = [b for b in fitting if prefer is not None and prefer(b)]
    chosen = (preferred or fitting)[0]
    chosen_lr = lr * chosen / batch_size
    needed = reserve_bytes + memory.bytes_for(chosen)
    plan = (f"a step at batch {chosen} needs about {_gib(memory.bytes_for(chosen))} ({memory.source})"
            + (f", the data {_gib(reserve_bytes)}" if reserve_bytes else "")
            + f"; {_gib(free_bytes)} free, of which {safety_fraction:.0%} is planned for")
    if chosen == batch_size:
        message = f"GPU memory: batch_size={batch_size} fits ({plan})."
    else:
        why = ("a checkpoint of that run exists" if preferred and chosen != fitting[0]
               else f"batch_size={batch_size} needs {_gib(reserve_bytes + memory.bytes_for(batch_size))}")
        message = (f"GPU memory: batch_size={batch_size} -> {chosen} and lr={lr:g} -> {chosen_lr:g} (scaled "
                   f"linearly), because {why} ({plan}).")
    if echo:
        print(message)
    return BatchChoice(chosen, chosen_lr, batch_size, lr, int(free_bytes), needed, message)


def measure_step_memory(run_step: Callable[[int], None], device: torch.device,
                        batches: tuple[int, int] = TRIAL_BATCHES) -> StepMemory:
    """Peak CUDA memory of `run_step(batch)` (one forward/backward/update of the real recipe at `batch`) at two
    small batch sizes, extrapolated linearly: per image = the difference of the peaks over the difference of
    the batches; fixed = the rest. Everything run_step allocates must be freed when it returns.
    CUDA only: the CPU has no allocator peak to read (tests pass a StepMemory of their own instead)."""
    if device.type != "cuda":
        raise ValueError(f"measure_step_memory needs a CUDA device (it reads torch.cuda.max_memory_allocated); "
                         f"got {device}")
    small, large = batches
    if not 0 < small < large:
        raise ValueError(f"batches must be two increasing sizes, got {batches}")
    peaks = []
    for batch in (small, large):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_step(batch)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    per_image = max((peaks[1] - peaks[0]) / (large - small), 0.0)
    fixed = max(peaks[0] - per_image * small, 0.0)
    torch.cuda.empty_cache()
    return StepMemory(fixed, per_image, f"measured by trial steps at batch {small} and {large}")


def free_memory_bytes(device: torch.device) -> int:
    """Bytes the CUDA device reports free, after returning this process's cached, unused blocks to it (so that
    memory this process could reuse is not counted as taken)."""
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def largest_fitting_batch(try_batch, batch_size: int, smallest: int = SMALLEST_BATCH) -> int:
    """The largest of batch_size/2, /4, ... (>= smallest) for which try_batch(b) does not run out of
    memory, or 0."""
    b = batch_size // 2
    while b >= smallest:
        try:
            try_batch(b)
            return b
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            b //= 2
    return 0


def memory_note() -> str:
    """"5.1 GiB free of 9.8 GiB" for the current CUDA device, for error messages."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    return f"{free_memory_bytes(device) / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
