"""Pruning schedules (`prune.schedule`), one file each: `fraction(config)`, the fraction of its remaining
weights a chain loses at each pruning step, and `check(config)`, what is wrong with the experiment's
settings for it (one line). `level_masks` below is what every schedule shares: how a chain's level is made
from its previous level, trained, with the experiment's pruning method (`lth.methods`)."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from torch import nn

from lth import masks as M
from lth.methods import METHODS
from lth.schedules import iterative, oneshot

if TYPE_CHECKING:
    from lth.arms.base import Arm
    from lth.imp import Run
    from lth.module import MaskedModule

SCHEDULES: dict[str, ModuleType] = {"iterative": iterative, "oneshot": oneshot}


def layer_fractions(config, model: nn.Module, names: list[str]) -> dict[str, float]:
    """Each prunable layer's fraction per pruning step under the experiment's `prune` settings (0: dense)."""
    dense = list(model.dense_layers if config.dense_layers is None else config.dense_layers)
    return M.layer_fractions(names, SCHEDULES[config.schedule].fraction(config), config.layer_fractions, dense)


def level_masks(run: Run, level: int, module: MaskedModule, arm: Arm) -> M.Masks:
    """The masks of `arm`'s chain at `level`: level 0 is dense; level k prunes the chain's level k-1, trained
    (`Arm.source`). Made once, then read from disk."""
    if level == 0:
        return M.ones_like(module.weights())
    path = run.dir.mask(level, arm.chain())
    if path.exists():
        return run.dir.load(path)
    trained = run.trained_weights(level - 1, arm.source(level))
    p = run.cfg.prune
    weights = {n: trained[n] for n in module.prunable}
    previous = {n: trained[f"{n}_mask"] for n in module.prunable}
    masks = METHODS[p.method].apply(weights, previous, layer_fractions(p, module.model, module.prunable), p)
    run.dir.save(masks, path)
    return masks
