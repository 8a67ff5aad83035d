"""Online collapse monitor: cheap statistics of a batch of embeddings, logged during training.

A collapsing self-supervised run shows it here long before the probes do: the per-dimension standard
deviation of L2-normalised embeddings drops towards 0 (complete collapse), or the effective rank drops
towards 1 (dimensional collapse).

Tests: tests/test_optim.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def embedding_stats(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse statistics of embeddings z (B, D), returned as 0-d tensors (no host sync here).

    - std: mean over dimensions of the per-dimension std of L2-normalised z. For well spread unit vectors it
      is about 1/sqrt(D); for collapsed ones it is 0.
    - std_ratio: std * sqrt(D), so 1.0 means "spread like random directions" whatever D is.
    - eff_rank: exp(entropy of the normalised singular values of centred z) (Roy & Vetterli 2007): between 1
      (all variance on one direction) and min(B, D).
    """
    z = z.detach().float()
    d = z.shape[1]
    std = F.normalize(z, dim=1).std(dim=0).mean()
    s = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    eff_rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"std": std, "std_ratio": std * d ** 0.5, "eff_rank": eff_rank}


# Below these, a run is collapsing: embeddings spread 20x less than random directions, or nearly all their
# variance on two directions or fewer.
COLLAPSE_STD_RATIO = 0.05
COLLAPSE_EFF_RANK = 2.0


def collapse_warning(stats: dict[str, float]) -> str | None:
    """A one-line warning when the logged statistics say the embeddings are collapsing, else None."""
    if stats["std_ratio"] < COLLAPSE_STD_RATIO or stats["eff_rank"] < COLLAPSE_EFF_RANK:
        return (f"warning: the embeddings are collapsing (std ratio {stats['std_ratio']:.3f}, effective rank "
                f"{stats['eff_rank']:.1f}): the probes will not improve. Lower lr, raise the temperature or "
                f"the augmentation strength, or check a custom loss.")
    return None
