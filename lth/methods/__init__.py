"""Pruning methods (`prune.method`), one file each, each with two functions:

- `apply(weights, masks, fractions, config) -> masks`: from a network's trained weights, its current masks
  and each layer's fraction to remove (0: leave it dense), under the experiment's `prune` settings; it calls
  the module's pure `prune`, whose arguments are the method's own;
- `check(config, shapes, fractions) -> str | None`: what is wrong with those settings for these layers (one
  line), before any training.
"""

from types import ModuleType

from lth.methods import magnitude, nm

METHODS: dict[str, ModuleType] = {"magnitude": magnitude, "nm": nm}
