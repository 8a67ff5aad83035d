"""Self-supervised objectives as small pure functions of the projections.

Every objective takes `z` of shape (V, B, D), any float dtype: V >= 2 augmented views of the same B images,
stacked (z[v, i] is view v of image i), and returns a 0-d float32 tensor. Hyper-parameters are keyword-only
and validated.

    ntxent   SimCLR's NT-Xent (Chen et al. 2020)                          nt_xent(z, temperature=0.1)
      + DCL  decoupled (Yeh et al. 2022): no positive in the denominator  nt_xent(z, decoupled=True)
    vicreg   VICReg (Bardes, Ponce & LeCun 2022)                          vicreg(z, sim_weight=25, ...)
    lejepa   LeJEPA: invariance + SIGReg (Balestriero & LeCun 2025)        lejepa(z, lambd=0.05, ...)

Precision: the training loop calls these inside torch.autocast (bf16 on CUDA). Similarities, covariances and
characteristic functions lose too much in bf16 (a bf16 cosine similarity has ~3 significant digits, and a
temperature of 0.1 multiplies its error by 10), so every objective casts z to float32 and runs with autocast
disabled. Gradients still flow back to the bf16 activations.

DINO's self-distillation (Caron et al. 2021) needs a teacher network, so it is not a function of z alone: the
pure pieces are here (dino_teacher_probabilities, dino_cross_entropy); the head, the teacher and the centre
live in utils/dino.py, and the training engine runs them (loss="dino").

Usage:
    loss_fn = get_loss("vicreg")
    loss = loss_fn(torch.stack([proj_view_1, proj_view_2]))        # (2, B, D) -> scalar
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F


# ---- Shared helpers

def _shape(x) -> tuple | str:
    """What an argument is, for error messages: a tensor's shape, else its type's name."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_views(z: torch.Tensor, name: str, min_batch: int = 2) -> tuple[int, int, int]:
    """Validate z (V, B, D) with V >= 2 and B >= min_batch; return (V, B, D)."""
    if not isinstance(z, torch.Tensor) or z.ndim != 3:
        raise ValueError(f"{name}: z must be a (V, B, D) tensor of V views of B images, got {_shape(z)}")
    views, batch, dim = z.shape
    if views < 2:
        raise ValueError(f"{name}: needs at least 2 views (z.shape[0] >= 2), got z of shape {tuple(z.shape)}")
    if batch < min_batch:
        raise ValueError(f"{name}: needs a batch of at least {min_batch} images, got z of shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name}: z must be floating point, got {z.dtype}")
    return views, batch, dim


def _check_number(name: str, strict: bool = True, **values) -> None:
    """Each value must be a finite real number > 0 (strict) or >= 0."""
    for key, value in values.items():
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value)
                or not (value > 0 if strict else value >= 0)):
            raise ValueError(f"{name}: {key} must be a finite number {'>' if strict else '>='} 0, got {value!r}")


