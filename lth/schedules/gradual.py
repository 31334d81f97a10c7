"""Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1; TF-MOT's `PolynomialDecay`, power 3):
while the ticket trains level 1 from the rewind point, its masks shrink from dense to `target` of the weights,
s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))³ with s_i = 0, at t = t0, t0 + Δt, ..., t0 + n·Δt (`begin_step`,
`frequency`, `end_step`), each time removing the smallest-magnitude remaining weights. The other arms then
train on its final mask."""

from __future__ import annotations

from dataclasses import dataclass

from lightning.pytorch.callbacks import Callback

from lth.packing import pack_state
from lth.schedules import oneshot


@dataclass
class Params(oneshot.Params):  # `target`: the fraction of weights to keep, in (0, 1), reached by `end_step`
    begin_step: int | None = None  # the first pruning step, at or after the rewind step
    end_step: int | None = None  # the last, where `target` is reached
    frequency: int | None = None  # steps between pruning steps


def sparsity(step: int, begin: int, end: int, frequency: int, final: float) -> float | None:
    """s_t at pruning step `step`, or None if `step` is not one."""
    if step < begin or step > end or (step - begin) % frequency:
        return None
    return final + (0.0 - final) * (1 - (step - begin) / (end - begin)) ** 3


class Gradual(oneshot.Oneshot):
    """One level pruned to a target, as one-shot, but while the ticket trains rather than after."""

    name = "gradual"
    Params = Params
    masks_from_training = True

    def check(self, params, prune, steps):
        if problem := super().check(params, prune, steps):
            return problem
        if prune.method != "magnitude":
            return f"prune.method: the gradual schedule prunes by magnitude, not {prune.method}"
        begin, end, every = params.begin_step, params.end_step, params.frequency
        if None in (begin, end, every):
            return "prune.gradual.begin_step, end_step, frequency: the gradual schedule needs all three (in steps)"
        if not steps.rewind_step <= begin < end <= steps.total_steps:
            return (f"prune.gradual.begin_step, end_step: need rewind step ({steps.rewind_step}) <= begin ({begin}) < end ({end}) "
                    f"<= the end of training ({steps.total_steps})")
        if not 1 <= every <= end - begin:
            return f"prune.gradual.frequency: must lie in [1, end_step - begin_step = {end - begin}], got {every}"
        return None

    def hooks(self, params, level, fractions, prune, unit):
        return [GradualPruning(params, fractions, prune)] if level == 1 else []

    def settled_at(self, params):
        return params.end_step


class GradualPruning(Callback):
    """Prunes every member of a pack of tickets to s_t at each pruning step, after its optimizer step."""

    def __init__(self, params: Params, fractions: dict[str, float], prune):
        self.params, self.fractions, self.prune = params, fractions, prune

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        p = self.params
        target = sparsity(trainer.global_step, p.begin_step, p.end_step, p.frequency, 1.0 - p.target)
        if target is None:
            return
        pruned = [n for n, f in self.fractions.items() if f > 0]
        new = []
        # Each member's whole state, as a criterion at a level boundary reads it: a method called mid-training gets
        # the same `Scoring` (`lth.methods.base`).
        for w, m in pl_module.runs():
            kept = sum(int(m[n].sum()) for n in pruned)
            goal = round((1.0 - target) * sum(m[n].numel() for n in pruned))
            remove = max(kept - goal, 0) / kept
            new.append(self.prune(w, m, {n: (remove if n in pruned else 0.0) for n in m}))
        pl_module.set_masks(pack_state(new))
