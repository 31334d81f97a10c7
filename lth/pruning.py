"""The experiment's pruning, resolved from its `prune` settings: its method and schedule (by name, from their
registries), the unit it removes, each layer's fraction, and the one loop that turns a method's scores into a
level's masks (`prune`)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from lth import blocks, channels
from lth import masks as M
from lth.architecture import Architecture
from lth.methods import METHODS
from lth.methods.base import Method, Scoring
from lth.models import dense_layers
from lth.ranking import Blocks, Channels, Weights
from lth.schedules import SCHEDULES
from lth.schedules.base import Schedule


def method(prune) -> Method:
    return METHODS[prune.method]


def schedule(prune) -> Schedule:
    return SCHEDULES[prune.schedule]


def unit(prune, architecture: Architecture) -> Weights | Channels | Blocks:
    """What the method removes from this network (a channel unit knows which channels can go alone, a block unit which
    residual blocks there are)."""
    return method(prune).unit(prune.method_params, lambda: channels.removable(architecture), lambda: blocks.of(architecture))


def layer_fractions(prune, model: nn.Module, names: list[str]) -> dict[str, float]:
    """Each prunable layer's fraction per pruned level under the experiment's `prune` settings (0: dense)."""
    dense = list(dense_layers(model) if prune.dense_layers is None else prune.dense_layers)
    return M.layer_fractions(names, schedule(prune).fraction(prune.schedule_params, prune.fraction), prune.layer_fractions, dense)


def level_masks(prune, unit: Weights | Channels, scoring: Scoring) -> M.Masks:
    """The masks of one level: the method's scores ranked by its unit, in `rounds` compounding steps of equal
    fraction (one for every method but iterative rescoring ones), each scored on the masks the last one left."""
    m, params = method(prune), prune.method_params
    rounds = m.rounds(params)
    fractions = scoring.fractions
    if rounds > 1:  # (1 - f) kept after all rounds; one round keeps f exactly as given
        fractions = {n: 1.0 - (1.0 - f) ** (1.0 / rounds) for n, f in fractions.items()}
    masks = scoring.masks
    for _ in range(rounds):
        now = replace(scoring, masks=masks, fractions=fractions)
        masks = unit.keep(m.scores(now, params), masks, fractions, prune.strategy)
    return masks
