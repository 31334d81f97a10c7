"""N:M fine-grained sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; NVIDIA's ASP):
in every group of M consecutive weights along the input dimension, keep the N of largest magnitude. 2:4 is
the layout that Ampere and Hopper sparse tensor cores accept (`torch.sparse.to_sparse_semi_structured`)."""

from __future__ import annotations

import torch

from lth.masks import Masks

STRUCTURED = False


def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    """[..., M] groups along the input dimension: dim 1 of a Linear [out, in] or Conv [out, in, *kernel]
    weight, moved last so that consecutive input channels at one kernel position form a group."""
    return t.movedim(1, -1).reshape(-1, m)


def prune(weights: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], n: int, m: int) -> Masks:
    """Layers with fraction 0 (`dense_layers`) stay as they are; in the others, each group of M keeps its N
    largest remaining weights (fewer where fewer remain). Ties go to the earlier position."""
    pruned = dict(masks)
    for name, fraction in fractions.items():
        if fraction == 0.0:
            continue
        mask = masks[name]
        scores = _grouped(weights[name].detach().abs().float().masked_fill(~mask, -torch.inf), m)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :n]
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True) & _grouped(mask, m)
        shape = mask.movedim(1, -1).shape
        pruned[name] = keep.view(shape).movedim(-1, 1).contiguous()
    return pruned


def apply(trained: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], config, structure) -> Masks:
    return prune(trained, masks, fractions, *config.nm)


def check(config, shapes: dict[str, tuple[int, ...]], fractions: dict[str, float], structure) -> str | None:
    if config.nm is None or len(config.nm) != 2 or not 0 < config.nm[0] < config.nm[1]:
        return f"prune.nm: the method nm needs [N, M] with 0 < N < M (2:4 for sparse tensor cores), got {config.nm}"
    m = config.nm[1]
    for name, shape in shapes.items():
        if fractions[name] > 0 and shape[1] % m:
            return f"prune.nm: {name} has input dimension {shape[1]}, not a multiple of M = {m}; leave it dense (prune.dense_layers)"
    return None
