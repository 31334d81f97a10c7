from lth.arms.base import INIT, Arm


class Reinit(Arm):
    """Random reinitialisation (Frankle & Carbin 2019, §2 and Figure 4): the ticket's masks on a fresh init,
    trained on the ticket's schedule from the rewind step. On weight masks with `rewind: 0` it equals
    Liu et al.'s (2019) Scratch-E (`scratch_e`), which under a channel method trains the narrow network instead."""

    name = "reinit"
    order = 1
    weights = INIT
