"""Pruning methods (`prune.method`), one file each: a subclass of `lth.methods.base.Method` (its scores, the
unit it removes, its settings and their check, any penalty while its chain trains), found by `lth.registry`.
The config accepts exactly these names; `prune.<name>` holds a method's own settings."""

from lth.methods.base import Method
from lth.registry import discover

METHODS: dict[str, Method] = discover(__name__, Method)
