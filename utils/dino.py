"""DINO-style self-distillation (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"): a student learns to predict, on every view, the teacher's soft assignment of the global views to
K learned prototypes. The teacher is an exponential moving average of the student (utils/ema.py).

    student = ImageEncoder (trained)  + DinoHead (trained)      sees every view (global and local)
    teacher = EMA of (ImageEncoder + DinoHead), no gradient      sees the global views only
    targets = softmax((teacher logits - centre) / teacher_temperature)   centred and sharpened
    loss    = cross-entropy from each teacher target to the student's other views (losses.dino_cross_entropy)

DINO's head is an MLP to a bottleneck, L2 normalisation, then a weight-normalised linear layer to the
prototypes; the ImageEncoder's projector already is that MLP and bottleneck (128-d), so DinoHead is the last part
only. The student stays a plain ImageEncoder: the training engine owns the head, only the encoder's weights are
exported (the teacher's encoder, the EMA), and the heads and the centre stay in the training checkpoint.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import losses


class DinoHead(nn.Module):
    """(..., in_dim) projections -> (..., num_prototypes) cosine similarities to learned prototypes.

    DINO's last layer with norm_last_layer=True: a weight-normalised linear layer whose norm is fixed to 1, on
    the L2-normalised bottleneck. The logits are therefore cosine similarities in [-1, 1], and the temperatures
    alone set how peaked the softmax is.
    """

    def __init__(self, in_dim: int = 128, *, num_prototypes: int = 4096):
        super().__init__()
        for key, value, minimum in (("in_dim", in_dim, 1), ("num_prototypes", num_prototypes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"DinoHead: {key} must be an int >= {minimum}, got {value!r}")
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, in_dim) / math.sqrt(in_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # float32 even under bf16 autocast: a bf16 cosine has ~3 significant digits, and the teacher temperature
        # (0.04) multiplies its error by 25 (the same reason losses.py computes similarities in float32).
        with torch.autocast(device_type=z.device.type, enabled=False):
            return F.normalize(z.float(), dim=-1) @ F.normalize(self.prototypes.float(), dim=-1).T


class SelfDistillation:
    """The DINO objective's state and arithmetic: the student's head, the teacher (an EMA of {encoder, head}),
    the running centre of the teacher's logits, and the two temperatures.

    teacher: a ModuleDict {"encoder": ImageEncoder, "head": DinoHead} (ModelEMA(...).model), run without
    gradient on the global views. Settings are keyword-only and validated:
    - teacher_temperature (DINO: 0.04) must be below student_temperature (DINO: 0.1): sharpening is what keeps
      the targets from going uniform;
    - center_momentum in [0, 1) (DINO: 0.9): how slowly the centre follows the teacher's mean logit;
    - num_global >= 1: the first num_global views are the global ones (augment.default_views orders them so).
    """

    def __init__(self, head: DinoHead, teacher: nn.ModuleDict, *, num_global: int = 2,
                 teacher_temperature: float = 0.04, student_temperature: float = 0.1,
                 center_momentum: float = 0.9):
        check_settings(teacher_temperature=teacher_temperature, student_temperature=student_temperature,
                       center_momentum=center_momentum, num_global=num_global)
        if not isinstance(head, DinoHead):
            raise ValueError(f"SelfDistillation: head must be a DinoHead, got {type(head).__name__}")
        if not isinstance(teacher, nn.ModuleDict) or set(teacher.keys()) != {"encoder", "head"}:
            raise ValueError("SelfDistillation: teacher must be a ModuleDict with 'encoder' and 'head' (the EMA of "
                             f"the student), got {type(teacher).__name__}")
        self.head, self.teacher, self.num_global = head, teacher, num_global
        self.teacher_temperature, self.student_temperature = teacher_temperature, student_temperature
        self.center_momentum = center_momentum
        self.center = torch.zeros(head.prototypes.shape[0], device=head.prototypes.device)   # (K,)

    @property
    def teacher_encoder(self) -> nn.Module:
        return self.teacher["encoder"]

    def loss(self, student_z: torch.Tensor, teacher_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """student_z: (V, B, D) the student's projections of every view; teacher_z: (G, B, D) the teacher's of
        the G global views (computed under no_grad). Returns (loss 0-d float32, teacher logits (G, B, K))."""
        if teacher_z.shape[0] != self.num_global:
            raise ValueError(f"SelfDistillation.loss: expected the teacher's projections of {self.num_global} "
                             f"global views, got {teacher_z.shape[0]}")
        with torch.no_grad():
            teacher_logits = self.teacher["head"](teacher_z).float()
        targets = losses.dino_teacher_probabilities(teacher_logits, self.center,
                                                    temperature=self.teacher_temperature)
        loss = losses.dino_cross_entropy(self.head(student_z), targets, temperature=self.student_temperature)
        return loss, teacher_logits

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """centre <- m * centre + (1 - m) * mean teacher logit over the batch and the global views (DINO's
        update_center, without the all-reduce: one device)."""
        batch_mean = teacher_logits.float().reshape(-1, teacher_logits.shape[-1]).mean(dim=0)
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1.0 - self.center_momentum)

    def state_dict(self) -> dict:
        return {"center": self.center.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.center.copy_(state["center"])


def check_settings(*, teacher_temperature: float, student_temperature: float, center_momentum: float,
                   num_global: int = 2, prefix: str = "") -> None:
    """ValueError naming the setting (with `prefix`, e.g. "dino_") when a DINO setting is out of range."""
    def finite_positive(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf

    for key, value in (("teacher_temperature", teacher_temperature), ("student_temperature", student_temperature)):
        if not finite_positive(value):
            raise ValueError(f"{prefix}{key} must be a finite number > 0, got {value!r}")
    if not teacher_temperature < student_temperature:
        raise ValueError(f"{prefix}teacher_temperature ({teacher_temperature}) must be below "
                         f"{prefix}student_temperature ({student_temperature}): the teacher's targets are sharpened "
                         f"(DINO: 0.04 and 0.1); otherwise they drift to uniform and the features collapse")
    if isinstance(center_momentum, bool) or not isinstance(center_momentum, (int, float)) \
            or not 0.0 <= center_momentum < 1.0:
        raise ValueError(f"{prefix}center_momentum must be in [0, 1) (DINO: 0.9), got {center_momentum!r}")
    if isinstance(num_global, bool) or not isinstance(num_global, int) or num_global < 1:
        raise ValueError(f"num_global must be an int >= 1, got {num_global!r}")
