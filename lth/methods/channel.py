"""How p% of channels is pruned: whole output channels (conv filters, linear units) ranked by the L1 norm of
their kept weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets", §3.1), from the layers whose
channels can be removed alone (`lth.channels`: in a ResNet, the first conv of each block)."""

from __future__ import annotations

from lth import channels
from lth.masks import Masks, channels_alive

STRUCTURED = True


def scores(weights, masks: Masks, fractions: dict[str, float], strategy: str, structure) -> dict:
    """Each channel's L1 norm. Under `global` it is divided by the mean over its layer's remaining channels:
    layers of different fan-in have norms of different scale (He-normal weights scale as 1/sqrt(fan-in)), and
    raw norms would empty the widest-fan-in layers first. Li et al. prune layerwise."""
    out = {}
    for layer in structure:
        if fractions[layer] > 0:
            norm = (weights[layer].detach().abs().float() * masks[layer]).flatten(1).sum(1)
            kept = channels_alive(masks[layer])
            out[layer] = norm / norm[kept].mean() if strategy == "global" else norm
    return out


def prune(weights, masks: Masks, fractions: dict[str, float], strategy: str, structure) -> Masks:
    return channels.drop(scores(weights, masks, fractions, strategy, structure), masks, fractions, strategy, structure)


def apply(trained, masks: Masks, fractions: dict[str, float], config, structure) -> Masks:
    return prune(trained, masks, fractions, config.strategy, structure)


def check(config, shapes, fractions: dict[str, float], structure) -> str | None:
    if not any(fractions[layer] > 0 for layer in structure):
        return "prune.method: channel finds no pruned layer whose output channels can be removed alone (see lth/channels.py)"
    return None
