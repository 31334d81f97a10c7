"""Iterative pruning (Frankle & Carbin 2019, §2): level k removes the fraction p of the weights that level
k-1's trained network kept (the ticket's, or that of an arm with a chain of its own), then the arms train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth import masks as M
from lth.methods import METHODS

if TYPE_CHECKING:
    from lth.arms.base import Arm
    from lth.imp import Run
    from lth.module import MaskedModule


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
    dense = list(module.model.dense_layers if p.dense_layers is None else p.dense_layers)
    fractions = M.layer_fractions(module.prunable, p.fraction, p.layer_fractions, dense)
    weights = {n: trained[n] for n in module.prunable}
    previous = {n: trained[f"{n}_mask"] for n in module.prunable}
    masks = METHODS[p.method](weights, previous, fractions, p.strategy)
    run.dir.save(masks, path)
    return masks
