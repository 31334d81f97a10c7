"""ThiNet (Luo et al. 2017, "ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression"): whether
layer i's channel can go is read off layer i+1, whose output is the sum of each input channel's share (§3.2, eq. 3).
The channels removed are the set whose shares sum closest to zero over sampled outputs, chosen greedily (Algorithm 1),
and the next layer's weights on the channels kept are rescaled by least squares to make up what was removed (§3.3).

Each sample is one receptive field of one example at one output channel, drawn at random (§3.2; §4.1 draws 10 per
image). Algorithm 1 adds to the removed set, one at a time, the channel that keeps the sum of the removed shares
smallest; that choice never depends on how many will go, so the order of removal ranks every channel and the ranking
removes the first as many as the level's fraction says. Its scores are per layer: prune it `layerwise`, as Luo et al.
do. Unlike Luo et al., who prune one layer and fine-tune it for an epoch before the next (§3.1), a level chooses every
layer's channels from the one network it prunes."""

from dataclasses import dataclass

import torch

from lth import activations
from lth.masks import channels_alive
from lth.methods.base import Method
from lth.ranking import Channels


@dataclass
class Params:
    # The first training batches of the run's data order that are sampled: a CPU-sized share of Luo et al.'s 10
    # images per ImageNet class (§4.1, 10,000 images).
    batches: int = 10
    locations: int = 10  # receptive fields sampled per example, each at a random output channel (§4.1: 10)


def shares(consumers: list[activations.Consumer]) -> torch.Tensor:
    """[S, C]: each channel's share of one output per sample, over every layer that reads the channels, the outputs
    drawn at random (Luo et al. 2017, §3.2) from a generator seeded with 0."""
    generator = torch.Generator().manual_seed(0)
    return torch.cat([c.contributions(torch.randint(c.weight.shape[0], (len(c.x),), generator=generator)) for c in consumers])


def removal_order(x: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 run to the end over the channels `alive`: each step removes the channel whose share, added to the
    shares removed so far, leaves the smallest sum of squares over the samples (eq. 6). Returns each alive channel's
    step (0: removed first); a channel already gone gets -1."""
    x = x.double()
    order = torch.full((x.shape[1],), -1, dtype=torch.long)
    removed_sum = torch.zeros(len(x), dtype=torch.float64)
    candidates = alive.clone()
    for step in range(int(alive.sum())):
        cost = ((removed_sum[:, None] + x) ** 2).sum(0).masked_fill(~candidates, torch.inf)
        best = int(torch.argmin(cost))  # ties go to the earlier channel
        order[best], candidates[best] = step, False
        removed_sum += x[:, best]
    return order


class ThiNet(Method):
    name = "thinet"
    Params = Params
    example = ("--prune.strategy=layerwise",)
    reconstructs = "the next layer's weights on the channels kept, rescaled by least squares (Luo et al. 2017, §3.3)"

    def unit(self, params, removable, residual=dict):
        return Channels(removable())

    def scores(self, scoring, params):
        """The later a channel would be removed, the higher its score."""
        return {layer: removal_order(shares(samples), channels_alive(scoring.masks[layer])).float()
                for layer, samples in activations.consumers(scoring, params.batches, params.locations).items()}

    def refit(self, scoring, params, masks):
        """§3.3, eq. 7: the scale w per kept channel minimising Σ (ŷ − wᵀx̂)² over the samples, where ŷ is the output
        of every channel (removed ones included) and x̂ the kept channels' shares; each kept channel's columns of the
        next layer's weight are multiplied by its w."""
        out = {}
        for layer, samples in activations.consumers(scoring, params.batches, params.locations).items():
            kept = channels_alive(masks[layer])
            x = shares(samples).double()
            scale = torch.linalg.lstsq(x[:, kept], x.sum(1, keepdim=True)).solution.flatten()
            for consumer in samples:
                weight = out.get(consumer.name, scoring.trained[consumer.name]).detach().clone()  # two producers may feed one layer
                flat = weight.flatten(1)
                for cols, w in zip([cols for cols, k in zip(consumer.columns, kept.tolist()) if k], scale.tolist()):
                    flat[:, cols] *= w
                out[consumer.name] = flat.view_as(weight) * masks[consumer.name]
        return out

    def check(self, params, strategy, shapes, fractions, unit):
        if not any(fractions[layer] > 0 for layer in unit.structure):
            return "prune.method: thinet finds no pruned layer whose output channels can be removed alone (see lth/channels.py)"
        if strategy != "layerwise":
            return "prune.strategy: thinet's scores are an order of removal within a layer (Luo et al. 2017, Algorithm 1); set prune.strategy: layerwise"
        if params.batches < 1 or params.locations < 1:
            return f"prune.thinet: batches and locations must be at least 1, got {params.batches} and {params.locations}"
        return None
