"""What the data-driven channel criteria read of a trained network: the input each layer that consumes a removable
layer's channels receives over a few batches, kept as the criterion needs it. ThiNet (Luo et al. 2017) and He et
al. (2017)'s regression read sampled rows of the consumer's computation y = W x; APoZ (Hu et al. 2016) counts the
zeros of each channel. A hook keeps only that of each batch, so no layer's whole input is held in memory.

The consumer, not the producer, is read: what a channel contributes is what the next layer receives of it, after
its batch norm, its ReLU and any pooling or flattening between them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from lth.channels import Removable
from lth.inputs import call

if TYPE_CHECKING:  # a method imports this module while lth.methods imports the methods
    from lth.methods.base import Scoring


@dataclass(frozen=True)
class Consumer:
    """Sampled rows of one consumer layer's computation y = W x, its bias left out: `x` [S, F] rows of its input (a
    conv's receptive fields, laid out as `F.unfold` lays them out), `weight` [n, F] its weight flattened the same way,
    and `columns[c]`, the columns of `x` that the producer's channel c feeds."""

    name: str  # the consumer's weight
    x: torch.Tensor
    weight: torch.Tensor
    columns: list[torch.Tensor]

    def output(self) -> torch.Tensor:
        """[S, n]: every output of every sampled row."""
        return self.x @ self.weight.T

    def contributions(self, outputs: torch.Tensor) -> torch.Tensor:
        """[S, C]: each channel's share of one output per row, `outputs[s]` of row s (Luo et al. 2017, eq. 3: the
        output is the sum of the channels' shares)."""
        products = self.x * self.weight[outputs]
        return torch.stack([products[:, cols].sum(1) for cols in self.columns], 1)

    def of_channels(self, kept: torch.Tensor) -> torch.Tensor:
        """The columns of `x` (and of `weight`) that the channels `kept` (bool per channel) feed."""
        return torch.cat([cols for cols, k in zip(self.columns, kept.tolist()) if k])


def _module(network: nn.Module, weight: str) -> nn.Module:
    return network.get_submodule(weight.rpartition(".")[0])


def read(scoring: Scoring, batches: int, reads: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Over the first `batches` training batches, each named layer's input (keyed by its weight) through its `read`,
    concatenated along the first dimension. The trained network runs in eval mode: its batch norms use their running
    statistics, as at test time."""
    network = scoring.network(scoring.trained).eval()
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in reads}
    handles = [_module(network, name).register_forward_pre_hook(lambda m, args, name=name: kept[name].append(reads[name](args[0].detach())))
               for name in reads]
    try:
        with torch.no_grad():
            for x, _ in scoring.batches(batches):
                call(network, x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in kept.items()}


def _rows(module: nn.Module, locations: int, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A read of `locations` receptive fields per example, drawn at random (a linear layer's input is one row)."""
    if isinstance(module, nn.Linear):
        return lambda x: x.flatten(1)

    def fields(x: torch.Tensor) -> torch.Tensor:
        one_d = x.dim() == 3  # a 1-D conv as a 2-D one of height 1: no padding along the height
        grow = (lambda t, fill=1: (fill, *t)) if one_d else (lambda t, fill=1: tuple(t))
        patches = F.unfold(x.unsqueeze(2) if one_d else x, grow(module.kernel_size), grow(module.dilation), grow(module.padding, 0), grow(module.stride))
        at = torch.randint(patches.shape[2], (len(x), min(locations, patches.shape[2])), generator=generator)
        return patches.gather(2, at[:, None].expand(-1, patches.shape[1], -1)).transpose(1, 2).flatten(0, 1)

    return fields


def consumers(scoring: Scoring, batches: int, locations: int) -> dict[str, list[Consumer]]:
    """For each layer the level prunes, the sampled rows of every layer that reads its channels. Locations are drawn from
    a generator seeded with 0, so that a level's choice is a function of the run's data order alone."""
    layers = [layer for layer in scoring.structure if scoring.fractions[layer] > 0]
    network = scoring.network(scoring.trained)
    generator = torch.Generator().manual_seed(0)
    structure: dict[str, Removable] = scoring.structure
    wanted = {weight: _rows(_module(network, weight), locations, generator) for layer in layers for weight, _ in structure[layer].consumers}
    for weight in wanted:
        module = _module(network, weight)
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1:
            raise ValueError(f"{weight}: a grouped convolution's input channels are not its rows")
    rows = read(scoring, batches, wanted)
    out = {}
    for layer in layers:
        out[layer] = []
        for weight, columns in structure[layer].consumers:
            flat = network.get_parameter(weight).detach().flatten(1)
            per_input = flat.shape[1] // network.get_parameter(weight).shape[1]  # a conv's kernel positions per input channel
            cols = [torch.tensor([i * per_input + k for i in group for k in range(per_input)], dtype=torch.long) for group in columns]
            out[layer].append(Consumer(weight, rows[weight], flat, cols))
    return out
