"""One-shot pruning (Han et al. 2015; Liu et al. 2019, §4; as TF-MOT's ConstantSparsity and NVIDIA's ASP do it):
train the dense network, prune it once so that `prune.oneshot.target` of the weights remain, then train the
arms on that mask. It is one level of `iterative` with fraction 1 - target."""

from dataclasses import dataclass

from lth.schedules.base import Schedule


@dataclass
class Params:
    target: float | None = None  # the fraction of weights to keep, in (0, 1)


class Oneshot(Schedule):
    name = "oneshot"
    Params = Params

    def fraction(self, params, fraction):
        return 1.0 - params.target

    def check(self, params, prune, steps):
        if params.target is None or not 0.0 < params.target < 1.0:
            return f"prune.{self.name}.target: the {self.name} schedule needs the fraction of weights to keep, in (0, 1), got {params.target}"
        if prune.levels != 1:
            return f"prune.levels: the {self.name} schedule has one pruned level; set prune.levels: 1 (got {prune.levels})"
        return None
