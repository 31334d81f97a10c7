from dataclasses import replace

from lth.arms.base import PRUNED, Arm


class Finetune(Arm):
    """Fine-tuning (Renda et al. 2020, §2), as an iterative chain of its own: each level prunes the arm's own
    previous level, trained, and trains the surviving weights at the final learning rate for as many steps as
    the ticket trains."""

    name = "finetune"
    order = 5
    weights = PRUNED
    own_chain = True
    from_rewind_point = False

    def own_steps(self, ctx):
        s = ctx.steps
        final_lr = ctx.lr * ctx.gamma ** len(s.milestone_steps)
        # No warm-up: the weights are trained already, and Renda et al. fine-tune at the final rate from the start.
        return replace(s, total_steps=s.total_steps - s.rewind_step, milestone_steps=(), rewind_step=0, warmup_steps=0), final_lr
