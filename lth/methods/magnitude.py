"""How p% is pruned: unstructured magnitude pruning of the *remaining* weights."""

from __future__ import annotations

import torch

from lth.masks import Masks

STRUCTURED = False


def prune(weights: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], strategy: str) -> Masks:
    """Remove the smallest-magnitude remaining weights: a group of layers with R remaining weights and
    fraction p loses round(p × R) of them (Python's round, half to even), so after k levels it keeps
    (1-p)^k of its weights to within 0.5/p weights.

    Layers are ranked in groups. `layerwise` (Frankle & Carbin 2019, §2) makes each layer its own group;
    `global` (Frankle et al. 2020, §4 for ResNet-20 and VGG-16) ranks all layers that share a fraction
    together under one threshold. Ties in magnitude are broken by position: the weight that comes first in
    the group (layers in the order given, then row-major) is pruned first.
    """
    groups: dict[object, list[str]] = {}
    for name, fraction in fractions.items():
        groups.setdefault(fraction if strategy == "global" else name, []).append(name)
    pruned = dict(masks)
    for names in groups.values():
        fraction = fractions[names[0]]
        if fraction == 0.0:
            continue
        scores = torch.cat([weights[n].detach().abs().float().masked_fill(~masks[n], -torch.inf).flatten() for n in names])
        remaining = int(torch.cat([masks[n].flatten() for n in names]).sum())
        n_dropped = scores.numel() - remaining + round(fraction * remaining)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[torch.sort(scores, stable=True).indices[:n_dropped]] = False
        for name, part in zip(names, keep.split([masks[n].numel() for n in names])):
            pruned[name] = part.view_as(masks[name])
    return pruned


def apply(trained: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], config, structure) -> Masks:
    return prune(trained, masks, fractions, config.strategy)


def check(config, shapes: dict[str, tuple[int, ...]], fractions: dict[str, float], structure) -> str | None:
    return None  # any fraction in (0, 1) and either strategy suit every layer
