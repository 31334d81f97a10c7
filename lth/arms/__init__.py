"""The arms of a study: the ticket and its controls on the same masks, one small file each.

To add one, write `lth/arms/NAME.py` with a subclass of `lth.arms.base.Arm` and list it here; the config
accepts exactly the names registered here, and the driver trains them in this order (the ticket first:
every control builds on its masks).
"""

from lth.arms.base import Arm
from lth.arms.finetune import Finetune
from lth.arms.lr_rewind import LrRewind
from lth.arms.random_prune import RandomPrune
from lth.arms.reinit import Reinit
from lth.arms.scratch_b import ScratchB
from lth.arms.scratch_e import ScratchE
from lth.arms.ticket import Ticket

ARMS: dict[str, Arm] = {arm.name: arm for arm in (Ticket(), Reinit(), RandomPrune(), ScratchE(), ScratchB(), Finetune(), LrRewind())}
