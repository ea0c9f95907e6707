"""The sigmoid loss of SigLIP (Zhai et al. 2023), as in big_vision's siglip trainer.

https://github.com/google-research/big_vision/blob/main/big_vision/trainers/proj/image_text/siglip.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_logits(
    text_embeds: torch.Tensor, image_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """Pairwise logits `t * cos + b`, shape (n_text, n_image); `logit_scale` is stored as log(t)."""
    return text_embeds @ image_embeds.t() * logit_scale.exp() + logit_bias


def sigmoid_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Every (text, image) pair is an independent binary problem.

    Matching pairs sit on the diagonal because a batch is built from aligned pairs: label +1 there,
    -1 everywhere else. Summed over images, averaged over texts (total / n, not a mean over n^2),
    which is what big_vision and transformers compute.
    """
    n_text, n_image = logits_per_text.shape
    if n_text != n_image:
        raise ValueError(f"the sigmoid loss needs as many texts as images, got {n_text} and {n_image}")
    labels = 2 * torch.eye(n_text, device=logits_per_text.device, dtype=logits_per_text.dtype) - 1
    return -F.logsigmoid(labels * logits_per_text).sum(dim=-1).mean()
