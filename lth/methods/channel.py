"""Whole output channels (conv filters, linear units) ranked by the L1 norm of their kept weights (Li et al.
2017, "Pruning Filters for Efficient ConvNets", §3.1), from the layers whose channels can be removed alone
(`lth.channels`: in a ResNet, the first conv of each block)."""

from lth.masks import channels_alive
from lth.methods.base import Method
from lth.ranking import Channels


class Channel(Method):
    name = "channel"

    def unit(self, params, removable, residual=dict):
        return Channels(removable())

    def scores(self, scoring, params):
        """Each channel's L1 norm. Under `global` it is divided by the mean over its layer's remaining channels:
        layers of different fan-in have norms of different scale (He-normal weights scale as 1/sqrt(fan-in)), and
        raw norms would empty the widest-fan-in layers first. Li et al. prune layerwise."""
        out = {}
        for layer in scoring.structure:
            if scoring.fractions[layer] > 0:
                mask = scoring.masks[layer]
                norm = (scoring.trained[layer].detach().abs().float() * mask).flatten(1).sum(1)
                out[layer] = norm / norm[channels_alive(mask)].mean() if scoring.strategy == "global" else norm
        return out

    def check(self, params, strategy, shapes, fractions, unit):
        if not any(fractions[layer] > 0 for layer in unit.structure):
            return "prune.method: channel finds no pruned layer whose output channels can be removed alone (see lth/channels.py)"
        return None
