from lth.arms.base import PRUNED, Arm


class LrRewind(Arm):
    """Learning-rate rewinding (Renda et al. 2020, §2), as an iterative chain of its own: each level prunes the
    arm's own previous level, trained, and trains the surviving weights with the LR schedule replayed from the
    rewind step."""

    name = "lr_rewind"
    order = 6
    weights = PRUNED
    own_chain = True
