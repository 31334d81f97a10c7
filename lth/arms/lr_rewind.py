from lth.arms.base import PRUNED, Arm


class LrRewind(Arm):
    """Learning-rate rewinding (Renda et al. 2020, §2): the weights the level was pruned from, masked, trained
    with the LR schedule replayed from the rewind step."""

    name = "lr_rewind"
    weights = PRUNED