def _check_int(name: str, key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {key} must be an int >= {minimum}, got {value!r}")


def _check_num_global(name: str, num_global, views: int) -> None:
    _check_int(name, "num_global", num_global, 1)
    if num_global > views:
        raise ValueError(f"{name}: num_global={num_global} but z has only {views} views")


def _float32(device: torch.device):
    """Context that turns autocast off on this device type, so that float32 tensors stay float32."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# ---- NT-Xent (SimCLR)

def nt_xent(z: torch.Tensor, *, temperature: float = 0.1, decoupled: bool = False) -> torch.Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy (Chen et al. 2020, "A Simple Framework for
    Contrastive Learning of Visual Representations", eq. 1), or its decoupled form (DCL).

    All V * B embeddings are L2-normalised; logits are cosine similarities / temperature (float32). For an
    anchor (view v of image i) the candidates are the other V * B - 1 embeddings; its positives are the V - 1
    other views of image i. The loss is the cross-entropy -log softmax(logits)[positive], averaged over the
    positives of each anchor, then over all anchors. For V = 2 that is exactly the standard NT-Xent over the
    2B embeddings (each anchor has one positive and 2B - 2 negatives). Invariant to rescaling z.

    decoupled=True is DCL (Yeh et al. 2022, "Decoupled Contrastive Learning", eq. 6): the denominator holds the
    negatives only (the views of the other B - 1 images), so that for every anchor and positive p

        DCL = -s(a, p) / t + log sum_{negatives n} exp(s(a, n) / t)
            = NT-Xent - log(1 + sum_{positives q} exp(s(a, q) / t) / sum_{negatives n} exp(s(a, n) / t)),

    i.e. NT-Xent minus the positive pairs' share of the denominator, which the paper reports removes the
    "negative-positive coupling" that makes NT-Xent need large batches (+4.8 points k-NN on ImageNet-1k at batch
    256; no gain on CIFAR-10). It can be negative: its bound is -2 / t + log(V * (B - 1)) (positives at
    similarity 1, every negative at -1).

    NT-Xent's infimum is log(V - 1) (the V - 1 positives share the softmax mass; 0 for V = 2); random
    embeddings give about log(V * B - 1) + 1 / (2 * D * temperature^2) (the spread of random cosine logits),
    e.g. ~6.5 for z = torch.randn(2, 256, 128) at temperature 0.1, with or without decoupled."""
    views, batch, dim = _check_views(z, "nt_xent", min_batch=1)
    _check_number("nt_xent", temperature=temperature)
    if not isinstance(decoupled, bool):
        raise ValueError(f"nt_xent: decoupled must be True or False, got {decoupled!r}")
    if views * batch < 3:
        raise ValueError(f"nt_xent: needs at least one negative (V * B >= 3), got z of shape {tuple(z.shape)}")
    if decoupled and batch < 2:
        raise ValueError(f"nt_xent: decoupled=True needs negatives from other images (B >= 2), got z of shape "
                         f"{tuple(z.shape)}")
    with _float32(z.device):
        unit = F.normalize(z.float().reshape(views * batch, dim), dim=1)
        logits = unit @ unit.T / temperature                              # (VB, VB)
        n = views * batch
        is_self = torch.eye(n, dtype=torch.bool, device=z.device)
        image = torch.arange(n, device=z.device) % batch                  # row v * B + i holds image i
        is_positive = (image[:, None] == image[None, :]) & ~is_self
        # The denominator's candidates: every other embedding (NT-Xent), or the negatives only (DCL).
        left_out = (is_self | is_positive) if decoupled else is_self
        log_denominator = torch.logsumexp(logits.masked_fill(left_out, float("-inf")), dim=1, keepdim=True)
        log_prob = logits - log_denominator
        # masked_fill before the sum: only the positives count (and 0 * inf would be NaN).
        positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1) / (views - 1)
        return -positive_log_prob.mean()


# ---- VICReg

