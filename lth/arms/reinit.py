from lth.arms.base import INIT, Arm


class Reinit(Arm):
    """Random reinitialisation (Frankle & Carbin 2019, §2 and Figure 4): the ticket's masks on a fresh init,
    trained on the ticket's schedule. With `rewind: 0` this is also Liu et al.'s (2019) Scratch-E."""

    name = "reinit"
    weights = INIT
