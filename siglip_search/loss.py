"""The sigmoid loss of SigLIP (Zhai et al. 2023), as in big_vision's siglip trainer.

https://github.com/google-research/big_vision/blob/main/big_vision/trainers/proj/image_text/siglip.py
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def sigmoid_logits(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """Pairwise logits `t * cos + b`, shape (n_text, n_image); `logit_scale` is stored as log(t)."""
    return text_embeds @ image_embeds.t() * logit_scale.exp() + logit_bias


def sigmoid_loss(
    logits_per_text: torch.Tensor, positives: torch.Tensor | None = None
) -> torch.Tensor:
    """Every (text, image) pair is an independent binary problem.

    Matching pairs sit on the diagonal because a batch is built from aligned pairs: label +1 there,
    -1 everywhere else. Summed over images, averaged over texts (total / n, not a mean over n^2),
    which is what big_vision and transformers compute. `positives` (bool, same shape) may mark
    more pairs as matching, e.g. two identical captions in one batch.
    """
    n_text, n_image = logits_per_text.shape
    if n_text != n_image:
        raise ValueError(
            f"the sigmoid loss needs as many texts as images, got {n_text} and {n_image}"
        )
    if positives is None:
        positives = torch.eye(n_text, device=logits_per_text.device, dtype=torch.bool)
    labels = 2 * positives.to(logits_per_text.dtype) - 1
    return -F.logsigmoid(labels * logits_per_text).sum(dim=-1).mean()


def _pair_loss(text_embeds, image_embeds, logit_scale, logit_bias, positives: bool) -> torch.Tensor:
    logits = sigmoid_logits(text_embeds, image_embeds, logit_scale, logit_bias)
    labels = -torch.ones_like(logits)
    if positives:
        labels = labels + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(labels * logits).sum()


class _NeighbourExchange(torch.autograd.Function):
    """Send a tensor to the next rank and receive the previous rank's; gradients go back the same way."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, to_rank: int, from_rank: int, group) -> torch.Tensor:
        ctx.to_rank, ctx.from_rank, ctx.group = to_rank, from_rank, group
        received = torch.empty_like(tensor)
        ops = [
            dist.P2POp(dist.isend, tensor.contiguous(), to_rank, group),
            dist.P2POp(dist.irecv, received, from_rank, group),
        ]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        return received

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (
            _NeighbourExchange.apply(grad, ctx.from_rank, ctx.to_rank, ctx.group),
            None,
            None,
            None,
        )


def distributed_sigmoid_loss(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    group=None,
) -> torch.Tensor:
    """The sigmoid loss over the global batch without ever building the global logit matrix.

    Each process scores its own images against its own texts (positives on the diagonal), then
    passes its text embeddings round the ring of processes, scoring every visiting block as
    negatives, as in big_vision's chunked SigLIP and open_clip's SigLipLoss. The value returned
    is scaled so that data-parallel gradient averaging equals the gradient of the single-process
    loss on the global batch; the mean of the returned values over processes equals that loss.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    local = text_embeds.shape[0]
    total = _pair_loss(text_embeds, image_embeds, logit_scale, logit_bias, positives=True)
    visiting = text_embeds
    for _ in range(world - 1):
        to_rank = (
            dist.get_global_rank(group, (rank + 1) % world)
            if group is not None
            else (rank + 1) % world
        )
        from_rank = (
            dist.get_global_rank(group, (rank - 1) % world)
            if group is not None
            else (rank - 1) % world
        )
        visiting = _NeighbourExchange.apply(visiting, to_rank, from_rank, group)
        total = total + _pair_loss(visiting, image_embeds, logit_scale, logit_bias, positives=False)
    # The global loss is (sum over all pairs) / (world * local); times world for gradient averaging.
    return total / local
