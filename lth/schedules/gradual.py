"""Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1; TF-MOT's `PolynomialDecay`, power 3):
while the ticket trains level 1 from the rewind point, its masks shrink from dense to `prune.target` of the
weights, s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))³ with s_i = 0, at t = t0, t0 + Δt, ..., t0 + n·Δt
(`begin_step`, `frequency`, `end_step`), each time removing the smallest-magnitude remaining weights. The
other arms then train on its final mask (`MASKS_FROM_TRAINING`)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from lth.methods import magnitude
from lth.packing import pack_state, unpack_state

# Level 1's masks come out of the ticket's own training, so the other arms of level 1 train after it.
MASKS_FROM_TRAINING = True


def sparsity(step: int, begin: int, end: int, frequency: int, final: float) -> float | None:
    """s_t at pruning step `step`, or None if `step` is not one."""
    if step < begin or step > end or (step - begin) % frequency:
        return None
    return final + (0.0 - final) * (1 - (step - begin) / (end - begin)) ** 3


def fraction(config) -> float:
    return 1.0 - config.target


def check(config, steps) -> str | None:
    if config.target is None or not 0.0 < config.target < 1.0:
        return f"prune.target: the gradual schedule needs the fraction of weights to keep, in (0, 1), got {config.target}"
    if config.levels != 1:
        return f"prune.levels: the gradual schedule has one pruned level; set prune.levels: 1 (got {config.levels})"
    if config.method != "magnitude":
        return f"prune.method: the gradual schedule prunes by magnitude, not {config.method}"
    begin, end, every = config.begin_step, config.end_step, config.frequency
    if None in (begin, end, every):
        return "prune.begin_step, prune.end_step, prune.frequency: the gradual schedule needs all three (in steps)"
    if not steps.rewind_step <= begin < end <= steps.total_steps:
        return (f"prune.begin_step, prune.end_step: need rewind step ({steps.rewind_step}) <= begin ({begin}) < end ({end}) "
                f"<= the end of training ({steps.total_steps})")
    if not 1 <= every <= end - begin:
        return f"prune.frequency: must lie in [1, end_step - begin_step = {end - begin}], got {every}"
    return None


class GradualPruning(Callback):
    """Prunes every member of a pack of tickets to s_t at each pruning step, after its optimizer step."""

    def __init__(self, config, fractions: dict[str, float]):
        self.config, self.fractions = config, fractions

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        c = self.config
        target = sparsity(trainer.global_step, c.begin_step, c.end_step, c.frequency, 1.0 - c.target)
        if target is None:
            return
        pruned = [n for n, f in self.fractions.items() if f > 0]
        new = []
        weights = unpack_state({n: w.detach() for n, w in pl_module.weights().items()}, pl_module.pack)
        for w, m in zip(weights, unpack_state(pl_module.masks(), pl_module.pack)):
            kept = sum(int(m[n].sum()) for n in pruned)
            goal = round((1.0 - target) * sum(m[n].numel() for n in pruned))
            remove = max(kept - goal, 0) / kept
            new.append(magnitude.prune(w, m, {n: (remove if n in pruned else 0.0) for n in m}, c.strategy))
        pl_module.set_masks(pack_state(new))
