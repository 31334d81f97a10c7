"""The arms of a study: the ticket and its controls on the same masks, one small file each.

To add one, write `lth/arms/NAME.py` with a subclass of `lth.arms.base.Arm` (`lth.registry` finds it); the
config accepts exactly these names, and the driver trains and the report shows them in their `order` (the
ticket first: every control builds on its masks).
"""

from lth.arms.base import Arm
from lth.registry import discover

ARMS: dict[str, Arm] = discover(__name__, Arm)
