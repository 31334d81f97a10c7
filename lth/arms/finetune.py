from dataclasses import replace

from lth.arms.base import PRUNED, Arm


class Finetune(Arm):
    """Fine-tuning (Renda et al. 2020, §2): the weights the level was pruned from, masked, trained at the final
    learning rate for as many steps as the ticket trains."""

    name = "finetune"
    weights = PRUNED
    from_rewind_point = False

    def schedule(self, run, module, masks):
        s, train = run.schedule, run.cfg.train
        final_lr = train.lr * train.gamma ** len(s.milestone_steps)
        return replace(s, total_steps=s.total_steps - s.rewind_step, milestone_steps=(), rewind_step=0), replace(train, lr=final_lr)
