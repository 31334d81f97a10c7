"""Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep
Networks", §4 and Algorithm 1): the mask a one-shot pruning of `target` would draw stops changing early in dense
training, so the dense run can stop there, which is the method's point: the compute it saves.

While the dense network trains (level 0), at each evaluation its mask is drawn as the level would draw it (the
experiment's method and ranking: Network Slimming's channels as in the paper, or weight magnitudes), and its
distance from the previous evaluation's: the fraction of units (channels under a channel method, weights
otherwise) whose keep-or-remove differs, the normalised Hamming distance (§4.1). Once the last `window`
distances all lie below `epsilon` (the paper's FIFO queue of 5 and ε = 0.1, §4.2), and the rewind point is
captured, the dense run ends there: its results line says so and counts the steps it took, and the one pruned
level draws its mask from the network it ended with. You et al. draw a mask at each epoch's end; here at each
evaluation (`train.eval_every`), so that the network the dense run ends with is one its results line evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback

from lth import masks as M
from lth.packing import member_states
from lth.schedules import oneshot


@dataclass
class Params(oneshot.Params):  # `target`: the fraction of weights the pruned level keeps
    epsilon: float = 0.1  # You et al. 2020, §4.2
    window: int = 5  # the last distances that must all lie below epsilon (§4.2: a FIFO queue of length 5)


def distance(a: M.Masks, b: M.Masks, channels: bool) -> float:
    """The fraction of units whose keep-or-remove differs between two masks: output channels (those keeping a
    weight) or single weights."""
    units = (lambda m: M.channels_alive(m)) if channels else (lambda m: m.flatten())
    flips = sum(int((units(a[n]) != units(b[n])).sum()) for n in a)
    return flips / sum(units(a[n]).numel() for n in a)


def drawn(distances: list[float], params: Params) -> bool:
    """Whether the mask has settled: the last `window` distances all below `epsilon`."""
    return len(distances) >= params.window and max(distances[-params.window :]) < params.epsilon


class EarlyBird(oneshot.Oneshot):
    name = "earlybird"
    Params = Params

    def check(self, params, prune, steps):
        if problem := super().check(params, prune, steps):
            return problem
        if not 0 < params.epsilon <= 1:
            return f"prune.earlybird.epsilon: must lie in (0, 1], got {params.epsilon}"
        if params.window < 1:
            return f"prune.earlybird.window: must be at least 1, got {params.window}"
        return None

    def hooks(self, params, level, fractions, prune, unit):
        return [WatchMasks(params, fractions, prune, unit.removes_channels)] if level == 0 else []

    def may_end_early(self, level):
        return level == 0


class WatchMasks(Callback):
    """Draws each member's mask at every evaluation of the dense run, and ends the run once they have all settled.
    Its state (each member's last mask and distances) lives in each member's own checkpoint (`member_states`)."""

    KEY = "earlybird"

    def __init__(self, params: Params, fractions: dict[str, float], prune, channels: bool):
        self.params, self.fractions, self.prune, self.channels = params, fractions, prune, channels
        self.previous: list[M.Masks | None] = []
        self.distances: list[list[float]] = []

    def on_fit_start(self, trainer, pl_module):
        if not self.distances:  # not restored from a checkpoint (`on_load_checkpoint` runs first)
            self.previous, self.distances = [None] * pl_module.pack, [[] for _ in range(pl_module.pack)]

    @torch.no_grad()
    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        for k, (state, masks) in enumerate(pl_module.runs()):
            mask = self.prune(state, masks, self.fractions)
            if self.previous[k] is not None:
                self.distances[k].append(distance(self.previous[k], mask, self.channels))
            self.previous[k] = mask
        step, total = trainer.global_step, pl_module.steps.total_steps
        if step >= pl_module.steps.rewind_step and step < total and all(drawn(d, self.params) for d in self.distances):
            largest = max(max(d[-self.params.window :]) for d in self.distances)
            pl_module.end_early(f"early-bird ticket drawn: the last {self.params.window} mask distances below {self.params.epsilon:g} "
                                f"(at most {largest:.4f}); ended at step {step} of {total}, {1 - step / total:.0%} of the dense run's steps saved")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        for state, previous, distances in zip(member_states(checkpoint, pl_module.pack), self.previous, self.distances):
            state[self.KEY] = {"previous": previous, "distances": distances}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        saved = [state.get(self.KEY, {}) for state in member_states(checkpoint, pl_module.pack)]
        self.previous = [s.get("previous") for s in saved]
        self.distances = [list(s.get("distances", [])) for s in saved]
