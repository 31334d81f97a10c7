from lth.arms.base import INIT, Arm


class ScratchE(Arm):
    """Scratch-E (Liu et al. 2019, §4): the ticket's masks on a fresh init, trained from step 0 for as many
    epochs as the dense run, on its schedule. Under a channel method it is the physically narrower network
    (`Arm.narrow`); on weight masks it equals `reinit` with `rewind: 0`."""

    name = "scratch_e"
    order = 3
    weights = INIT
    from_rewind_point = False
