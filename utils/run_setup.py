"""What a training run is made of, built from its TrainConfig: the model on its device, the student the optimizer
trains (the encoder, and DINO's head), the optimizer, and the views. train() and the memory trial before a run
(utils/memory.py) both build it here, so that the trial measures exactly what the run will train.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models import ImageEncoder
from utils import augment, dino, optim
from utils.config import TrainConfig


@dataclass
class RunParts:
    model: ImageEncoder                 # the encoder, on the device (channels_last on a GPU when asked)
    student: torch.nn.ModuleDict        # {"encoder": model} (+ "head": DINO's prototype head)
    optimizer: torch.optim.Optimizer    # over the student's parameters
    view_cfgs: list                     # augment.default_views of the recipe


def build_run(cfg: TrainConfig, device: torch.device, *, with_head: bool = True) -> RunParts:
    """The model, student, optimizer and views of cfg's recipe on `device`. with_head=False leaves DINO's head out
    (the memory trial covers projection losses only)."""
    model = ImageEncoder(cfg.arch).to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # What the optimizer trains: the encoder, and DINO's head (a module of its own: the model stays an
    # ImageEncoder, and only the encoder is exported).
    student = torch.nn.ModuleDict({"encoder": model})
    if cfg.loss == "dino" and with_head:
        student["head"] = dino.DinoHead(model.proj_dim, num_prototypes=cfg.dino_prototypes).to(device)
    optimizer = optim.build_optimizer(cfg.optimizer, student, cfg.lr, cfg.weight_decay, device)
    view_cfgs = augment.default_views(cfg.global_views, cfg.local_views, cfg.local_size, cfg.aug_strength,
                                      cfg.crop_min_scale)
    return RunParts(model, student, optimizer, view_cfgs)
