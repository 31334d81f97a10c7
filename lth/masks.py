"""Mask arithmetic: pure functions on `{parameter name: tensor}` dicts. A mask is a bool tensor shaped
like its weight; True keeps the weight."""

from __future__ import annotations

import fnmatch
import hashlib
import math

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


def random_like(masks: Masks, generator: torch.Generator) -> Masks:
    """A random mask with exactly as many kept weights in each layer as `masks` (the random-pruning
    control of Frankle & Carbin 2019, §2)."""
    return random_with({name: (tuple(mask.shape), int(mask.sum())) for name, mask in masks.items()}, generator)


def random_with(counts: dict[str, tuple[tuple[int, ...], int]], generator: torch.Generator) -> Masks:
    """A random mask per layer of the given shape keeping exactly the given number of weights, drawn layer by layer
    in the order of the layers' names."""
    shuffled = {}
    for name in sorted(counts):
        shape, kept = counts[name]
        keep = torch.zeros(math.prod(shape), dtype=torch.bool)
        keep[torch.randperm(math.prod(shape), generator=generator)[:kept]] = True
        shuffled[name] = keep.view(shape)
    return shuffled


def channels_alive(mask: torch.Tensor) -> torch.Tensor:
    """[channels] bool: the output channels (rows) of a weight mask that keep at least one weight."""
    return mask.flatten(1).any(1)


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
