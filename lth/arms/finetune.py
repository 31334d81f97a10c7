from dataclasses import replace

from lth.arms.base import PRUNED, Arm


class Finetune(Arm):
    """Fine-tuning (Renda et al. 2020, §2), as an iterative chain of its own: each level prunes the arm's own
    previous level, trained, and trains the surviving weights at the final learning rate for as many steps as
    the ticket trains."""

    name = "finetune"
    weights = PRUNED
    own_chain = True
    from_rewind_point = False

    def schedule(self, run, module, masks):
        s, train = run.schedule, run.cfg.train
        final_lr = train.lr * train.gamma ** len(s.milestone_steps)
        return replace(s, total_steps=s.total_steps - s.rewind_step, milestone_steps=(), rewind_step=0), replace(train, lr=final_lr)
