"""Mask arithmetic: pure functions on `{parameter name: tensor}` dicts. A mask is a bool tensor shaped
like its weight; True keeps the weight."""

from __future__ import annotations

import fnmatch
import hashlib

import numpy as np
import torch

Masks = dict[str, torch.Tensor]


def layer_fractions(
    names: list[str], default: float, overrides: dict[str, float], dense: list[str]
) -> dict[str, float]:
    """The fraction of remaining weights each prunable layer loses per level.

    `overrides` maps parameter-name globs to fractions (first match wins); layers matching `dense`
    get 0 and are never pruned.
    """
    fractions = {}
    for name in names:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in dense):
            fractions[name] = 0.0
            continue
        fractions[name] = next(
            (f for pattern, f in overrides.items() if fnmatch.fnmatchcase(name, pattern)), default
        )
    return fractions


def prune_magnitude(
    weights: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], strategy: str
) -> Masks:
    """One level of magnitude pruning: remove the smallest-magnitude *remaining* weights.

    Layers are ranked in groups. `layerwise` (Frankle & Carbin 2019, §2) makes each layer its own group;
    `global` (Frankle et al. 2020, §4 for ResNet-20 and VGG-16) ranks all layers that share a fraction
    together under one threshold. A group with R remaining weights and fraction p loses round(p × R)
    of them (Python's round, half to even), so after k levels a group keeps (1-p)^k of its weights to
    within 0.5/p weights. Ties in magnitude are broken by position: the weight that comes first in
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
        scores = torch.cat(
            [weights[n].detach().abs().float().masked_fill(~masks[n], -torch.inf).flatten() for n in names]
        )
        remaining = int(torch.cat([masks[n].flatten() for n in names]).sum())
        n_dropped = scores.numel() - remaining + round(fraction * remaining)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[torch.sort(scores, stable=True).indices[:n_dropped]] = False
        for name, part in zip(names, keep.split([masks[n].numel() for n in names])):
            pruned[name] = part.view_as(masks[name])
    return pruned


def random_like(masks: Masks, generator: torch.Generator) -> Masks:
    """A random mask with exactly as many kept weights in each layer as `masks` (the random-pruning
    control of Frankle & Carbin 2019, §2)."""
    shuffled = {}
    for name in sorted(masks):
        mask = masks[name]
        keep = torch.zeros(mask.numel(), dtype=torch.bool)
        keep[torch.randperm(mask.numel(), generator=generator)[: int(mask.sum())]] = True
        shuffled[name] = keep.view(mask.shape)
    return shuffled


def ones_like(weights: dict[str, torch.Tensor]) -> Masks:
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


def weights_remaining(masks: Masks) -> tuple[float, dict[str, float]]:
    """Fraction of prunable weights kept, overall and per layer."""
    kept = {name: int(m.sum()) for name, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    return sum(kept.values()) / total, {name: kept[name] / masks[name].numel() for name in masks}


def sha256(masks: Masks) -> str:
    """A fingerprint of a set of masks: equal hashes mean the same kept weights in the same layers."""
    digest = hashlib.sha256()
    for name in sorted(masks):
        mask = masks[name].detach().cpu()
        digest.update(f"{name}:{tuple(mask.shape)}:".encode())
        digest.update(np.packbits(mask.numpy().astype(bool)).tobytes())
    return digest.hexdigest()
