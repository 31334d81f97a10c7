"""What a pruning method is: a score for each weight (or group, or channel) of a level, and the unit that the
one shared ranking (`lth.ranking`) removes by those scores. A method that acts while its chain trains declares
a penalty; a method with settings declares a `Params` dataclass, read from `prune.<name>` and validated by its
`check`. Only the driver (`lth.imp`) builds networks and trains them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lth import blocks, channels, ranking
from lth.inputs import Inputs, Shape
from lth.masks import Masks

State = dict[str, torch.Tensor]  # a network's state, keyed as the network names it (weights, buffers, masks)


@dataclass(frozen=True)
class Scoring:
    """What a criterion may read to score one level: read-only, from the driver."""

    trained: State  # the network the level is pruned from, trained (or, mid-training, as it is now)
    masks: Masks  # the masks it is pruned from
    fractions: dict[str, float]  # each prunable layer's fraction to remove (0: it stays as it is)
    strategy: str  # `prune.strategy`
    structure: dict[str, channels.Removable]  # the layers whose channels the unit removes (empty for weights)
    rewound: Callable[[], State]  # the weights the level's arms start from: what a criterion at initialisation scores
    # A fresh unpacked network holding a state (its weights times its masks), in train mode; `lth.models.logits` reads
    # its output, whatever form the model returns it in.
    network: Callable[[State], nn.Module]
    # The first n training batches of the run's data order, as (inputs, labels): a criterion reads as many as its
    # paper averages over (SNIP one, GraSP several), the same ones at every level and for every arm.
    batches: Callable[[int], list[tuple[Inputs, torch.Tensor]]]
    input_shape: Shape  # of one example (`lth.inputs`)


class Method:
    """A pruning criterion (`prune.method`): scores for the weights (or channels) of a level, the unit the ranking
    removes by them, and optionally its settings, their check, rescoring rounds and a training penalty."""

    name: ClassVar[str]
    Params: ClassVar[type | None] = None  # its settings under `prune.<name>`; None: it has none
    order: ClassVar[int] = 100  # where it stands in the listing of methods
    # The settings, beyond its name, that make a small experiment of lth's own networks valid for it (`--key=value`):
    # the example the settings reference shows, and what the registry-wide tests run it with.
    example: ClassVar[tuple[str, ...]] = ()
    # What `refit` reconstructs, in a phrase for the report ("" when it refits nothing).
    reconstructs: ClassVar[str] = ""

    def unit(self, params: Any, removable: Callable[[], dict[str, channels.Removable]],
             residual: Callable[[], dict[str, blocks.Block]] = dict) -> ranking.Weights | ranking.Channels | ranking.Blocks:
        """What it removes; `removable()` traces the network for the layers whose channels can go alone, `residual()`
        finds its residual blocks (`lth.blocks`)."""
        return ranking.Weights()

    def scores(self, scoring: Scoring, params: Any) -> dict[str, torch.Tensor]:
        """Higher is kept; one score per weight (per channel for a channel unit) of the layers it ranks."""
        raise NotImplementedError

    def rounds(self, params: Any) -> int:
        """Rescorings per level: the level's fraction is removed in this many equal compounding steps, each
        scored on the masks the previous one left (SynFlow's iterative pruning, Tanaka et al. 2020, §6)."""
        return 1

    def check(self, params: Any, strategy: str, shapes: dict[str, tuple[int, ...]], fractions: dict[str, float], unit) -> str | None:
        """What is wrong with its settings for these layers (one line), before any training."""
        return None

    def refit(self, scoring: Scoring, params: Any, masks: Masks) -> State:
        """Weights it reconstructs for the masks it has just chosen, by name (ThiNet's and He et al.'s least squares
        refit the next layer to the channels kept): the arms that train the pruned weights on (fine-tuning, LR
        rewinding) start from them instead of the trained ones. `scoring` is the level's, before pruning."""
        return {}

    def penalty(self, params: Any, unit) -> Callable[[nn.Module, int], torch.Tensor] | None:
        """A term added to the training loss of the networks its chain prunes next (Network Slimming's), given the
        network and how many runs it packs; `unit` is what it removes."""
        return None
