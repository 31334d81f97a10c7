"""Iterative pruning (Frankle & Carbin 2019, §2): level k removes the fraction p of the weights that level
k-1's trained ticket kept, then the arms train from the rewind point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lth import masks as M
from lth.methods import METHODS

if TYPE_CHECKING:
    from lth.imp import Run
    from lth.module import MaskedModule


def level_masks(run: Run, level: int, module: MaskedModule) -> M.Masks:
    """Level 0 is dense; level k prunes level k-1's trained ticket. Made once, then read from disk."""
    if level == 0:
        return M.ones_like(module.weights())
    path = run.dir.mask(level)
    if path.exists():
        return run.dir.load(path)
    trained = run.trained_weights(level - 1)
    p = run.cfg.prune
    dense = list(module.model.dense_layers if p.dense_layers is None else p.dense_layers)
    fractions = M.layer_fractions(module.prunable, p.fraction, p.layer_fractions, dense)
    weights = {n: trained[n] for n in module.prunable}
    previous = {n: trained[f"{n}_mask"] for n in module.prunable}
    masks = METHODS[p.method](weights, previous, fractions, p.strategy)
    run.dir.save(masks, path)
    return masks
