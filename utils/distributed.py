"""Data-parallel training under torchrun: one process per device, PyTorch's DistributedDataParallel, one global
batch split across the ranks. Without torchrun nothing here does anything (`World()` is one process).

    torchrun --standalone --nproc_per_node=2 -m utils.train arch=tiny epochs=1      # gloo on the CPU
    torchrun --standalone --nproc_per_node=8 -m utils.train time_budget_min=30      # NCCL, one GPU per rank

What is global and what is per rank (utils/train.py uses these pieces):
- `batch_size` is the global batch. Every rank draws the same epoch order and augmentation parameters (the same
  seeds) and makes the views of the whole global batch, but runs the network on its own 1/N of the rows
  (`RankSlice`): the forward and backward passes are split, the view-making is not.
- The projections are gathered from every rank before the loss (`gather_rows`), so NT-Xent/DCL negatives,
  VICReg's variance and covariance, SIGReg's statistics and DINO's centre see the global batch, on every rank
  alike, and DDP's gradient average is exactly the single-process gradient of the global loss.
- Batch norm normalises over each rank's rows (the default), or over the global batch with `sync_bn=true`
  (SyncBatchNorm: CUDA only, refused on the CPU's gloo).
- Rank 0 decides the time budget (its elapsed time is broadcast every step), writes every file and runs the
  probes; the other ranks wait for it. Every rank resumes from the same checkpoint.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """The processes of one run: this one's rank among `size`, its local rank on its machine, the backend."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""               # "" for one process; "nccl" or "gloo" under torchrun

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files, prints and runs the probes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def result_tag(self, sync_bn: bool) -> str:
        """What the world adds to the run's fingerprint: the size, only where it changes the result (batch norm
        per rank normalises over batch_size / size rows). "" for one process, or with synchronised batch norm."""
        return f"world{self.size}" if self.distributed and not sync_bn else ""

    def record(self) -> dict:
        return {"world_size": self.size, "backend": self.backend or "none"}


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def is_main_process() -> bool:
    """True in one process, and on rank 0 of a torchrun launch (also before the process group exists)."""
    return not launched_by_torchrun() or os.environ["RANK"] == "0"


def local_rank() -> int:
    """This process's device index on its machine under torchrun (0 otherwise): utils.device.pick_device's GPU."""
    return int(os.environ.get("LOCAL_RANK", 0)) if launched_by_torchrun() else 0


def init_world(device: torch.device, timeout_min: float = 10.0) -> World:
    """Join torchrun's process group (NCCL on GPUs, gloo on the CPU), or one process when not under torchrun.
    timeout_min: how long a collective waits for a rank that stopped answering before every rank fails."""
    if not launched_by_torchrun():
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            if device.index is None or device.index != local_rank():
                raise ValueError(f"under torchrun each rank trains on its own GPU, cuda:$LOCAL_RANK (cuda:"
                                 f"{local_rank()} here), but device={device} was asked for; use device=auto")
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return World(dist.get_rank(), dist.get_world_size(), local_rank(), dist.get_backend())


def broadcast_float(value: float, world: World, device: torch.device) -> float:
    """Rank 0's value on every rank (a decision only rank 0 makes, e.g. the elapsed time of a budget)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def same_on_every_rank(value: float, world: World, device: torch.device, what: str) -> None:
    """RuntimeError on every rank when the ranks hold different values of `what` (e.g. the step they resumed from)."""
    if not world.distributed:
        return
    values = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(world.size)]
    dist.all_gather(values, torch.tensor([float(value)], dtype=torch.float64, device=device))
    found = [float(v.item()) for v in values]
    if len(set(found)) > 1:
        raise RuntimeError(f"the ranks disagree on {what}: {found} (one value per rank)")


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; gradient times `scale` backward."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def gather_rows(x: torch.Tensor, world: World) -> torch.Tensor:
    """(n, ...) rows of every rank -> (size * n, ...) in rank order. The other ranks' rows carry no gradient; this
    rank's carry its gradient times `size`: every rank computes the same global loss from the result, and DDP
    averages the ranks' gradients, which together gives the gradient of the global loss."""
    if not world.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(world.size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[world.rank] = _ScaleGradient.apply(x, float(world.size))
    return torch.cat(parts)


class RankSlice(torch.nn.Module):
    """The model as the training step sees it under torchrun: called on `chunks` x `global_batch` rows (the views
    of one size, concatenated, as utils.steps.project_views does), it runs the wrapped (DDP) model on this rank's
    rows of each chunk only and returns every output with all the rows again, in the same order (gather_rows)."""

    def __init__(self, module: torch.nn.Module, world: World, global_batch: int):
        super().__init__()
        if global_batch % world.size:
            raise ValueError(f"batch_size={global_batch} is the global batch and must split evenly over "
                             f"{world.size} ranks; use a multiple of {world.size}.")
        self.module, self.world, self.global_batch = module, world, global_batch
        self.per_rank = global_batch // world.size

    def forward(self, x: torch.Tensor):
        chunks, rest = divmod(x.shape[0], self.global_batch)
        if rest:
            raise ValueError(f"RankSlice expects whole global batches of {self.global_batch} rows, got {x.shape[0]}")
        mine = torch.cat([x[c * self.global_batch + self.world.rank * self.per_rank:][:self.per_rank]
                          for c in range(chunks)])
        outputs = self.module(mine)
        single = not isinstance(outputs, tuple)
        gathered = tuple(self._regroup(gather_rows(o, self.world), chunks)
                         for o in ((outputs,) if single else outputs))
        return gathered[0] if single else gathered

    def _regroup(self, rows: torch.Tensor, chunks: int) -> torch.Tensor:
        """Rank-major rows (rank, chunk, per_rank) -> chunk-major (chunk, rank, per_rank), as the input was."""
        shape = rows.shape[1:]
        return rows.reshape(self.world.size, chunks, self.per_rank, *shape).transpose(0, 1).reshape(-1, *shape)


def wrap_for_ranks(model: torch.nn.Module, world: World, device: torch.device, global_batch: int,
                   sync_bn: bool) -> torch.nn.Module:
    """The module the training step calls: `model` itself for one process; under torchrun, RankSlice over
    DistributedDataParallel(model) (with SyncBatchNorm first when sync_bn). The optimizer keeps `model`'s
    parameters: DDP shares them."""
    if not world.distributed:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU implementation); on the CPU "
                             "use sync_bn=false: batch norm then normalises over each rank's rows.")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return RankSlice(ddp, world, global_batch)
