"""Spatially weighted cross-entropy with soft (smoothed) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted cross-entropy against the soft targets of the data stage.

    Args:
        logits: `[N, C, H, W]` network output.
        target: `[N, 2, H, W]`: channel 0 the class index, channel 1 its probability
            alpha; the remaining 1 - alpha belongs to background (class 0).
        weights: `[N, H, W]` pixel weights.

    Returns:
        sum(w * CE) / sum(w), a scalar.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    cls = target[:, 0].long()
    alpha = target[:, 1]
    lp_c = logp.gather(1, cls[:, None])[:, 0]
    ce = -(alpha * lp_c + (1 - alpha) * logp[:, 0])
    return (weights * ce).sum() / weights.sum().clamp_min(1e-6)


def lattice_hypotheses_loss(static: torch.Tensor, vibrating: torch.Tensor, gate: torch.Tensor,
                            vibrates: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                            gate_weight: float = 0.2) -> torch.Tensor:
    """Loss of a `lattice_heads` network: each image's own reading (the static head on a static lattice,
    the vibrating head on a vibrating one, `vibrates` `[N]` 0/1) against the targets (`soft_weighted_ce`),
    plus `gate_weight` x the binary cross-entropy of the image-level gate logit `gate` `[N]` against `vibrates`.
    """
    own = torch.where(vibrates[:, None, None, None] > 0.5, vibrating, static)
    bce = F.binary_cross_entropy_with_logits(gate.float(), vibrates.float())
    return soft_weighted_ce(own, target, weights) + gate_weight * bce
