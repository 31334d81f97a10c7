from dataclasses import dataclass, replace

from lth.arms.base import INIT, Arm


@dataclass
class Params:
    # Scratch-B trains for the dense run's compute: epochs × dense MACs / pruned MACs, at most `max_factor`
    # times as long (Liu et al. 2019 cap it at 2 in their ImageNet code; null removes the cap, as in their
    # CIFAR code).
    max_factor: float | None = 2.0


class ScratchB(Arm):
    """Scratch-B (Liu et al. 2019, §4): the ticket's masks on a fresh init, trained from step 0 for the dense
    run's compute — steps × dense MACs / pruned MACs, capped at `scratch_b.max_factor` — with the LR
    milestones scaled alike."""

    name = "scratch_b"
    order = 4
    weights = INIT
    from_rewind_point = False
    Params = Params

    def own_steps(self, ctx):
        factor = ctx.macs(None) / ctx.macs(ctx.masks)
        if ctx.params.max_factor is not None:
            factor = min(factor, ctx.params.max_factor)
        s = ctx.steps
        return replace(s, total_steps=round(s.total_steps * factor), milestone_steps=tuple(round(m * factor) for m in s.milestone_steps)), None

    def check(self, params) -> str | None:
        if params.max_factor is not None and params.max_factor < 1:
            return f"scratch_b.max_factor: must be at least 1 or null, got {params.max_factor}"
        return None
