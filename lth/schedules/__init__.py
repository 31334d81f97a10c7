"""Pruning schedules (`prune.schedule`), one file each: `level_masks(run, level, module, arm)` says which
weights the chain of `arm` (the ticket's, or the arm's own) trains at a level, made from what (today: iterative levels,
each pruning the chain's previous level)."""

from collections.abc import Callable

from lth.schedules import iterative

SCHEDULES: dict[str, Callable] = {"iterative": iterative.level_masks}
