"""Pruning methods (`prune.method`), one file each: a subclass of `lth.methods.base.Method` (its scores, the
unit it removes, its settings and their check, any penalty while its chain trains), listed here. The config
accepts exactly these names; `prune.<name>` holds a method's own settings."""

from lth.methods.base import Method
from lth.methods.channel import Channel
from lth.methods.magnitude import Magnitude
from lth.methods.nm import NM
from lth.methods.slimming import Slimming

METHODS: dict[str, Method] = {m.name: m for m in (Magnitude(), NM(), Channel(), Slimming())}
