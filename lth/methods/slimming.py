"""Network Slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming"): an
L1 penalty on the batch-norm scales γ while the networks to be pruned train (`prune.slimming_l1`, λ = 1e-4 in
§4.3 for VGG and ResNet on CIFAR; `MaskedModule` adds λ·Σ|γ| to their loss), then the channels of smallest |γ|
removed under one global threshold across layers (§3.2), from the layers whose channels can be removed alone
(`lth.channels`)."""

from __future__ import annotations

from lth import channels
from lth.masks import Masks

STRUCTURED = True


def prune(trained, masks: Masks, fractions: dict[str, float], structure) -> Masks:
    scores = {layer: trained[r.scale].detach().abs() for layer, r in structure.items() if r.scale and fractions[layer] > 0}
    return channels.drop(scores, masks, fractions, "global", structure)


def apply(trained, masks: Masks, fractions: dict[str, float], config, structure) -> Masks:
    return prune(trained, masks, fractions, structure)


def check(config, shapes, fractions: dict[str, float], structure) -> str | None:
    if not any(r.scale and fractions[layer] > 0 for layer, r in structure.items()):
        return "prune.method: slimming ranks channels by batch-norm scales, and no pruned layer that can lose channels has a batch norm after it"
    if config.strategy != "global":
        return "prune.strategy: slimming removes channels under one threshold across layers (Liu et al. 2017, §3.2); set prune.strategy: global"
    if config.slimming_l1 is None or config.slimming_l1 < 0:
        return f"prune.slimming_l1: slimming needs the L1 penalty on batch-norm scales, >= 0 (1e-4 in Liu et al. 2017), got {config.slimming_l1}"
    return None
