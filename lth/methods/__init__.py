"""Pruning methods (`prune.method`), one file each: a pure function from a network's trained weights, its
current masks and each layer's fraction to remove to the next masks,
`prune(weights, masks, fractions, strategy) -> masks`."""

from collections.abc import Callable

from lth.methods import magnitude

METHODS: dict[str, Callable] = {"magnitude": magnitude.prune}
