"""APoZ, the Average Percentage of Zeros (Hu et al. 2016, "Network Trimming: A Data-Driven Neuron Pruning Approach
towards Efficient Deep Architectures", §3, eq. 1): the share of a channel's activations, over examples and positions,
that its ReLU leaves at zero. A channel that rarely fires contributes little; the channels of highest APoZ go.

The activations are those the next layer reads (`lth.activations`): after the channel's batch norm, its ReLU and any
pooling or flattening, over the first training batches of the run's data order. Hu et al. measure on a held-out set;
lth's validation split chooses the early-stopping step and is read for nothing else. APoZ is a share, comparable
across layers, so `global` ranks every layer's channels together; Hu et al. trim one layer at a time (§4), which is
`layerwise`."""

from dataclasses import dataclass

import torch

from lth import activations
from lth.methods.base import Method
from lth.ranking import Channels


@dataclass
class Params:
    batches: int = 10  # the first training batches of the run's data order that are read


def zeros_per_column(x: torch.Tensor) -> torch.Tensor:
    """[2, F]: the zeros of each input column (a conv's input channel, a linear layer's input unit) over the batch and
    positions, and how many values were counted."""
    per_column = x.transpose(0, 1).flatten(1) if x.dim() > 2 else x.T
    return torch.stack([(per_column == 0).sum(1), torch.full((len(per_column),), per_column.shape[1])]).to(torch.float64)


class APoZ(Method):
    name = "apoz"
    Params = Params

    def unit(self, params, removable, residual=dict):
        return Channels(removable())

    def scores(self, scoring, params):
        """1 − APoZ of each channel, read at the first layer that reads it."""
        layers = [layer for layer in scoring.structure if scoring.fractions[layer] > 0]
        first = {layer: scoring.structure[layer].consumers[0] for layer in layers}
        counts = activations.read(scoring, params.batches, {weight: lambda x: zeros_per_column(x)[None] for weight, _ in first.values()})
        out = {}
        for layer, (weight, columns) in first.items():
            zeros, total = counts[weight].sum(0)
            network_columns = [torch.tensor(c) for c in columns]
            out[layer] = torch.stack([1 - zeros[c].sum() / total[c].sum() for c in network_columns]).float()
        return out

    def check(self, params, strategy, shapes, fractions, unit):
        if not any(fractions[layer] > 0 for layer in unit.structure):
            return "prune.method: apoz finds no pruned layer whose output channels can be removed alone (see lth/channels.py)"
        if params.batches < 1:
            return f"prune.apoz.batches: must be at least 1, got {params.batches}"
        return None