def vicreg_terms(z: torch.Tensor, *, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three unweighted VICReg terms (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-
    Covariance Regularization for Self-Supervised Learning", sec. 3 and the official implementation).

    For two views (x, y), as in the reference code:
      invariance = mean((x - y)^2)                                      (F.mse_loss)
      variance   = (mean_d relu(1 - std_d(x)) + mean_d relu(1 - std_d(y))) / 2,  std = sqrt(var + eps)
      covariance = sum_{i!=j} C(x)_ij^2 / D + sum_{i!=j} C(y)_ij^2 / D,  C = centred covariance over the batch
    For V > 2 each term is the average of that two-view term over all V (V - 1) / 2 pairs, which is:
      invariance = mean over pairs of the MSE; variance = mean over views; covariance = 2 * mean over views
    (each view's covariance appears in V - 1 pairs, and the reference sums the two views of a pair).

    z: (V, B, D), B >= 2. Returns {"invariance", "variance", "covariance"}: 0-d float32 tensors.
    Variance is ~1 for collapsed z (std ~0), 0 once every dimension has std >= 1; covariance is 0 for
    decorrelated dimensions. For torch.randn(2, 256, 64): invariance ~2, variance ~0.02, covariance ~2(D-1)/B."""
    views, batch, dim = _check_views(z, "vicreg_terms", min_batch=2)
    _check_number("vicreg_terms", eps=eps)
    with _float32(z.device):
        z = z.float()
        # Mean over pairs i < j of mean((z_i - z_j)^2), without a loop over pairs: for any vectors,
        # sum_{i<j} |z_i - z_j|^2 = V * sum_i |z_i - mean_j z_j|^2, and there are V (V - 1) / 2 pairs.
        spread = (z - z.mean(dim=0, keepdim=True)).square().mean(dim=(1, 2)).sum()
        invariance = spread * 2.0 / (views - 1)

        centred = z - z.mean(dim=1, keepdim=True)                          # (V, B, D)
        std = torch.sqrt(centred.var(dim=1) + eps)                          # (V, D), unbiased like the reference
        variance = F.relu(1.0 - std).mean()

        cov = centred.transpose(1, 2) @ centred / (batch - 1)               # (V, D, D)
        off_diagonal = ~torch.eye(dim, dtype=torch.bool, device=z.device)
        per_view = cov.square().masked_fill(~off_diagonal, 0.0).sum(dim=(1, 2)) / dim   # (V,)
        covariance = 2.0 * per_view.mean()
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg(z: torch.Tensor, *, sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
           eps: float = 1e-4) -> torch.Tensor:
    """VICReg loss (Bardes, Ponce & LeCun 2022): sim_weight * invariance + var_weight * variance
    + cov_weight * covariance, with the terms of vicreg_terms (defaults: the paper's 25 / 25 / 1, eps 1e-4).
    z: (V, B, D), B >= 2. About 51 for torch.randn(2, 256, 64) (the invariance, 2 x 25, dominates)."""
    _check_number("vicreg", strict=False, sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight)
    terms = vicreg_terms(z, eps=eps)
    return sim_weight * terms["invariance"] + var_weight * terms["variance"] + cov_weight * terms["covariance"]


# ---- SIGReg and LeJEPA

def _check_sigreg_args(name: str, num_slices, num_points, t_max) -> None:
    _check_int(name, "num_slices", num_slices, 1)
    _check_int(name, "num_points", num_points, 2)
    _check_number(name, t_max=t_max)


def epps_pulley_grid(num_points: int = 17, t_max: float = 5.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t >= 0 and weights w such that sum_k w_k f(t_k) is exactly the num_points-point trapezoid rule
    of an EVEN function f on [-t_max, t_max] (the grid of the LeJEPA paper's Algorithm 1: linspace(-5, 5, 17)).

    The Epps-Pulley integrand is even in t (the empirical characteristic function of real data satisfies
    ecf(-t) = conj(ecf(t))), so only the non-negative half of the symmetric grid is evaluated: the mirrored
    node's weight is folded in (the t = 0 node of an odd grid is its own mirror). Half the cos/sin work.
    Returns (t, w), each (ceil(num_points / 2),) float32, built on `device` (no host-to-device copy)."""
    step = 2.0 * t_max / (num_points - 1)
    count = (num_points + 1) // 2
    offset = 0.0 if num_points % 2 == 1 else 0.5  # an even grid has no node at t = 0
    t = (torch.arange(count, device=device, dtype=torch.float32) + offset) * step
    weights = torch.full((count,), 2.0 * step, device=device, dtype=torch.float32)
    weights[-1] = step                   # the end points carry half a step, twice (t_max and -t_max)
    if num_points % 2 == 1:
        weights[0] = step                # t = 0: an interior node counted once
    return t, weights


def sigreg_null_level(*, num_points: int = 17, t_max: float = 5.0) -> float:
    """Exact expected value of sigreg(x) for x with i.i.d. N(0, I) rows, for any N and any directions.
    For samples of N(0, 1), E|ecf(t) - exp(-t^2/2)|^2 = (1 - exp(-t^2)) / N, so N times it is 1 - exp(-t^2)
    and the expected statistic is the quadrature of (1 - exp(-t^2)) exp(-t^2/2). The continuous integral over
    the real line is sqrt(2 pi) - sqrt(2 pi / 3) = 1.059426; the default 17-point trapezoid on [-5, 5]
    gives 1.059423 (the smooth, fast-decaying integrand makes the trapezoid rule very accurate).
    Useful to read a logged SIGReg value: near this level = Gaussian-like, >> it = far from Gaussian."""
    _check_sigreg_args("sigreg_null_level", 1, num_points, t_max)
    t, weights = epps_pulley_grid(num_points, t_max)
    t, weights = t.double(), weights.double()
    return float((weights * (1.0 - torch.exp(-t * t)) * torch.exp(-0.5 * t * t)).sum())


def sigreg(x: torch.Tensor, *, num_slices: int = 256, num_points: int = 17, t_max: float = 5.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """SIGReg, Sketched Isotropic Gaussian Regularization (Balestriero & LeCun 2025, "LeJEPA: provable and
    scalable self-supervised learning without the heuristics", sec. 4 and Algorithm 1).

    Projects the N rows of x onto num_slices random unit directions (fresh on each call, drawn from
    `generator`) and, for each 1-D projection p_1..p_N, computes the Epps-Pulley statistic

        EP = N * integral_{-t_max}^{t_max} |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt,  ecf(t) = mean_n exp(i t p_n)

    with the num_points-point trapezoid rule (evaluated on the t >= 0 half, see epps_pulley_grid), as
    real arithmetic: |ecf - phi|^2 = (mean cos(t p) - phi)^2 + (mean sin(t p))^2. Returns the mean over slices.

    x: (N, D), or (..., N, D) for a batch of sets (e.g. (V, B, D): every set uses the SAME directions, as the
    paper's per-step seeded directions do, and the result is the mean over sets of their statistic).
    Computed in float32 whatever the input dtype; returns a 0-d float32 tensor.
    Scale: for N(0, I) rows its expectation is sigreg_null_level() = 1.0594 (defaults), independent of N;
    for collapsed x (all rows equal) it grows like N (e.g. ~209 for torch.zeros(512, 128), ~0.41 N).
    Cost: O(N * num_slices * (num_points + 1) / 2) cos/sin, linear in the batch size."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"sigreg: x must be a float tensor (N, D) or (..., N, D), got {_shape(x)}")
    _check_sigreg_args("sigreg", num_slices, num_points, t_max)
    n, dim = x.shape[-2:]
    if n < 1 or dim < 1:
        raise ValueError(f"sigreg: x must have at least one row and one column, got {tuple(x.shape)}")
    with _float32(x.device):
        x = x.float()
        directions = torch.randn(dim, num_slices, generator=generator, device=x.device, dtype=torch.float32)
        directions = directions / directions.norm(dim=0, keepdim=True)          # unit columns
        projections = x @ directions                                             # (..., N, S)
        t, weights = epps_pulley_grid(num_points, t_max, device=x.device)        # (T,)
        phi = torch.exp(-0.5 * t * t)                                            # N(0, 1) char. function
        angles = projections.unsqueeze(-1) * t                                   # (..., N, S, T)
        ecf_real = angles.cos().mean(dim=-3)                                     # (..., S, T)
        ecf_imag = angles.sin().mean(dim=-3)
        error = (ecf_real - phi).square() + ecf_imag.square()
        statistic = n * (error @ (weights * phi))                               # (..., S)
        return statistic.mean()


def lejepa(z: torch.Tensor, *, lambd: float = 0.05, num_global: int = 2, num_slices: int = 256,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The LeJEPA objective (Balestriero & LeCun 2025, eq. of sec. 5 / the paper's LeJEPA pseudo-code):

        (1 - lambd) * invariance + lambd * mean over views of sigreg(z[v])
        invariance = mean over (views, images, dims) of (z[v, i] - c_i)^2,  c_i = mean of the first
                     num_global views of image i (the global views; local views are pulled to them too)

    No stop-gradient, no teacher: gradients flow through the centres, as in the reference. The SIGReg
    directions are drawn once per call and shared by all views (the paper seeds them by the step).

    z: (V, B, D) with the num_global global views first (augment.default_views orders them so).
    lambd: in [0, 1] (paper: 0.05 works across settings)."""
    views, batch, dim = _check_views(z, "lejepa", min_batch=2)
    if isinstance(lambd, bool) or not isinstance(lambd, (int, float)) or not 0.0 <= lambd <= 1.0:
        raise ValueError(f"lejepa: lambd must be in [0, 1], got {lambd!r}")
    _check_num_global("lejepa", num_global, views)
    terms = lejepa_terms(z, num_global=num_global, num_slices=num_slices, generator=generator)
    return (1.0 - lambd) * terms["invariance"] + lambd * terms["sigreg"]


def lejepa_terms(z: torch.Tensor, *, num_global: int = 2, num_slices: int = 256,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The two unweighted LeJEPA terms, for logging: {"invariance", "sigreg"} (0-d float32). See lejepa."""
    views, batch, dim = _check_views(z, "lejepa_terms", min_batch=2)
    _check_num_global("lejepa_terms", num_global, views)
    with _float32(z.device):
        z = z.float()
        centres = z[:num_global].mean(dim=0, keepdim=True)                  # (1, B, D)
        invariance = (z - centres).square().mean()
        regulariser = sigreg(z, num_slices=num_slices, generator=generator)  # mean over views, shared slices
    return {"invariance": invariance, "sigreg": regulariser}


# ---- DINO: self-distillation with a centred, sharpened teacher

def dino_teacher_probabilities(teacher_logits: torch.Tensor, center: torch.Tensor, *,
                               temperature: float = 0.04) -> torch.Tensor:
    """The teacher's targets in DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
    Transformers", Algorithm 1): softmax((teacher_logits - center) / temperature) over the K prototypes.

    Centring (subtracting a running mean of the teacher's logits) keeps one prototype from taking every image;
    sharpening (a temperature below the student's) keeps the targets from going uniform. Together they avoid
    the two collapses without negatives or a predictor.

    teacher_logits: (G, B, K) the teacher's head outputs for the G global views (no gradient needed).
    center: (K,) the running centre. Returns (G, B, K) float32 probabilities (rows sum to 1), detached."""
    if not isinstance(teacher_logits, torch.Tensor) or teacher_logits.ndim != 3:
        raise ValueError(f"dino_teacher_probabilities: teacher_logits must be (G, B, K), got {_shape(teacher_logits)}")
    if not isinstance(center, torch.Tensor) or center.shape != teacher_logits.shape[-1:]:
        raise ValueError(f"dino_teacher_probabilities: center must be ({teacher_logits.shape[-1]},), got "
                         f"{_shape(center)}")
    _check_number("dino_teacher_probabilities", temperature=temperature)
    with _float32(teacher_logits.device):
        return F.softmax((teacher_logits.detach().float() - center.float()) / temperature, dim=-1)


def dino_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, *,
                       temperature: float = 0.1) -> torch.Tensor:
    """DINO's loss (Caron et al. 2021, eq. 3 and Algorithm 1): the cross-entropy from the teacher's targets on
    each global view g to the student's prediction on every OTHER view v (global or local):

        loss = mean over pairs (g, v), v != g, and images i of  -sum_k P_t[g, i, k] log softmax(s[v, i] / t)_k

    student_logits: (V, B, K) the student's head outputs for all V views, the G global views first (as
    augment.default_views orders them). teacher_probs: (G, B, K) from dino_teacher_probabilities, G <= V, and
    at least one pair (V >= 2). Returns a 0-d float32 tensor; gradients reach the student only. Its value is at
    least the teacher's entropy (0 for one-hot targets), about log(K) at initialisation."""
    if not isinstance(student_logits, torch.Tensor) or student_logits.ndim != 3:
        raise ValueError(f"dino_cross_entropy: student_logits must be (V, B, K), got {_shape(student_logits)}")
    views, batch, k = student_logits.shape
    if not isinstance(teacher_probs, torch.Tensor) or teacher_probs.ndim != 3 or teacher_probs.shape[1:] != (batch, k):
        raise ValueError(f"dino_cross_entropy: teacher_probs must be (G, {batch}, {k}) like the student's views, "
                         f"got {_shape(teacher_probs)}")
    num_global = teacher_probs.shape[0]
    if not 1 <= num_global <= views or views < 2:
        raise ValueError(f"dino_cross_entropy: needs 1 <= G <= V and V >= 2 (a teacher view and another student "
                         f"view), got G={num_global}, V={views}")
    _check_number("dino_cross_entropy", temperature=temperature)
    with _float32(student_logits.device):
        log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)         # (V, B, K)
        cross = -torch.einsum("gbk,vbk->gvb", teacher_probs.float(), log_p)        # (G, V, B)
        is_pair = ~torch.eye(num_global, views, dtype=torch.bool, device=log_p.device)  # v != g
        return cross[is_pair].mean()


# ---- Registry

class _Registry(dict):
    """A dict whose failed lookups name the known keys (LOSSES["typo"] says what exists)."""

    def __missing__(self, name):
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(self))}")


LOSSES: dict = _Registry(ntxent=nt_xent, vicreg=vicreg, lejepa=lejepa)


def get_loss(name: str):
    """The objective registered under `name` ("ntxent", "vicreg", "lejepa"); a clear error otherwise."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
