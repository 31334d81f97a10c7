from dataclasses import replace

from lth.arms.base import INIT, Arm
from lth.data import DATASETS
from lth.flops import macs


class ScratchB(Arm):
    """Scratch-B (Liu et al. 2019, §4): the ticket's masks on a fresh init, trained from step 0 for the dense
    run's compute — steps × dense MACs / pruned MACs, capped at `scratch_b.max_factor` — with the LR
    milestones scaled alike."""

    name = "scratch_b"
    weights = INIT
    from_rewind_point = False

    def schedule(self, run, module, masks):
        shape = DATASETS[run.cfg.data.name].input_shape
        factor = macs(module.model, shape) / macs(module.model, shape, masks)
        if run.cfg.scratch_b.max_factor is not None:
            factor = min(factor, run.cfg.scratch_b.max_factor)
        s = run.schedule
        steps = replace(s, total_steps=round(s.total_steps * factor), milestone_steps=tuple(round(m * factor) for m in s.milestone_steps))
        return steps, run.cfg.train
