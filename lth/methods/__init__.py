"""Pruning methods (`prune.method`), one file each, each with:

- `apply(trained, masks, fractions, config, structure) -> masks`: from a network's trained state (weights,
  batch norms), its current masks and each layer's fraction to remove (0: leave it dense), under the
  experiment's `prune` settings; it calls the module's pure `prune`, whose arguments are the method's own;
- `check(config, shapes, fractions, structure) -> str | None`: what is wrong with those settings for these
  layers (one line), before any training;
- `STRUCTURED`: whether it removes whole channels. `structure` is then `lth.channels.removable`'s map of the
  layers whose channels can be removed alone (else empty), the random-pruning control draws channels rather
  than weights (`lth.arms.random_prune`), and the arms that train from scratch train the physically narrower
  network (`lth.arms.base.Arm.narrow`).
"""

from types import ModuleType

from lth import channels
from lth.methods import channel, magnitude, nm, slimming

METHODS: dict[str, ModuleType] = {"magnitude": magnitude, "nm": nm, "channel": channel, "slimming": slimming}


def structure(config, model_name: str, spec) -> dict[str, channels.Removable]:
    """The layers whose channels the experiment's method may remove (empty for weight-level methods)."""
    if not METHODS[config.method].STRUCTURED:
        return {}
    return channels.removable(model_name, tuple(spec.input_shape), spec.num_classes)
