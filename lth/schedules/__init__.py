"""Pruning schedules (`prune.schedule`), one file each: `fraction(config)`, the fraction of its remaining
weights a chain loses at each pruning step; `check(config, steps)`, what is wrong with the experiment's
settings for it (one line); and `MASKS_FROM_TRAINING`, whether level 1's masks come out of the ticket's own
training (gradual pruning) rather than from pruning a trained network once. `level_masks` below is what
every schedule shares: how a chain's level is made, with the experiment's pruning method (`lth.methods`)."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from torch import nn

from lth import masks as M
from lth.methods import METHODS
from lth.schedules import gradual, iterative, oneshot

if TYPE_CHECKING:
    from lth.arms.base import Arm
    from lth.imp import Run
    from lth.module import MaskedModule

SCHEDULES: dict[str, ModuleType] = {"iterative": iterative, "oneshot": oneshot, "gradual": gradual}


def layer_fractions(config, model: nn.Module, names: list[str]) -> dict[str, float]:
    """Each prunable layer's fraction per pruning step under the experiment's `prune` settings (0: dense)."""
    dense = list(model.dense_layers if config.dense_layers is None else config.dense_layers)
    return M.layer_fractions(names, SCHEDULES[config.schedule].fraction(config), config.layer_fractions, dense)


def trains_the_mask(config, level: int, arm: Arm) -> bool:
    """Whether `arm` makes its level's masks by training (the ticket under gradual pruning)."""
    return SCHEDULES[config.schedule].MASKS_FROM_TRAINING and level == 1 and arm.dense


def mask_source(config, level: int, arm: Arm) -> tuple[int, str]:
    """The (level, arm) whose trained network `arm`'s masks at `level` (> 0) are made from: its chain's
    previous level (`Arm.source`), or, under gradual pruning, the ticket of this level, which pruned as it trained."""
    if SCHEDULES[config.schedule].MASKS_FROM_TRAINING and not arm.dense:
        return level, "ticket"
    return level - 1, arm.source(level)


def level_masks(run: Run, level: int, module: MaskedModule, arm: Arm) -> M.Masks:
    """The masks `arm` trains under at `level`: level 0, and a ticket that prunes as it trains, start dense;
    otherwise they come from `mask_source`'s trained network, pruned once more, or taken as they are when it
    pruned itself as it trained. Made once, then read from disk."""
    if level == 0 or trains_the_mask(run.cfg.prune, level, arm):
        return M.ones_like(module.weights())
    path = run.dir.mask(level, arm.chain())
    if path.exists():
        return run.dir.load(path)
    trained = run.trained_weights(*mask_source(run.cfg.prune, level, arm))
    p = run.cfg.prune
    previous = {n: trained[f"{n}_mask"] for n in module.prunable}
    if SCHEDULES[p.schedule].MASKS_FROM_TRAINING:
        masks = previous
    else:
        masks = METHODS[p.method].apply(trained, previous, layer_fractions(p, module.model, module.prunable), p, run.structure)
    run.dir.save(masks, path)
    return masks
